"""Heads served over real HTTP (uvicorn, real Redis cache): GET /models, ?taxonomy=, ?head=, heads on cached
analyses, and the start-up refusals of the real CLI (`taggram serve`: one ERROR line, exit code 2).

Heads are trained here with the real `train-head` on tests/support/head_catalog.py's generated catalog; the tracks sent
to the service come from artists the heads never saw.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from head_training.train import main as train_head
from tests.support.audio_factory import encode_audio
from tests.support.head_catalog import CLASSES, RATE_HZ, TRACK_SECONDS, make_catalog, run_backfill
from tests.support.live_server import live_server, server_settings
from tests.support.redis_support import redis_url  # noqa: F401 (fixture)
from tests.support.serve_process import ServeProcess

MODEL = "msd-musicnn"
TAG_TAXONOMY = "platform-genres-msd"
POOLED_HEAD, SEGMENT_HEAD = "synth", "synth-seg"
NEW_ARTIST = 7  # pitch/tempo/seed no training artist had
LOG_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.fixture(scope="module")
def heads_dir(models_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("heads-serving")
    audio, labels = make_catalog(root)
    run_backfill(audio, root / "backfill", models_dir)
    out = root / "heads"
    for name, candidate in ((POOLED_HEAD, "logreg-pooled"), (SEGMENT_HEAD, "logreg-segments")):
        code = train_head(
            [
                str(root / "backfill"),
                str(labels),
                "--name",
                name,
                "--output",
                str(out),
                "--models-dir",
                str(models_dir),
                "--candidates",
                candidate,
            ]
        )
        assert code == 0
    return out


def track(cls: str, seconds: float = 2 * TRACK_SECONDS) -> bytes:
    samples = np.clip(CLASSES[cls](seconds, NEW_ARTIST, 0), -1, 1).astype(np.float32)[None, :]
    return encode_audio(samples, RATE_HZ, "flac")


@pytest.mark.slow
def test_heads_answer_from_cached_analyses_exactly_as_from_fresh_ones(heads_dir, models_dir, redis_url):
    settings = server_settings(
        models_dir, heads_dir=heads_dir, redis_url=redis_url, default_taxonomies=f"{MODEL}={POOLED_HEAD}"
    )
    manifests = {n: json.loads((heads_dir / f"{n}.json").read_text()) for n in (POOLED_HEAD, SEGMENT_HEAD)}
    with live_server(settings) as live, live.client() as http:
        models = http.get("/models").json()["models"]
        (entry,) = models
        # The shipped msd-musicnn calibration (service/artefacts/taxonomies) adds the calibrated variant.
        assert entry["taxonomies"] == [TAG_TAXONOMY, f"{TAG_TAXONOMY}-calibrated"]
        assert entry["default_taxonomy"] == POOLED_HEAD
        listed = {h["name"]: h for h in entry["heads"]}
        assert set(listed) == {POOLED_HEAD, SEGMENT_HEAD}
        assert listed[POOLED_HEAD]["default"] is True and listed[SEGMENT_HEAD]["default"] is False
        assert listed[POOLED_HEAD]["metrics"]["macro"] == manifests[POOLED_HEAD]["metrics"]["cv"]["macro"]
        assert listed[SEGMENT_HEAD]["pooling"] == "mean_scores"

        for cls in CLASSES:
            data = track(cls)
            first = http.post("/suggest-subgenres?k=3", content=data).json()  # the configured default: a head
            assert first["kind"] == "head" and first["taxonomy"] == POOLED_HEAD and first["cached"] is False
            assert first["suggestions"][0]["subgenre"] == cls, first  # an unseen artist, classified right
            again = http.post("/suggest-subgenres?k=3", content=data).json()
            assert again["cached"] is True and again["suggestions"] == first["suggestions"]

            for name in (POOLED_HEAD, SEGMENT_HEAD):
                body = http.post(f"/taggram?head={name}", content=data).json()
                assert body["cached"] is True
                head = body["head"]
                assert head["name"] == name and head["classes"] == manifests[name]["classes"]
                assert len(head["segments"]) == len(body["segments"]) == 4
                suggested = http.post(f"/suggest-subgenres?taxonomy={name}&k=3", content=data).json()
                by_class = {s["subgenre"]: s["score"] for s in suggested["suggestions"]}
                assert [by_class[c] for c in head["classes"]] == head["mean"]  # one pooling, one answer
                if name == SEGMENT_HEAD:
                    np.testing.assert_allclose(np.mean(head["segments"], axis=0), head["mean"], rtol=1e-6)

            tags = http.post(f"/suggest-subgenres?taxonomy={TAG_TAXONOMY}", content=data).json()
            assert tags["kind"] == "tags" and tags["taxonomy"] == TAG_TAXONOMY and tags["cached"] is True

        metrics = http.get("/metrics").text
        assert f'taggram_heads_loaded{{model="{MODEL}"}} 2.0' in metrics


def test_head_scores_equal_the_head_run_on_the_served_embeddings(heads_dir, models_dir):
    import onnxruntime as ort

    data = track("drone")
    settings = server_settings(models_dir, heads_dir=heads_dir)
    with live_server(settings) as live, live.client() as http:
        embeddings = np.array(
            [s["embedding"] for s in http.post("/embed?segments=true", content=data).json()["segments"]], np.float32
        )
        body = http.post(f"/taggram?head={SEGMENT_HEAD}", content=data).json()
    session = ort.InferenceSession(str(heads_dir / f"{SEGMENT_HEAD}.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(body["head"]["segments"], session.run(None, {"embedding": embeddings})[0], atol=1e-6)


def test_taxonomy_contract_and_errors(heads_dir, models_dir):
    data = track("pulses")
    with live_server(server_settings(models_dir, heads_dir=heads_dir)) as live, live.client() as http:
        default = http.post("/suggest-subgenres", content=data).json()  # no default configured: the platform's
        assert default["kind"] == "tags" and default["taxonomy"] == "platform"
        own = http.post("/suggest-subgenres?model=msd-musicnn", content=data).json()  # a model named: its own default
        assert own["kind"] == "tags" and own["taxonomy"] == TAG_TAXONOMY
        assert set(default) >= {"model", "taxonomy", "kind", "suggestions", "duration_seconds", "cached"}
        head = http.post(f"/suggest-subgenres?taxonomy={POOLED_HEAD}&k=2", content=data).json()
        assert head["kind"] == "head" and len(head["suggestions"]) == 2
        assert all(0 <= s["score"] <= 1 for s in head["suggestions"])
        plain = http.post("/taggram", content=data).json()
        assert plain["head"] is None

        for url in ("/suggest-subgenres?taxonomy=no-such-head", f"/taggram?head={TAG_TAXONOMY}", "/taggram?head=nope"):
            response = http.post(url, content=data)
            assert response.status_code == 422, url
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "unknown_taxonomy", url
        wrong_model = http.post(f"/suggest-subgenres?model=mtt-musicnn&taxonomy={POOLED_HEAD}", content=data)
        assert wrong_model.status_code == 422 and wrong_model.json()["code"] == "unknown_model"
    with live_server(server_settings(models_dir)) as live, live.client() as http:  # no heads folder: none
        (entry,) = http.get("/models").json()["models"]
        assert entry["heads"] == [] and entry["default_taxonomy"] == TAG_TAXONOMY
        assert (
            http.post(f"/suggest-subgenres?taxonomy={POOLED_HEAD}", content=data).json()["code"] == "unknown_taxonomy"
        )


# ---- start-up refusals: the real CLI ----------------------------------------------------------------------------


def _copy_heads(heads_dir: Path, dest: Path) -> Path:
    shutil.copytree(heads_dir, dest)
    return dest


def _edit_manifest(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _other_base_sha(folder: Path) -> str:
    _edit_manifest(folder, POOLED_HEAD, lambda d: d["base_model"].update(onnx_sha256="1" * 64))
    return "retrain the head"


def _base_not_loaded(folder: Path) -> str:
    _edit_manifest(folder, POOLED_HEAD, lambda d: d["base_model"].update(name="mtt-musicnn"))
    return "base model 'mtt-musicnn' is not loaded"


def _corrupt_head_graph(folder: Path) -> str:
    path = folder / f"{POOLED_HEAD}.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "is corrupt or replaced"


def _missing_head_graph(folder: Path) -> str:
    (folder / f"{SEGMENT_HEAD}.onnx").unlink()
    return "cannot be read"


@pytest.mark.parametrize("breaker", [_other_base_sha, _base_not_loaded, _corrupt_head_graph, _missing_head_graph])
def test_start_is_refused_with_one_line_for_a_broken_head(heads_dir, models_dir, tmp_path, breaker):
    folder = _copy_heads(heads_dir, tmp_path / "heads")
    expected = breaker(folder)
    with ServeProcess(models_dir, tmp_path / "logs", TAGGRAM_HEADS_DIR=str(folder)) as proc:
        assert proc.wait() == 2
        errors = [line for line in proc.stderr().splitlines() if LOG_LINE.match(line) and " ERROR " in line]
    assert len(errors) == 1 and "cannot start: head" in errors[0] and expected in errors[0], proc.stderr()
    assert "Traceback" not in proc.stderr()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{MODEL}=no-such-head", "has no head or taxonomy 'no-such-head'"),
        ("mtt-vgg=synth", "names model 'mtt-vgg', which is not loaded"),
        ("garbage", "is not model=name"),
    ],
)
def test_start_is_refused_for_a_bad_default_taxonomy(heads_dir, models_dir, tmp_path, value, expected):
    with ServeProcess(
        models_dir, tmp_path / "logs", TAGGRAM_HEADS_DIR=str(heads_dir), TAGGRAM_DEFAULT_TAXONOMIES=value
    ) as proc:
        assert proc.wait() == 2
        errors = [line for line in proc.stderr().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], proc.stderr()


@pytest.mark.slow
def test_unset_heads_dir_serves_without_heads_and_a_missing_one_refuses(models_dir, tmp_path):
    with ServeProcess(models_dir, tmp_path / "logs", TAGGRAM_HEADS_DIR=str(tmp_path / "absent")) as proc:
        assert proc.wait() == 2
    assert "heads folder" in proc.stderr() and "does not exist" in proc.stderr()
    with ServeProcess(models_dir, tmp_path / "logs2") as proc:
        proc.wait_ready()
        assert httpx.get(proc.url + "/models").json()["models"][0]["heads"] == []


# ---- catalog-calibrated tag taxonomy -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_taxonomies(heads_dir, tmp_path_factory) -> Path:
    """A taxonomy folder with the shipped msd-musicnn taxonomy and a calibration built from the test catalog."""
    from head_training.tag_calibration import build
    from service.artefacts.taxonomy import SHIPPED_DIR

    folder = tmp_path_factory.mktemp("taxonomies")
    shutil.copyfile(SHIPPED_DIR / f"{MODEL}.json", folder / f"{MODEL}.json")
    document = build(heads_dir.parent / "backfill", "generated test catalog")
    (folder / f"{MODEL}.calibration.json").write_text(json.dumps(document))
    return folder


def test_calibrated_tag_taxonomy_ranks_by_catalog_percentile(models_dir, calibrated_taxonomies):
    calibration = json.loads((calibrated_taxonomies / f"{MODEL}.calibration.json").read_text())
    taxonomy = json.loads((calibrated_taxonomies / f"{MODEL}.json").read_text())
    name = f"{TAG_TAXONOMY}-calibrated"
    data = track("noise-beats")
    settings = server_settings(models_dir, taxonomy_dir=calibrated_taxonomies, default_taxonomies=f"{MODEL}={name}")
    with live_server(settings) as live, live.client() as http:
        (entry,) = http.get("/models").json()["models"]
        assert entry["taxonomies"] == [TAG_TAXONOMY, name] and entry["default_taxonomy"] == name
        body = http.post("/suggest-subgenres?k=50", content=data).json()
        mean = http.post("/taggram", content=data).json()["mean"]
    assert body["kind"] == "tags" and body["taxonomy"] == name
    # Independently: each tag's percentile by interpolation in the stored quantiles, best among a subgenre's tags.
    levels = np.linspace(0, 1, calibration["points"])
    percentile = {
        label: np.interp(score, q, levels)
        for label, score, q in zip(calibration["labels"], mean, calibration["quantiles"])
    }
    expected = {s: max(percentile[t] for t in tags) for s, tags in taxonomy["subgenres"].items()}
    got = {s["subgenre"]: s["score"] for s in body["suggestions"]}
    assert got.keys() == expected.keys()
    for subgenre, score in expected.items():
        assert got[subgenre] == pytest.approx(score, abs=1e-6), subgenre
    assert [s["score"] for s in body["suggestions"]] == sorted(got.values(), reverse=True)


def test_calibration_of_another_graph_refuses_to_start(models_dir, calibrated_taxonomies, tmp_path):
    folder = tmp_path / "taxonomies"
    shutil.copytree(calibrated_taxonomies, folder)
    path = folder / f"{MODEL}.calibration.json"
    document = json.loads(path.read_text())
    document["onnx_sha256"] = "2" * 64
    path.write_text(json.dumps(document))
    with ServeProcess(models_dir, tmp_path / "logs", TAGGRAM_TAXONOMY_DIR=str(folder)) as proc:
        assert proc.wait() == 2
        errors = [line for line in proc.stderr().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "tag calibration" in errors[0] and "another msd-musicnn graph" in errors[0]
