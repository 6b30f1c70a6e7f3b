"""Real music for the benchmarks: the freely licensed game soundtrack in Debian's ``lincity-ng-data``.

``ensure_music()`` downloads the package once with ``apt-get download`` (running ``apt-get update`` first only if the
download fails), unpacks it with ``dpkg -x`` into ``.cache/bench-music/`` (git-ignored) and returns the ``.ogg``
tracks. ``music_files(formats)`` adds PyAV transcodes (mp3, m4a) made once next to them, so formats vary.
``cut_clip`` copies the packets of a time window into a new file of the same container without re-encoding: a
cheap way to make many distinct, real, decodable clips (a different offset gives different bytes, so the
service's content-addressed cache never hits).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av

PACKAGE = "lincity-ng-data"
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "bench-music"
MUSIC_SUBDIR = Path("usr/share/games/lincity-ng/music/default")
TRANSCODE_DIR = CACHE_DIR / "transcoded"
# container format name, codec, bit rate for each transcode
TRANSCODES = {"mp3": ("mp3", "libmp3lame", 192_000), "m4a": ("ipod", "aac", 160_000)}


def _download_package(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["apt-get", "download", PACKAGE]
        if subprocess.run(cmd, cwd=tmp, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], check=True, capture_output=True)
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob("*.deb")
        unpacked = dest.with_name(dest.name + ".partial")
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
        unpacked.rename(dest)


def check_librosa_reads(formats: tuple[str, ...]) -> None:
    """Stop with a clear message, before any measurement, where ``librosa.load`` cannot read one of ``formats``:
    it reads m4a only through audioread, whose backend is the ffmpeg command."""
    if "m4a" in formats and not (shutil.which("ffmpeg") or shutil.which("avconv")):
        raise SystemExit(
            "librosa.load reads m4a through audioread, which needs the ffmpeg command: "
            "apt-get install ffmpeg, or leave m4a out (e.g. --formats ogg,mp3)"
        )


def ensure_music() -> list[Path]:
    """The full-length .ogg tracks, downloading and unpacking the package on first use."""
    root = CACHE_DIR / PACKAGE
    if not (root / MUSIC_SUBDIR).is_dir():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _download_package(root)
    tracks = sorted((root / MUSIC_SUBDIR).glob("*.ogg"))
    if not tracks:
        raise RuntimeError(f"no .ogg tracks in {root / MUSIC_SUBDIR}")
    return tracks


def transcode(source: Path, target: Path, fmt: str) -> None:
    """``source`` re-encoded as ``fmt`` (a key of TRANSCODES: same rate and layout), written whole or not at all."""
    container_format, codec, bit_rate = TRANSCODES[fmt]
    partial = target.with_suffix(target.suffix + ".partial")
    with av.open(str(source)) as inp, av.open(str(partial), "w", format=container_format) as out:
        in_stream = inp.streams.audio[0]
        stream = out.add_stream(codec, rate=in_stream.rate, layout=in_stream.layout.name)
        stream.bit_rate = bit_rate
        for frame in inp.decode(in_stream):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    partial.rename(target)


def music_files(formats: tuple[str, ...] = ("ogg",), limit: int = 0) -> list[Path]:
    """Tracks in the given formats ("ogg" = the originals; "mp3"/"m4a" = transcodes made once); the first ``limit``
    of them when it is not 0."""
    tracks = ensure_music()
    files: list[Path] = []
    for fmt in formats:
        if fmt == "ogg":
            files += tracks
            continue
        if fmt not in TRANSCODES:
            raise ValueError(f"unknown format {fmt!r}; choose from ogg, {', '.join(TRANSCODES)}")
        TRANSCODE_DIR.mkdir(parents=True, exist_ok=True)
        for track in tracks:
            target = TRANSCODE_DIR / f"{track.stem}.{fmt}"
            if not target.exists():
                transcode(track, target, fmt)
            files.append(target)
    return files[:limit] if limit else files


def duration_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base


def cut_clip(path: Path, offset_seconds: float, seconds: float) -> bytes:
    """Packets of [offset, offset + seconds) copied into a new file of the same container (no re-encoding)."""
    out_buf = io.BytesIO()
    with av.open(str(path)) as inp:
        in_stream = inp.streams.audio[0]
        tb: Fraction = in_stream.time_base
        fmt = inp.format.name.split(",")[0]
        fmt = {"mov": "ipod"}.get(fmt, fmt)
        start = int(offset_seconds / tb)
        end = int((offset_seconds + seconds) / tb)
        with av.open(out_buf, "w", format=fmt) as out:
            out_stream = out.add_stream_from_template(in_stream)
            first_pts = None
            for packet in inp.demux(in_stream):
                if packet.pts is None or packet.size == 0:
                    continue
                if packet.pts < start:
                    continue
                if packet.pts >= end:
                    break
                if first_pts is None:
                    first_pts = packet.pts
                packet.pts -= first_pts
                packet.dts = packet.pts
                packet.stream = out_stream
                out.mux(packet)
    return out_buf.getvalue()


if __name__ == "__main__":
    for f in music_files(("ogg", "mp3", "m4a")):
        print(f"{duration_seconds(f):7.1f} s  {f.stat().st_size / 1e6:6.2f} MB  {f}")
