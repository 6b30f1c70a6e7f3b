"""Optional tool for the ``reference`` extra: run the ORIGINAL musicnn TF1 graphs and write committed fixtures.

    python -m model_export.reference --out tests/fixtures/reference

The tests compare the ONNX export against these fixtures, so neither the tests nor the service ever need
TensorFlow. This tool does: run it from a separate virtualenv holding ``.[reference]`` plus
``pip install --no-deps musicnn==0.1.0`` (tensorflow-cpu and tf_keras are large and only needed here), after an
``apt-get update`` (it fetches the music with ``apt-get download``, or reuses ``--deb``). TensorFlow, tf_keras,
musicnn and librosa are imported lazily, inside the run path, so importing ``model_export`` never needs them.

What it records, per clip (one ``<clip>.npz`` each):
  * ``audio_int16`` (mono, 16 kHz) and ``sample_rate``: the exact samples the reference was computed from
    (int16 keeps the fixtures small; the float32 input is ``audio_int16 / 32768``);
  * per model, the outputs of every full 187-frame patch of the float32 log-mel:
    musicnn models ``<MODEL>.tags`` [P,50], ``.penultimate`` [P,200], ``.mean_pool`` [P,753], ``.max_pool`` [P,753];
    vgg models ``<MODEL>.tags`` [P,50], ``.pool5`` [P,256] (flattened NHWC, as tf.compat.v1.layers.flatten does).

The log-mel is musicnn's (librosa power mel, log10(1 + 10000·mel)) but computed in float32: musicnn's own
extractor casts the mel to float16 first, which overflows to inf for loud audio (see shared FIELD-NOTES).
The loud synthetic clips are here to catch exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_export.source import sha256_file

# --- musicnn's signal processing (musicnn/configuration.py, each model's config.json) ---
SAMPLE_RATE = 16_000  # Hz
N_FFT = 512  # samples per STFT frame
HOP_LENGTH = 256  # samples between frames
N_MELS = 96
PATCH_FRAMES = 187  # frames per model input (≈ 3 s); config.json "n_frames"
LOG_SCALE = 10_000.0  # "logC" pre-processing: log10(1 + LOG_SCALE * mel power)
N_TAGS = 50

# float16's largest finite value: musicnn's extractor computes LOG_SCALE * mel in float16, so any mel power
# above this / LOG_SCALE becomes inf there. Recorded per clip so tests know which clips exercise that regime.
FLOAT16_MAX = 65_504.0

INT16_FULL_SCALE = 32_768  # int16 sample ↔ float32 in [-1, 1)

MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")
MUSICNN_OUTPUTS = ("tags", "penultimate", "mean_pool", "max_pool")
VGG_OUTPUTS = ("tags", "pool5")
TOP_K = 5  # tags printed per clip and model for the sanity check

# The real music: freely licensed game music that Debian ships.
MUSIC_PACKAGE = "lincity-ng-data"
MUSIC_DIR_IN_PACKAGE = "usr/share/games/lincity-ng/music/default"
COPYRIGHT_IN_PACKAGE = f"usr/share/doc/{MUSIC_PACKAGE}/copyright"

SYNTHETIC_SEED = 20_240_601  # fixed so the noise clips are reproducible
SQUARE_HZ = 220.0
SWEEP_START_HZ = 50.0
SWEEP_END_HZ = 7_900.0  # just below Nyquist (8 kHz) so the sweep never aliases

COMMAND = "python -m model_export.reference --out tests/fixtures/reference"


def samples_for_patches(n_patches: int) -> int:
    """Shortest length giving n_patches full patches plus one spare frame (centred STFT: frames = 1 + L // hop)."""
    return n_patches * PATCH_FRAMES * HOP_LENGTH


# Two patches plus an odd remainder: the last full patch ends well before the end of the audio.
TWO_PATCHES_PLUS_REMAINDER = 2 * PATCH_FRAMES * HOP_LENGTH + 1_234
THREE_PATCHES_PLUS_REMAINDER = 3 * PATCH_FRAMES * HOP_LENGTH + 1_234
# 1 + (2·187·256 − 100) // 256 = 374 frames = exactly 2 patches, and the last frame's window runs past the
# final sample into the centred STFT's zero padding: the patch that touches the padded end.
TWO_PATCHES_TOUCHING_PADDED_END = 2 * PATCH_FRAMES * HOP_LENGTH - 100


@dataclass(frozen=True)
class MusicExcerpt:
    name: str
    filename: str  # inside MUSIC_DIR_IN_PACKAGE
    style: str
    n_samples: int  # excerpt length at SAMPLE_RATE, taken from the middle of the track


@dataclass(frozen=True)
class SyntheticClip:
    name: str
    description: str
    make: Callable[[], np.ndarray]  # float64 samples in [-1, 1] at SAMPLE_RATE


MUSIC_EXCERPTS = (
    MusicExcerpt("lincity_electronic", "01 - pronobozo - lincity.ogg", "electronic", TWO_PATCHES_PLUS_REMAINDER),
    MusicExcerpt(
        "city_blues_padded_end", "02 - Robert van Herk - City Blues.ogg", "blues", TWO_PATCHES_TOUCHING_PADDED_END
    ),
    MusicExcerpt(
        "architectural_contemplations",
        "03 - Robert van Herk - Architectural Contemplations.ogg",
        "slow, contemplative; rendered from MIDI (its Vorbis LOCATION comment names a .mid)",
        THREE_PATCHES_PLUS_REMAINDER,
    ),
)


def seconds(n_samples: int) -> np.ndarray:
    return np.arange(n_samples) / SAMPLE_RATE


def square_wave(n_samples: int, hz: float, amplitude: float) -> np.ndarray:
    """Naive (aliased) square wave: what a clipped synth does, and loud enough to overflow float16 mel."""
    phase = (seconds(n_samples) * hz) % 1.0
    return np.where(phase < 0.5, amplitude, -amplitude)


def white_noise(n_samples: int, amplitude: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-amplitude, amplitude, n_samples)


def log_sweep(n_samples: int, start_hz: float, end_hz: float, amplitude: float) -> np.ndarray:
    """Exponential sine sweep: the instantaneous frequency goes from start_hz to end_hz over the clip."""
    duration = n_samples / SAMPLE_RATE
    rate = np.log(end_hz / start_hz)
    phase = 2 * np.pi * start_hz * duration / rate * (np.exp(seconds(n_samples) / duration * rate) - 1)
    return amplitude * np.sin(phase)


SYNTHETIC_CLIPS = (
    SyntheticClip(
        "square_220hz_full_scale",
        "square wave, 220 Hz, amplitude 1.0 (int16 clips +1.0 to 32767)",
        lambda: square_wave(samples_for_patches(2), SQUARE_HZ, 1.0),
    ),
    SyntheticClip(
        "white_noise_0p9",
        f"uniform white noise in [-0.9, 0.9], numpy default_rng({SYNTHETIC_SEED})",
        lambda: white_noise(samples_for_patches(2), 0.9, SYNTHETIC_SEED),
    ),
    SyntheticClip(
        "log_sweep_50_7900hz",
        "exponential sine sweep 50 Hz -> 7.9 kHz, amplitude 0.5",
        lambda: log_sweep(samples_for_patches(2), SWEEP_START_HZ, SWEEP_END_HZ, 0.5),
    ),
    SyntheticClip(
        "quiet_noise_1e-3",
        f"uniform white noise in [-1e-3, 1e-3], numpy default_rng({SYNTHETIC_SEED + 1})",
        lambda: white_noise(samples_for_patches(1), 1e-3, SYNTHETIC_SEED + 1),
    ),
    SyntheticClip("silence", "digital silence (all zeros)", lambda: np.zeros(samples_for_patches(1))),
)


# --- audio and features ---


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Round to int16, saturating: +1.0 would be 32768, one past int16's range."""
    scaled = np.round(np.asarray(audio, dtype=np.float64) * INT16_FULL_SCALE)
    return np.clip(scaled, -INT16_FULL_SCALE, INT16_FULL_SCALE - 1).astype(np.int16)


def to_float32(audio_int16: np.ndarray) -> np.ndarray:
    return (audio_int16.astype(np.float32) / np.float32(INT16_FULL_SCALE)).astype(np.float32)


def mel_power(audio: np.ndarray) -> np.ndarray:
    """[N_MELS, frames] float32 power mel with librosa's defaults (centred STFT, Slaney mel, power 2)."""
    import librosa

    if audio.dtype != np.float32:
        raise TypeError(f"expected float32 audio, got {audio.dtype}")
    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, n_fft=N_FFT, n_mels=N_MELS)
    if mel.dtype != np.float32:
        raise TypeError(f"librosa returned {mel.dtype}, expected float32")
    return mel


def log_mel(mel: np.ndarray) -> np.ndarray:
    """[frames, N_MELS] float32 log10(1 + 10000·mel): musicnn's "logC", WITHOUT its float16 cast."""
    out = np.log10(np.float32(LOG_SCALE) * mel + np.float32(1.0))
    assert out.dtype == np.float32, out.dtype  # numpy ≥ 2 keeps float32 with Python scalars; older may not
    return np.ascontiguousarray(out.T)


def full_patches(features: np.ndarray) -> np.ndarray:
    """[P, PATCH_FRAMES, N_MELS]: patch i is frames [187·i, 187·i + 187); a trailing partial patch is dropped."""
    n_patches = features.shape[0] // PATCH_FRAMES
    return features[: n_patches * PATCH_FRAMES].reshape(n_patches, PATCH_FRAMES, N_MELS)


def middle_excerpt_start(track_samples: int, n_samples: int) -> int:
    if track_samples < n_samples:
        raise ValueError(f"track has {track_samples} samples, excerpt needs {n_samples}")
    return (track_samples - n_samples) // 2


# --- the Debian package holding the music ---


@dataclass(frozen=True)
class DebianPackage:
    deb: Path
    root: Path  # where it was unpacked
    version: str
    sha256: str
    licence: str  # of "Files: *" in its copyright file, which covers the music


def fetch_deb(workdir: Path) -> Path:
    """apt-get download the package into workdir (needs a prior `apt-get update`)."""
    subprocess.run(["apt-get", "download", MUSIC_PACKAGE], cwd=workdir, check=True)
    debs = sorted(workdir.glob(f"{MUSIC_PACKAGE}_*.deb"))
    if not debs:
        raise FileNotFoundError(f"apt-get download left no {MUSIC_PACKAGE}_*.deb in {workdir}")
    return debs[-1]


def licence_of_all_files(copyright_text: str) -> str:
    """The License of the `Files: *` stanza of a DEP-5 copyright file, with its Comment if it has one."""
    for stanza in re.split(r"\n\s*\n", copyright_text):
        if re.search(r"^Files:\s*\*\s*$", stanza, flags=re.MULTILINE):
            licence = re.search(r"^License:\s*(.+)$", stanza, flags=re.MULTILINE)
            comment = re.search(r"^Comment:\s*\n((?: .*\n?)+)", stanza, flags=re.MULTILINE)
            text = licence.group(1).strip() if licence else "unknown"
            if comment:
                text += " (" + " ".join(line.strip() for line in comment.group(1).splitlines()) + ")"
            return text
    return "unknown"


def unpack_deb(deb: Path, workdir: Path) -> DebianPackage:
    root = workdir / "unpacked"
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    licence = licence_of_all_files((root / COPYRIGHT_IN_PACKAGE).read_text(encoding="utf-8"))
    return DebianPackage(deb=deb, root=root, version=version, sha256=sha256_file(deb), licence=licence)


def load_excerpt(package: DebianPackage, excerpt: MusicExcerpt) -> tuple[np.ndarray, dict]:
    """int16 excerpt from the middle of the track, decoded as musicnn does (librosa.load: mean mono, soxr_hq)."""
    import librosa

    path = package.root / MUSIC_DIR_IN_PACKAGE / excerpt.filename
    track, _ = librosa.load(path, sr=SAMPLE_RATE)
    start = middle_excerpt_start(len(track), excerpt.n_samples)
    provenance = {
        "kind": "music",
        "style": excerpt.style,
        "debian_package": MUSIC_PACKAGE,
        "debian_version": package.version,
        "deb_sha256": package.sha256,
        "path_in_package": f"{MUSIC_DIR_IN_PACKAGE}/{excerpt.filename}",
        "file_sha256": sha256_file(path),
        "licence": package.licence,
        "decoded_with": f"librosa.load(path, sr={SAMPLE_RATE}) (mono = channel mean, soxr_hq resampling)",
        "track_samples_at_16khz": len(track),
        "excerpt_start_sample": start,
        "excerpt_start_seconds": round(start / SAMPLE_RATE, 4),
        "excerpt_samples": excerpt.n_samples,
    }
    return to_int16(track[start : start + excerpt.n_samples]), provenance


# --- the TF1 graphs ---


def import_tensorflow():
    """TensorFlow with Keras 2 (tf_keras): tf.compat.v1.layers is gone under Keras 3."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # must be set before tensorflow is first imported
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()  # as musicnn's extractor.py: the TF1 graph API
    return tf


def musicnn_package_dir() -> Path:
    import musicnn

    return Path(musicnn.__file__).parent


def output_names(model: str) -> tuple[str, ...]:
    return VGG_OUTPUTS if "vgg" in model else MUSICNN_OUTPUTS


def checkpoint_report(tf, graph_variables, prefix: str) -> dict:
    """Which graph variables the checkpoint lacks (must be none) and what else it holds (optimizer state)."""
    # The reader takes the prefix itself: tf.train.list_variables would treat "<model>/" as a directory and
    # follow its `checkpoint` file, which points at the author's machine (/home/jpons/...).
    in_checkpoint = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_shape_map()
    in_graph = {v.op.name: v.shape.as_list() for v in graph_variables}
    missing = sorted(set(in_graph) - set(in_checkpoint))
    mismatched = sorted(n for n in in_graph if n in in_checkpoint and in_checkpoint[n] != in_graph[n])
    extra = sorted(set(in_checkpoint) - set(in_graph))
    optimizer_state = [n for n in extra if n.endswith(("/Adam", "/Adam_1")) or n.startswith("beta")]
    return {
        "graph_variables": len(in_graph),
        "checkpoint_variables": len(in_checkpoint),
        "missing_from_checkpoint": missing,
        "shape_mismatches": mismatched,
        "unused_checkpoint_entries_optimizer": len(optimizer_state),
        "unused_checkpoint_entries_other": sorted(set(extra) - set(optimizer_state)),
    }


def run_model(model: str, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Outputs of one original musicnn graph for a [P, 187, 96] float32 batch, plus a checkpoint report."""
    tf = import_tensorflow()
    from musicnn import models

    graph = tf.Graph()
    with graph.as_default():
        # Exactly as extractor.py builds it, so variable names match the checkpoint.
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            outputs = models.define_model(x, is_training, model, N_TAGS)
            tags = tf.nn.sigmoid(outputs[0])
        if "vgg" in model:
            # pool5 is [P, 2, 1, 128] NHWC; the graph's own dense layer reads it through this flatten.
            fetches = {"tags": tags, "pool5": tf.compat.v1.layers.flatten(outputs[5])}
        else:
            _, _, _, _, _, _, mean_pool, max_pool, penultimate = outputs
            fetches = {"tags": tags, "penultimate": penultimate, "mean_pool": mean_pool, "max_pool": max_pool}
        prefix = f"{musicnn_package_dir() / model}/"  # files are "<model>/.index" etc.
        report = checkpoint_report(tf, tf.compat.v1.global_variables(), prefix)
        saver = tf.compat.v1.train.Saver()
        # One thread: the machine is shared, the batch is tiny, and results do not depend on thread count.
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            # No global_variables_initializer first (unlike extractor.py): anything the restore misses stays
            # uninitialised and is reported below instead of silently keeping random weights.
            saver.restore(sess, prefix)
            uninitialised = sess.run(tf.compat.v1.report_uninitialized_variables())
            report["uninitialised_after_restore"] = [n.decode() for n in uninitialised]
            if len(uninitialised):
                raise RuntimeError(f"{model}: not restored: {report['uninitialised_after_restore']}")
            values = sess.run(fetches, feed_dict={x: batch, is_training: False})
    return {name: np.asarray(values[name], dtype=np.float32) for name in output_names(model)}, report


# --- sanity checks ---


def labels_for(model: str) -> list[str]:
    from musicnn import configuration

    return configuration.MSD_LABELS if model.startswith("MSD") else configuration.MTT_LABELS


def top_tags(tags: np.ndarray, labels: list[str], k: int = TOP_K) -> list[tuple[str, float]]:
    """The k most likely tags of the clip, averaged over its patches."""
    mean = tags.mean(axis=0)
    return [(labels[i], round(float(mean[i]), 3)) for i in np.argsort(mean)[::-1][:k]]


def min_patch_distance(values: np.ndarray) -> float | None:
    """Smallest max-abs difference between two patches' outputs (None for a single patch)."""
    if len(values) < 2:
        return None
    flat = values.reshape(len(values), -1)
    return float(min(np.abs(flat[i] - flat[j]).max() for i in range(len(flat)) for j in range(i + 1, len(flat))))


# --- writing ---


def versions() -> dict[str, str]:
    names = ("tensorflow", "tensorflow-cpu", "tf_keras", "librosa", "numpy", "soxr", "soundfile", "musicnn")
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    found["python"] = platform.python_version()
    return found


def checkpoint_digests() -> dict[str, dict[str, str]]:
    suffixes = (".index", ".data-00000-of-00001")
    return {m: {s: sha256_file(musicnn_package_dir() / m / s) for s in suffixes} for m in MODELS}


def readme_text(manifest: dict) -> str:
    lines = [
        "# Reference outputs of the original musicnn TF1 graphs",
        "",
        "Written by `model_export/reference.py` (optional tool, `reference` extra; TensorFlow is needed only there):",
        "",
        f"    {manifest['command']}",
        "",
        "Do not edit by hand: rerun the tool. `manifest.json` holds the same facts machine-readably, plus the",
        "sanity checks (top tags, patch distinctness, checkpoint restore report).",
        "",
        "Each `<clip>.npz`: `audio_int16` (mono, 16 kHz), `sample_rate`, and per model `<MODEL>.tags` [P,50] and",
        "`<MODEL>.penultimate` [P,200], `.mean_pool` [P,753], `.max_pool` [P,753] (musicnn) or `<MODEL>.pool5` [P,256]",
        "(vgg, NHWC flattened), float32, one row per full 187-frame patch.",
        "",
        "Input: `audio_int16 / 32768` as float32 → librosa power mel (sr 16000, n_fft 512, hop 256, 96 mels, centred",
        f"STFT with librosa's default `{manifest['frontend']['stft_pad_mode']}` padding, Slaney) →",
        "`log10(10000·mel + 1)` in float32 (NOT musicnn's float16 cast, which overflows) → patch i = frames",
        "[187·i, 187·i+187), full patches only. Graphs: musicnn 0.1.0 `models.define_model`, sigmoid on the logits,",
        "`is_training=False`, weights restored with `tf.compat.v1.train.Saver` from the package's checkpoints.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + ".",
        "",
        "## Clips",
        "",
    ]
    licences = set()
    for name, clip in manifest["clips"].items():
        size = f"{clip['patches']} patch{'es' if clip['patches'] != 1 else ''}, {clip['samples']} samples"
        if clip["last_patch_touches_padded_end"]:
            size += ", last patch reaches the STFT's zero padding at the end"
        if clip["kind"] == "music":
            start, stop = clip["excerpt_start_sample"], clip["excerpt_start_sample"] + clip["excerpt_samples"]
            lines.append(
                f"- `{name}` ({size}): {clip['style']}. Debian `{clip['debian_package']}` {clip['debian_version']}, "
                f"`{clip['path_in_package']}`, decoded at 16 kHz, samples [{start}, {stop}) "
                f"(from {clip['excerpt_start_seconds']} s, the middle of the track)."
            )
            licences.add(clip["licence"])
        else:
            lines.append(f"- `{name}` ({size}): {clip['description']}.")
    for licence in sorted(licences):
        lines += ["", f"Licence of the music (`Files: *` of `/{COPYRIGHT_IN_PACKAGE}`): {licence}"]
    return "\n".join(lines) + "\n"


def clip_record(audio_int16: np.ndarray, patches: np.ndarray, mel: np.ndarray, provenance: dict) -> dict:
    max_mel = float(mel.max())
    return {
        **provenance,
        "samples": len(audio_int16),
        "frames": int(mel.shape[1]),
        "patches": len(patches),
        # The centred STFT's last frame used spans [centre - N_FFT/2, centre + N_FFT/2): past the final sample
        # it reads zero padding, which an exported frontend must reproduce.
        "last_patch_touches_padded_end": bool(
            (len(patches) * PATCH_FRAMES - 1) * HOP_LENGTH + N_FFT // 2 > len(audio_int16)
        ),
        "max_mel_power": max_mel,
        # True where musicnn's float16 extractor would produce inf for this clip.
        "float16_extractor_overflows": bool(LOG_SCALE * max_mel > FLOAT16_MAX),
    }


def prepare_clips(package: DebianPackage) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """name → (audio_int16, patches [P,187,96], manifest record); features come from the stored int16 samples."""
    sources: list[tuple[str, np.ndarray, dict]] = []
    for excerpt in MUSIC_EXCERPTS:
        audio, provenance = load_excerpt(package, excerpt)
        sources.append((excerpt.name, audio, provenance))
    for clip in SYNTHETIC_CLIPS:
        sources.append((clip.name, to_int16(clip.make()), {"kind": "synthetic", "description": clip.description}))
    clips = {}
    for name, audio, provenance in sources:
        mel = mel_power(to_float32(audio))
        patches = full_patches(log_mel(mel))
        clips[name] = (audio, patches, clip_record(audio, patches, mel, provenance))
    return clips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="fixture directory, e.g. tests/fixtures/reference")
    parser.add_argument("--deb", type=Path, help=f"an already downloaded {MUSIC_PACKAGE} .deb (else apt-get download)")
    args = parser.parse_args(argv)

    import librosa

    with tempfile.TemporaryDirectory(prefix="taggram-reference-") as tmp:
        workdir = Path(tmp)
        package = unpack_deb(args.deb or fetch_deb(workdir), workdir)
        clips = prepare_clips(package)

        # One graph per model, all clips' patches in one batch (batch norm runs in inference mode, so
        # each patch's outputs do not depend on the others).
        names = list(clips)
        batch = np.concatenate([clips[n][1] for n in names])
        bounds = np.cumsum([0] + [len(clips[n][1]) for n in names])
        results: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
        restore_reports, sanity = {}, {n: {} for n in names}
        for model in MODELS:
            outputs, restore_reports[model] = run_model(model, batch)
            labels = labels_for(model)
            for i, name in enumerate(names):
                for key, value in outputs.items():
                    results[name][f"{model}.{key}"] = value[bounds[i] : bounds[i + 1]]
                tags = results[name][f"{model}.tags"]
                sanity[name][model] = {
                    "top_tags": top_tags(tags, labels),
                    "min_patch_tag_distance": min_patch_distance(tags),
                }
        all_tags = {m: np.concatenate([results[n][f"{m}.tags"] for n in names]) for m in MODELS}

    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        audio, _, _ = clips[name]
        np.savez_compressed(
            args.out / f"{name}.npz", audio_int16=audio, sample_rate=np.int32(SAMPLE_RATE), **results[name]
        )

    manifest = {
        "command": COMMAND,
        "tool": "model_export/reference.py",
        "versions": versions(),
        "musicnn_checkpoint_sha256": checkpoint_digests(),
        "frontend": {
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "patch_frames": PATCH_FRAMES,
            "log": "log10(10000 * mel + 1), float32",
            "stft_center": True,
            "stft_pad_mode": _librosa_default_pad_mode(librosa),
            "mel": "librosa.filters.mel defaults: Slaney scale, Slaney norm, fmin 0, fmax sr/2, power 2",
            "audio": "float32 = audio_int16 / 32768",
        },
        "models": {m: list(output_names(m)) for m in MODELS},
        "clips": {n: clips[n][2] for n in names},
        "sanity": {
            "top_tags_mean_over_patches": {n: {m: sanity[n][m]["top_tags"] for m in MODELS} for n in names},
            "min_patch_tag_distance": {n: {m: sanity[n][m]["min_patch_tag_distance"] for m in MODELS} for n in names},
            "duplicate_tag_rows_across_all_clips": {
                m: int(len(all_tags[m]) - len(np.unique(all_tags[m], axis=0))) for m in MODELS
            },
            "checkpoint_restore": restore_reports,
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(readme_text(manifest), encoding="utf-8")

    for name in names:
        print(f"{name} ({clips[name][2]['patches']} patches, max mel power {clips[name][2]['max_mel_power']:.3g})")
        for model in MODELS:
            tops = ", ".join(f"{t} {p:.2f}" for t, p in sanity[name][model]["top_tags"])
            print(f"  {model:12s} {tops}   min patch distance {sanity[name][model]['min_patch_tag_distance']}")
    print(json.dumps(manifest["sanity"]["duplicate_tag_rows_across_all_clips"]))
    return 0


def _librosa_default_pad_mode(librosa) -> str:
    """librosa ≥ 0.10 pads a centred STFT with zeros; 0.7 (musicnn's era) reflected."""
    import inspect

    return str(inspect.signature(librosa.feature.melspectrogram).parameters["pad_mode"].default)


if __name__ == "__main__":
    sys.exit(main())
