"""Start-up refuses broken model files: the real CLI (`taggram serve`) exits non-zero with exactly one ERROR line
naming the offending file, and no traceback. A process that cannot serve correctly never starts serving.

Each case copies one model into a temporary models folder (and, for taxonomy cases, a temporary taxonomy
folder), breaks one file, and runs the CLI against it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from service.artefacts.taxonomy import SHIPPED_DIR
from tests.support.redis_support import free_port
from tests.support.serve_process import ServeProcess, clean_env, taggram_executable

MODEL = "msd-musicnn"
EXIT_TIMEOUT_SECONDS = 90.0  # importing onnxruntime and hashing a model takes a few seconds on a busy machine
LOG_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def copy_model(models_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for ext in (".json", ".onnx"):
        shutil.copyfile(models_dir / f"{MODEL}{ext}", dest / f"{MODEL}{ext}")
    return dest


def copy_taxonomy(dest: Path) -> Path:
    dest.mkdir()
    shutil.copyfile(SHIPPED_DIR / f"{MODEL}.json", dest / f"{MODEL}.json")
    return dest


# Each breaker damages one file under (models, taxonomies) and returns the path the log line must name.
def corrupt_onnx(models: Path, taxonomies: Path) -> Path:
    path = models / f"{MODEL}.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still parses as protobuf, but it is not the exported graph
    path.write_bytes(bytes(data))
    return path


def truncate_manifest(models: Path, taxonomies: Path) -> Path:
    path = models / f"{MODEL}.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    return path


def delete_onnx(models: Path, taxonomies: Path) -> Path:
    path = models / f"{MODEL}.onnx"
    path.unlink()
    return path


def manifest_names_another_model(models: Path, taxonomies: Path) -> Path:
    path = models / f"{MODEL}.json"
    manifest = json.loads(path.read_text())
    manifest["name"] = "mtt-musicnn"
    path.write_text(json.dumps(manifest))
    return path


def manifest_for_another_sample_rate(models: Path, taxonomies: Path) -> Path:
    path = models / f"{MODEL}.json"
    manifest = json.loads(path.read_text())
    manifest["sample_rate"] = 22_050  # the decoder gives 16 kHz only
    path.write_text(json.dumps(manifest))
    return path


def onnx_that_does_not_parse_with_a_matching_hash(models: Path, taxonomies: Path) -> Path:
    """An operator "fixed" the hash by hand: the hash check passes, so onnxruntime itself must refuse the file."""
    path = models / f"{MODEL}.onnx"
    data = bytearray(path.read_bytes())
    data[100:200] = bytes(100)
    path.write_bytes(bytes(data))
    manifest_path = models / f"{MODEL}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["onnx"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    return path


def taxonomy_with_unknown_tag(models: Path, taxonomies: Path) -> Path:
    path = taxonomies / f"{MODEL}.json"
    document = json.loads(path.read_text())
    document["subgenres"]["Vaporwave"] = ["vaporwave"]  # not one of the model's 50 tags
    path.write_text(json.dumps(document))
    return path


def taxonomy_not_json(models: Path, taxonomies: Path) -> Path:
    path = taxonomies / f"{MODEL}.json"
    path.write_text("subgenres:\n  Rock: [rock]\n")  # YAML, not JSON
    return path


def taxonomy_missing(models: Path, taxonomies: Path) -> Path:
    path = taxonomies / f"{MODEL}.json"
    path.unlink()
    return path


BREAKERS: dict[str, Callable[[Path, Path], Path]] = {
    "corrupt onnx (one byte changed: sha256 mismatch)": corrupt_onnx,
    "truncated manifest JSON": truncate_manifest,
    "manifest whose onnx file is missing": delete_onnx,
    "manifest naming another model": manifest_names_another_model,
    "manifest for another sample rate": manifest_for_another_sample_rate,
    "onnx that does not parse, manifest hash edited to match": onnx_that_does_not_parse_with_a_matching_hash,
    "taxonomy naming a tag the model does not have": taxonomy_with_unknown_tag,
    "taxonomy that is not JSON": taxonomy_not_json,
    "taxonomy file missing": taxonomy_missing,
}


def run_serve(models: Path, taxonomies: Path, port: int) -> subprocess.CompletedProcess:
    env = clean_env(
        TAGGRAM_MODELS_DIR=str(models),
        TAGGRAM_TAXONOMY_DIR=str(taxonomies),
        TAGGRAM_MODELS=MODEL,
        TAGGRAM_DEFAULT_MODEL=MODEL,
        TAGGRAM_HOST="127.0.0.1",
        TAGGRAM_PORT=str(port),
    )
    return subprocess.run(
        [str(taggram_executable()), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("case", list(BREAKERS))
def test_a_broken_model_file_stops_the_start_with_one_error_line_naming_it(tmp_path, models_dir, case):
    models = copy_model(models_dir, tmp_path / "models")
    taxonomies = copy_taxonomy(tmp_path / "taxonomies")
    broken = BREAKERS[case](models, taxonomies)
    port = free_port()

    result = run_serve(models, taxonomies, port)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    errors = [line for line in output.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    assert len(errors) == 1, output
    assert str(broken) in errors[0], errors[0]
    assert "Traceback" not in output, output
    # Nothing but log lines: no stray library output (a stack, a warning dump) around the one error.
    assert all(LOG_LINE.match(line) for line in output.splitlines() if line.strip()), output
    assert "Uvicorn running" not in output and port_is_closed(port)


@pytest.mark.slow
def test_the_same_folders_unbroken_start_and_serve(tmp_path, models_dir):
    """Control: the copies the cases above break are themselves good, so each failure above is the broken file's."""
    models = copy_model(models_dir, tmp_path / "models")
    taxonomies = copy_taxonomy(tmp_path / "taxonomies")
    with ServeProcess(models, tmp_path / "logs", TAGGRAM_TAXONOMY_DIR=str(taxonomies)) as proc:
        proc.wait_ready()
        assert " ERROR " not in proc.stderr()


def test_an_invalid_setting_stops_the_start_with_one_line_naming_the_variable(models_dir):
    env = clean_env() | {"TAGGRAM_MODELS_DIR": str(models_dir), "TAGGRAM_REDIS_URL": "http://127.0.0.1:6379/0"}
    result = subprocess.run([taggram_executable(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "TAGGRAM_REDIS_URL" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("sizes", ["0", "four", "1,,-4"])
def test_bad_cuda_batch_sizes_stop_the_start_with_the_one_line_settings_error(models_dir, sizes):
    env = clean_env() | {"TAGGRAM_MODELS_DIR": str(models_dir), "TAGGRAM_CUDA_BATCH_SIZES": sizes}
    result = subprocess.run([taggram_executable(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "TAGGRAM_CUDA_BATCH_SIZES" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("https://cdn.example.com/audio/all.mp3", "{track_id} exactly once"),
        ("/srv/audio/{track_id}.mp3", "absolute http:// or https:// URL"),
        ("https://cdn.example.com/{artist}/{track_id}", "no placeholder but {track_id}"),
    ],
)
def test_a_bad_catalog_audio_url_stops_the_start_with_the_one_line_settings_error(models_dir, template, says):
    env = clean_env(TAGGRAM_MODELS_DIR=str(models_dir), TAGGRAM_CATALOG_AUDIO_URL=template)
    result = subprocess.run([taggram_executable(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "TAGGRAM_CATALOG_AUDIO_URL" in errors[0] and says in errors[0] and "Traceback" not in result.stderr


def test_bf16_that_cannot_be_honoured_stops_the_start_with_one_line_saying_why(tmp_path, models_dir):
    """A model copied without its parity patches: refused on any CPU (where the CPU has no native bf16, or openvino
    is missing, the line says that instead; docs/precision.md)."""
    models = copy_model(models_dir, tmp_path / "models")
    env = clean_env(
        TAGGRAM_MODELS_DIR=str(models),
        TAGGRAM_MODELS=MODEL,
        TAGGRAM_DEFAULT_MODEL=MODEL,
        TAGGRAM_PRECISION="bf16",
        TAGGRAM_PORT=str(free_port()),
    )
    result = subprocess.run(
        [taggram_executable(), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert f"cannot start: model {MODEL}: TAGGRAM_PRECISION=bf16 is not possible: " in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_an_unknown_precision_stops_the_start_with_the_one_line_settings_error(models_dir):
    env = clean_env(TAGGRAM_MODELS_DIR=str(models_dir), TAGGRAM_PRECISION="int8")
    result = subprocess.run([taggram_executable(), "serve"], env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "TAGGRAM_PRECISION" in errors[0] and "Traceback" not in result.stderr
