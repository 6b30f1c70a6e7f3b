"""`taggram train-head` end to end on generated audio with known classes, and its refusals of bad labels.

One real backfill (--segment-embeddings) of tests/support/head_catalog.py's catalog per module; the CLI runs as a child
process (`python -m service train-head`), the checks read what it wrote.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from head_training import candidates as cand
from head_training.dataset import load
from head_training.export import write_artefact
from head_training.folds import assert_disjoint, grouped_folds, primary_class
from head_training.head import fold_platt, fold_standardisation
from head_training.labels import LabelError, read_labels
from head_training.metrics import expected_calibration_error, hit_rate
from tests.support.head_catalog import CLASSES, make_catalog, run_backfill

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT_SECONDS = 300  # a few dozen small fits on a shared 2-core machine
EXPORT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def catalog(models_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("heads")
    audio, labels = make_catalog(root)
    out = root / "backfill"
    run_backfill(audio, out, models_dir)
    return {"root": root, "audio": audio, "labels": labels, "backfill": out}


def train_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "train-head", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT_SECONDS,
    )


def rewrite_labels(source: Path, target: Path, change) -> Path:
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows = change(rows)
    with target.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_cli_trains_selects_by_grouped_cv_and_writes_a_working_artefact(catalog, models_dir, tmp_path):
    heads = tmp_path / "heads"
    done = train_cli(
        catalog["backfill"],
        catalog["labels"],
        "--name",
        "synth",
        "--output",
        heads,
        "--models-dir",
        models_dir,
        "--candidates",
        "logreg-pooled,logreg-segments",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    manifest = json.loads((heads / "synth.json").read_text())
    base = json.loads((models_dir / "msd-musicnn.json").read_text())

    assert manifest["classes"] == sorted(CLASSES)
    assert manifest["hierarchy"] == {"synthetic": sorted(CLASSES)}
    assert manifest["base_model"] == {
        "name": "msd-musicnn",
        "onnx_sha256": base["onnx"]["sha256"],
        "precision": "fp32",
        "embedding_output": "embedding",
        "embedding_dim": 200,
    }
    assert manifest["metrics"]["grouped_by"] == "artist"
    assert set(manifest["metrics"]["candidates"]) == {"logreg-pooled", "logreg-segments"}
    assert manifest["head_type"] == summary["chosen"]
    assert (
        manifest["pooling"] == {"logreg-pooled": "mean_embedding", "logreg-segments": "mean_scores"}[summary["chosen"]]
    )
    macro = manifest["metrics"]["cv"]["macro"]
    # Timbres this distinct are separable on unseen artists; a leak-free CV that still fails this is a bug.
    assert macro["roc_auc"] >= 0.95 and macro["top1"] >= 0.9, macro
    for name in CLASSES:
        assert manifest["metrics"]["cv"]["per_class"][name]["pr_auc"] is not None
    import hashlib

    assert manifest["onnx"]["sha256"] == hashlib.sha256((heads / "synth.onnx").read_bytes()).hexdigest()
    assert manifest["training"]["labels_sha256"] == hashlib.sha256(catalog["labels"].read_bytes()).hexdigest()
    assert len(manifest["training"]["embeddings_digest"]) == 64 and manifest["created_at"]
    assert manifest["versions"]["scikit-learn"]

    # The exported graph classifies the training catalog's tracks (its own segments, pooled per the manifest).
    session = ort.InferenceSession(str(heads / "synth.onnx"), providers=["CPUExecutionProvider"])
    data = load(catalog["backfill"], read_labels(catalog["labels"]))
    if manifest["pooling"] == "mean_embedding":
        scores = session.run(None, {"embedding": data.pooled})[0]
    else:
        scores = np.stack([session.run(None, {"embedding": s})[0].mean(axis=0) for s in data.segments])
    classes = manifest["classes"]
    predicted = [classes[i] for i in scores.argmax(axis=1)]
    truth = [data.classes[i] for i in data.targets.argmax(axis=1)]
    assert np.mean([p == t for p, t in zip(predicted, truth)]) >= 0.9


def test_folds_never_put_an_artist_on_both_sides(catalog):
    data = load(catalog["backfill"], read_labels(catalog["labels"]))
    for seed in range(5):
        folds = grouped_folds(data.groups, 5, seed, primary_class(data.targets))
        assert_disjoint(data.groups, folds)
        groups = np.asarray(data.groups)
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test])
        assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(groups)))
    # The check itself fails on leaking folds.
    leaking = [(np.arange(0, 20), np.arange(18, 27))]
    with pytest.raises(AssertionError):
        assert_disjoint(data.groups, leaking)


@pytest.mark.parametrize("name", ["logreg-pooled", "logreg-segments", "mlp-pooled"])
def test_exported_head_equals_the_trained_head(catalog, tmp_path, name):
    data = load(catalog["backfill"], read_labels(catalog["labels"]))
    candidate = cand.CANDIDATES[name]
    rows = np.arange(len(data.track_ids))
    x, y, g = cand.training_matrix(candidate, rows, data.pooled, data.segments, data.targets, np.asarray(data.groups))
    head = cand.fit(candidate, x, y, g, seed=0)
    onnx_path, _ = write_artefact(head, "round-trip", tmp_path, {"classes": data.classes})
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = np.concatenate([data.pooled, *data.segments]).astype(np.float32)
    np.testing.assert_allclose(
        session.run(None, {"embedding": inputs})[0], head.scores(inputs), atol=EXPORT_TOLERANCE, rtol=0
    )


def test_folded_logistic_head_equals_scikit_learn_pipeline(catalog):
    """The folding of standardisation into the weights changes nothing: same probabilities as StandardScaler +
    LogisticRegression(class_weight='balanced') per class, computed by scikit-learn itself."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = load(catalog["backfill"], read_labels(catalog["labels"]))
    candidate = cand.CANDIDATES["logreg-pooled"]
    head = cand.fit(candidate, data.pooled, data.targets, np.asarray(data.groups), seed=0, calibrate=False)
    x = data.pooled.astype(np.float64)
    scaled = StandardScaler().fit(x).transform(x)
    for c in range(len(data.classes)):
        model = LogisticRegression(C=cand.REGULARISATION_C, class_weight="balanced", max_iter=cand.MAX_ITER)
        expected = model.fit(scaled, data.targets[:, c]).predict_proba(scaled)[:, 1]
        np.testing.assert_allclose(head.scores(data.pooled)[:, c], expected, atol=1e-4)


def test_classes_fitted_side_by_side_give_the_same_head_each_on_one_blas_thread(monkeypatch):
    """``jobs`` only changes how many classes are fitted at once (the result is the same, class order kept), and
    every logistic fit runs on one BLAS thread: threaded BLAS on these matrix-vector products was what made
    training time grow 8x for 2x tracks on the shared 2 cores (docs/heads.md)."""
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    y = rng.random((150, 4)) < [0.5, 0.3, 0.2, 0.0]  # the last class has no positive: its constant logit
    x = rng.normal(size=(150, 6)) + 2.0 * y[:, :3] @ rng.normal(size=(3, 6))
    groups = np.repeat(np.arange(15), 10).astype(str)
    blas_threads = []
    fit_one_class = cand._fit_binary_logreg

    def recording(x, y):
        blas_threads.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return fit_one_class(x, y)

    monkeypatch.setattr(cand, "_fit_binary_logreg", recording)
    one_at_a_time = cand.fit(cand.CANDIDATES["logreg-pooled"], x, y, groups, seed=0, jobs=1)
    side_by_side = cand.fit(cand.CANDIDATES["logreg-pooled"], x, y, groups, seed=0, jobs=3)
    for (w1, b1), (w3, b3) in zip(one_at_a_time.layers, side_by_side.layers, strict=True):
        np.testing.assert_array_equal(w1, w3)
        np.testing.assert_array_equal(b1, b3)
    assert blas_threads and set(blas_threads) == {cand.BLAS_THREADS_PER_FIT}
    probabilities = side_by_side.scores(x)
    assert np.all(probabilities[:, 3] < 0.01)  # the empty class: constant, near 0
    assert np.mean(probabilities[y[:, 0], 0]) > np.mean(probabilities[~y[:, 0], 0]) + 0.3


def test_jobs_must_be_positive():
    from head_training.train import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["out", "labels.csv", "--name", "x", "--output", "heads", "--jobs", "0"])
    assert build_parser().parse_args(["out", "labels.csv", "--name", "x", "--output", "heads", "--jobs", "2"]).jobs == 2


def test_folding_identities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    mean, scale = rng.normal(size=5), rng.uniform(0.5, 2, size=5)
    fw, fb = fold_standardisation(w, b, mean, scale)
    np.testing.assert_allclose(x @ fw + fb, ((x - mean) / scale) @ w + b, atol=1e-12)
    slope, offset = rng.normal(size=3), rng.normal(size=3)
    pw, pb = fold_platt(w, b, slope, offset)
    np.testing.assert_allclose(x @ pw + pb, slope * (x @ w + b) + offset, atol=1e-12)


def test_metrics_on_known_values():
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    assert hit_rate(targets, perfect, 1) == 1.0
    assert hit_rate(targets, perfect[:, ::-1], 1) == 0.0 and hit_rate(targets, perfect[:, ::-1], 2) == 1.0
    assert expected_calibration_error(targets, targets.astype(float)) == 0.0
    assert expected_calibration_error(targets, np.full(targets.shape, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(targets, np.full(targets.shape, 0.9)) == pytest.approx(0.4)


# ---- bad input --------------------------------------------------------------------------------------------------


def test_duplicate_ids_are_an_error_naming_the_lines(catalog, tmp_path):
    labels = rewrite_labels(catalog["labels"], tmp_path / "dup.csv", lambda rows: [*rows, dict(rows[0])])
    with pytest.raises(LabelError, match=r"duplicate track ids: 'drone-a0-t0.wav' on lines 2, 29"):
        read_labels(labels)


def test_a_one_artist_class_is_refused_as_leakage(catalog, tmp_path):
    def one_artist(rows):
        for row in rows:
            if row["subgenres"] == "pulses":
                row["artist_id"] = "the-only-one"
        return rows

    labels = rewrite_labels(catalog["labels"], tmp_path / "leak.csv", one_artist)
    done = train_cli(
        catalog["backfill"], labels, "--name", "x", "--output", tmp_path / "out", "--models-dir", REPO_ROOT / "models"
    )
    assert done.returncode == 2
    assert "'pulses' (all 9 from artist 'the-only-one'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_ids_empty_rows_and_small_classes_are_warned_about_by_line(catalog, tmp_path):
    def damage(rows):
        rows[0]["track_id"] = "not-in-the-backfill.wav"
        rows[1]["subgenres"] = ""
        rows[2]["subgenres"] = "drone;rare"
        rows[3]["subgenres"] = "drone;rare"
        return rows

    labels = read_labels(rewrite_labels(catalog["labels"], tmp_path / "bad.csv", damage))
    data = load(catalog["backfill"], labels)
    text = "\n".join(data.warnings)
    assert "1 rows without any class are ignored: line 3" in text
    assert "1 track ids are not in the backfill results (ignored): line 2" in text
    assert "class 'rare' is dropped: 2 examples (minimum 5), 2 artists (minimum 2): lines 4, 5" in text
    assert data.classes == sorted(CLASSES) and len(data.track_ids) == 25


def test_no_artist_ids_groups_by_track_and_says_so(catalog, tmp_path):
    def no_artist(rows):
        return [{k: v for k, v in row.items() if k != "artist_id"} for row in rows]

    data = load(catalog["backfill"], read_labels(rewrite_labels(catalog["labels"], tmp_path / "na.csv", no_artist)))
    assert data.grouped_by == "track" and data.groups == data.track_ids
    assert any("folds are grouped by track" in w for w in data.warnings)


def test_embeddings_of_another_model_are_refused(catalog, tmp_path, models_dir):
    other = tmp_path / "models"
    other.mkdir()
    manifest = json.loads((models_dir / "msd-musicnn.json").read_text())
    manifest["onnx"]["sha256"] = "0" * 64  # a re-exported graph: same name, other weights
    (other / "msd-musicnn.json").write_text(json.dumps(manifest))
    done = train_cli(
        catalog["backfill"], catalog["labels"], "--name", "x", "--output", tmp_path / "out", "--models-dir", other
    )
    assert done.returncode == 2 and "embeddings of another msd-musicnn graph" in done.stderr
    done = train_cli(
        catalog["backfill"],
        catalog["labels"],
        "--name",
        "x",
        "--output",
        tmp_path / "out",
        "--models-dir",
        models_dir,
        "--model",
        "mtt-musicnn",
    )
    assert done.returncode == 2 and "not 'mtt-musicnn'" in done.stderr


def test_evaluation_scores_heads_and_tag_baselines_on_the_same_folds(catalog, tmp_path):
    from head_training.evaluate import main as evaluate_main
    from head_training.evaluate import percentiles

    reference = np.array([[0.1], [0.2], [0.3], [0.4]])
    np.testing.assert_allclose(
        percentiles(reference, np.array([[0.05], [0.2], [0.35], [0.9]]))[:, 0], [0.0, 0.5, 0.75, 1.0]
    )
    tag_map = tmp_path / "map.json"
    tag_map.write_text(
        json.dumps(
            {"drone": ["ambient"], "pulses": ["electronic", "electro"], "noise-beats": ["experimental", "heavy metal"]}
        )
    )
    out = tmp_path / "eval.json"
    assert (
        evaluate_main(
            [
                str(catalog["backfill"]),
                str(catalog["labels"]),
                "--tag-map",
                str(tag_map),
                "--out",
                str(out),
                "--candidates",
                "logreg-pooled",
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    assert set(summary["results"]) == {"logreg-pooled", "tags-raw", "tags-percentile", "tags-platt"}
    assert summary["grouped_by"] == "artist" and summary["tracks"] == 27
    for result in summary["results"].values():
        assert set(result["per_class"]) == set(CLASSES) and result["macro"]["tracks"] == 27
    assert summary["results"]["logreg-pooled"]["macro"]["roc_auc"] >= 0.95
    bad_map = tmp_path / "bad.json"
    bad_map.write_text(json.dumps({"drone": ["no-such-tag"]}))
    assert evaluate_main([str(catalog["backfill"]), str(catalog["labels"]), "--tag-map", str(bad_map)]) == 2
