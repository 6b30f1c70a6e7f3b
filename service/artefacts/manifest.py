"""Model manifests: the only description of a model the service reads (written by model_export)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.engine.patch import PatchGeometry
from service.errors import ModelFileError

REQUIRED_OUTPUTS = ("tags", "embedding")
SUPPORTED_FORMAT = 1


class OutputInfo(BaseModel):
    dim: int = Field(gt=0)
    dtype: str
    shape: list[int | str]
    meaning: str


class OnnxInfo(BaseModel):
    file: str
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    opset: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    format: int
    name: str = Field(pattern="^[a-z0-9][a-z0-9._-]*$")
    version: str
    architecture: str
    dataset: str
    source: dict
    onnx: OnnxInfo
    labels: list[str] = Field(min_length=1)
    sample_rate: int = Field(gt=0)
    patch_samples: int = Field(gt=0)
    patch_frames: int = Field(gt=0)
    frame_hop: int = Field(gt=0)
    default_patch_hop_frames: int = Field(gt=0)
    input: dict
    outputs: dict[str, OutputInfo]
    frontend: dict
    parity: dict

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.format != SUPPORTED_FORMAT:
            raise ValueError(f"manifest format {self.format} is not supported (expected {SUPPORTED_FORMAT})")
        missing = [name for name in REQUIRED_OUTPUTS if name not in self.outputs]
        if missing:
            raise ValueError(f"outputs {missing} are missing")
        if self.outputs["tags"].dim != len(self.labels):
            raise ValueError("tags dim differs from the number of labels")
        return self

    @property
    def geometry(self) -> PatchGeometry:
        return PatchGeometry(self.sample_rate, self.patch_samples, self.patch_frames, self.frame_hop)

    @property
    def embedding_dim(self) -> int:
        return self.outputs["embedding"].dim


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelFileError(f"model manifest {path} does not exist") from None
    except (OSError, ValueError, ValidationError) as error:
        message = str(error).splitlines()
        raise ModelFileError(f"model manifest {path} is invalid: {' '.join(message[:3])}") from None


def onnx_path(manifest_path: Path, manifest: Manifest) -> Path:
    return manifest_path.parent / manifest.onnx.file


def verify_onnx(manifest_path: Path, manifest: Manifest) -> Path:
    """The model's .onnx file, after checking it is the one the manifest describes."""
    path = onnx_path(manifest_path, manifest)
    try:
        actual = sha256_file(path)
    except OSError as error:
        raise ModelFileError(f"model file {path} cannot be read: {error.strerror or error}") from None
    if actual != manifest.onnx.sha256:
        raise ModelFileError(
            f"model file {path} is corrupt or replaced: sha256 {actual[:12]}… != manifest {manifest.onnx.sha256[:12]}…"
        )
    return path


def discover(models_dir: Path, names: list[str]) -> list[Path]:
    """Manifest paths for the requested model names, or every manifest in the folder when none is named."""
    if names:
        return [models_dir / f"{name}.json" for name in names]
    found = sorted(models_dir.glob("*.json"))
    if not found:
        raise ModelFileError(f"no model manifests (*.json) in {models_dir}; build them with `make models`")
    return found
