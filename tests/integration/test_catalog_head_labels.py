"""`taggram index build --label-head`: the catalog map labelled by a trained head's top class (issue #23).

One real backfill of tests/support/head_catalog.py's three-class catalog and one head trained on it by the real
`train-head` CLI (as tests/integration/test_heads_training.py); the index builds run as child processes
(`python -m service index build`) and the checks read the generation through the service's own loader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.artefacts.similar import artefact, catalog
from service.offline.codes import EXIT_USAGE
from service.offline.index_build import embeddings, read_catalog
from tests.support.head_catalog import CLASSES, MODEL, make_catalog, run_backfill

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 300  # a head fit or an index build on a shared 2-core machine
HEAD = "synth"


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


@pytest.fixture(scope="module")
def trained(models_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("head-labels")
    audio, labels = make_catalog(root)
    backfill = root / "backfill"
    run_backfill(audio, backfill, models_dir)
    heads = root / "heads"
    done = cli(
        "train-head", backfill, labels, "--name", HEAD, "--output", heads, "--models-dir", models_dir,
        "--candidates", "logreg-pooled",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {"backfill": backfill, "head": heads / f"{HEAD}.json", "root": root}


def built_map(index_dir: Path) -> tuple[artefact.IndexManifest, catalog.CatalogMap]:
    manifest = artefact.read_manifest(artefact.manifest_path(index_dir, MODEL))
    return manifest, catalog.load_map(index_dir, manifest)


def test_a_label_head_labels_every_track_by_its_top_class_on_the_mean_embedding(trained, tmp_path):
    done = cli("index", "build", trained["backfill"], "--output", tmp_path, "--label-head", trained["head"])
    assert done.returncode == 0, done.stderr
    manifest, built = built_map(tmp_path)
    assert manifest.map.label == built.label_kind == f"head {HEAD}"

    # The head's own graph, run here on the backfill's mean embeddings in the index's row order.
    head = json.loads(trained["head"].read_text())
    table, _, _ = read_catalog(trained["backfill"])
    graph = trained["head"].parent / head["onnx"]["file"]
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    scores = session.run(None, {head["onnx"]["input"]: embeddings(table)})[0]
    assert built.labels == [head["classes"][i] for i in scores.argmax(axis=1)]
    # A head trained on these classes names each track's class (file names start with it), not a tag of the model's.
    truth = [track_id.split("-a")[0] for track_id in table.column("track_id").to_pylist()]
    assert set(built.labels) <= set(CLASSES)
    assert np.mean([label == t for label, t in zip(built.labels, truth)]) >= 0.9


def test_without_a_label_head_the_label_is_the_top_tag(trained, models_dir, tmp_path):
    done = cli("index", "build", trained["backfill"], "--output", tmp_path)
    assert done.returncode == 0, done.stderr
    manifest, built = built_map(tmp_path)
    assert manifest.map.label == built.label_kind == catalog.MAP_LABEL
    tags = json.loads((models_dir / f"{MODEL}.json").read_text())["labels"]
    assert set(built.labels) <= set(tags) and not set(built.labels) & set(CLASSES)


def test_a_head_trained_on_another_graph_is_refused_before_anything_is_written(trained, tmp_path):
    head = json.loads(trained["head"].read_text())
    head["base_model"]["onnx_sha256"] = "0" * 64  # as if trained on another export of the model
    other = trained["root"] / "other-heads"
    other.mkdir(exist_ok=True)
    (other / f"{HEAD}.json").write_text(json.dumps(head))
    (other / head["onnx"]["file"]).write_bytes((trained["head"].parent / head["onnx"]["file"]).read_bytes())
    index_dir = tmp_path / "index"
    done = cli("index", "build", trained["backfill"], "--output", index_dir, "--label-head", other / f"{HEAD}.json")
    assert done.returncode == EXIT_USAGE
    assert "retrain the head on this model's embeddings" in done.stderr
    assert not index_dir.exists()
