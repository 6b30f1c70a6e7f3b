"""How close is service.decode to librosa.load(path, sr=16000) on real music?

For every file: our decode vs ``librosa.load(path, sr=16000)`` (mono = mean, resampler soxr_hq): lengths, the delay
that best aligns the two (``align``: cross-correlation within ±MAX_LAG_SAMPLES, refined to a whole number of
source samples, applied as a band-limited fractional shift; 0 when the decodes already line up), and, over the
aligned overlap, max |difference|, RMS difference and SNR = 10·log10(Σref² / Σ(ours − ref)²).

Inputs: the .ogg files of a folder (default: Debian's lincity-ng-data music, unpacked with
``apt-get download lincity-ng-data && dpkg -x lincity-ng-data_*.deb /tmp/lincity``), plus the first
``--transcode`` of them re-encoded with PyAV to mp3 (libmp3lame) and m4a (FFmpeg aac), written to ``--workdir``.

librosa reads ogg and mp3 through soundfile (libsndfile: libvorbis, mpg123); m4a it can only read through audioread,
which needs the ``ffmpeg`` command line (Debian package ffmpeg); without it the m4a rows say so.

Usage: .venv/bin/python bench/studies/decode_vs_librosa.py [--music-dir DIR] [--workdir DIR] [--transcode N]
Prints a Markdown table (paste into docs/decode.md) and the versions involved.

A decision study (the decoder reproduces librosa.load): its conclusion is docs/decode.md, "Agreement with librosa on
real music".
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import librosa
import numpy as np
import scipy.signal
import soundfile
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from service.decode import SAMPLE_RATE, decode

DEFAULT_MUSIC_DIR = Path("/tmp/lincity/usr/share/games/lincity-ng/music/default")
DEFAULT_WORKDIR = Path("/tmp/decode_bench")
MAX_LAG_SAMPLES = 16_000  # at 16 kHz: 1 s, far more than any codec delay or trimmed priming
LAG_WINDOW_SECONDS = 30.0  # cross-correlate this much audio (from 10 s in) to find the lag
TRANSCODE_BIT_RATE = 192_000  # bit/s for the mp3 and m4a copies
MAX_SECONDS = 3_600.0
TRANSCODES = {"mp3": ("mp3", "libmp3lame"), "m4a": ("ipod", "aac")}


def transcode(src: Path, dst: Path, container_format: str, codec: str) -> None:
    """Decode ``src`` and re-encode it (same rate and layout) with PyAV."""
    with av.open(str(src)) as inp, av.open(str(dst), mode="w", format=container_format) as out:
        in_stream = inp.streams.audio[0]
        source = in_stream.codec_context
        out_stream = out.add_stream(codec, rate=source.sample_rate, layout=source.layout)
        out_stream.codec_context.bit_rate = TRANSCODE_BIT_RATE
        for frame in inp.decode(in_stream):
            frame.pts = None
            for packet in out_stream.encode(frame):
                out.mux(packet)
        for packet in out_stream.encode(None):
            out.mux(packet)


def best_lag(ours: np.ndarray, ref: np.ndarray) -> int:
    """Lag L (16 kHz samples) maximising the correlation of ours[n + L] with ref[n]: positive when ours is late."""
    start = min(10 * SAMPLE_RATE, max(len(ref) - int(LAG_WINDOW_SECONDS * SAMPLE_RATE), 0))
    stop = start + int(LAG_WINDOW_SECONDS * SAMPLE_RATE)
    a = ours[start : stop + MAX_LAG_SAMPLES].astype(np.float64)
    b = ref[start:stop].astype(np.float64)
    corr = scipy.signal.correlate(a, b, mode="full", method="fft")
    zero = len(b) - 1
    window = corr[zero - MAX_LAG_SAMPLES : zero + MAX_LAG_SAMPLES + 1]
    return int(np.argmax(window)) - MAX_LAG_SAMPLES


def advance(x: np.ndarray, delay: float) -> np.ndarray:
    """x moved ``delay`` samples earlier (fractional: band-limited shift in the frequency domain).

    The last ceil(delay) samples wrap around and must not be compared.
    """
    if delay == int(delay):
        return x[int(delay) :].astype(np.float64)
    spectrum = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(x.size)
    shifted = np.fft.irfft(spectrum * np.exp(2j * np.pi * freqs * delay), n=x.size)
    return shifted[: x.size - int(np.ceil(delay))]


def align(ours: np.ndarray, ref: np.ndarray, source_rate: int) -> tuple[np.ndarray, float]:
    """Ours aligned on ref, and the delay removed (16 kHz samples, possibly fractional).

    Decoders disagree by whole *source* samples (decoder delay, trimmed priming), which is a fractional number of
    16 kHz samples: the delay is searched among whole source-sample offsets around the cross-correlation peak.
    """
    lag = best_lag(ours, ref)
    if lag == 0:
        return ours.astype(np.float64), 0.0
    if lag < 0:  # ours early: move ref instead, by the same machinery
        aligned_ref, delay = align(ref, ours, source_rate)
        return ours[: aligned_ref.size].astype(np.float64), -delay
    centre = round(lag * source_rate / SAMPLE_RATE)
    best = None
    for source_lag in range(centre - 2, centre + 3):
        delay = source_lag * SAMPLE_RATE / source_rate
        moved = advance(ours, delay)
        n = min(moved.size, ref.size)
        residual = float(np.sum((moved[:n] - ref[:n]) ** 2))
        if best is None or residual < best[0]:
            best = (residual, moved, delay)
    return best[1], best[2]


def compare(aligned_ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    n = min(aligned_ours.size, ref.size)
    diff = aligned_ours[:n] - ref[:n].astype(np.float64)
    signal_power = float(np.sum(ref[:n].astype(np.float64) ** 2))
    noise_power = float(np.sum(diff**2))
    return {
        "max_abs": float(np.max(np.abs(diff))),
        "rms": float(np.sqrt(np.mean(diff**2))),
        "snr_db": float("inf") if noise_power == 0 else 10 * np.log10(signal_power / noise_power),
        "compared": n,
    }


def librosa_backend(path: Path) -> str:
    try:
        soundfile.info(str(path))
        return "soundfile"
    except Exception:  # noqa: BLE001 - anything soundfile cannot open goes to audioread
        return "audioread"


def ffmpeg_cli_version() -> str:
    if shutil.which("ffmpeg") is None:
        return "not installed"
    banner = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
    return banner.split("\n")[0].split(" Copyright")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music-dir", type=Path, default=DEFAULT_MUSIC_DIR)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--transcode", type=int, default=2, help="how many of the ogg files to copy to mp3 and m4a")
    args = parser.parse_args()

    originals = sorted(args.music_dir.glob("*.ogg"))
    if not originals:
        sys.exit(f"no .ogg files in {args.music_dir} (see the module docstring to fetch them)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = list(originals)
    for src in originals[: args.transcode]:
        for ext, (container_format, codec) in TRANSCODES.items():
            dst = args.workdir / f"{src.stem}.{ext}"
            if not dst.exists():
                transcode(src, dst, container_format, codec)
            files.append(dst)

    print(
        "| file | codec | duration (s) | ours (samples) | librosa (samples) | length diff | delay removed | "
        "max abs diff | RMS diff | SNR (dB) | peak ours / librosa | ours (s) | librosa (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in files:
        started = time.perf_counter()
        with path.open("rb") as f:
            decoded = decode(f, max_seconds=MAX_SECONDS)
        ours_seconds = time.perf_counter() - started
        backend = librosa_backend(path)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead." is expected for m4a
                ref, _ = librosa.load(path, sr=SAMPLE_RATE)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(
                f"| {path.name} | {decoded.codec} | {decoded.duration_seconds:.1f} | {decoded.samples.size} | "
                f"librosa cannot load it ({type(exc).__name__}) | | | | | | | {ours_seconds:.2f} | |"
            )
            continue
        librosa_seconds = time.perf_counter() - started
        aligned, delay = align(decoded.samples, ref, decoded.source_sample_rate)
        m = compare(aligned, ref)
        print(
            f"| {path.name} | {decoded.codec} (librosa: {backend}) | {decoded.duration_seconds:.1f} "
            f"| {decoded.samples.size} | {ref.size} | {decoded.samples.size - ref.size:+d} | {delay:+.2f} "
            f"| {m['max_abs']:.2e} | {m['rms']:.2e} "
            f"| {m['snr_db']:.1f} | {np.abs(decoded.samples).max():.3f} / {np.abs(ref).max():.3f} "
            f"| {ours_seconds:.2f} | {librosa_seconds:.2f} |"
        )

    print()
    print(
        f"python {platform.python_version()}, PyAV {av.__version__} (libavcodec "
        f"{'.'.join(map(str, av.library_versions['libavcodec']))}), soxr {soxr.__version__}, numpy {np.__version__}, "
        f"librosa {librosa.__version__}, soundfile {soundfile.__version__} "
        f"(libsndfile {soundfile.__libsndfile_version__}); audioread's ffmpeg: {ffmpeg_cli_version()}"
    )


if __name__ == "__main__":
    main()
