"""Similar tracks (issue #13): `taggram index build` on a real backfill of real music → the index files → the
searchers → `taggram serve` over real HTTP (endpoints, errors, /models, metrics) → hot swap under load → refusals.

The catalog: 10-s clips of the three lincity-ng-data tracks (corpus/music.py; Debian's freely licensed game music),
three clips per track at different offsets, cut without re-encoding, tagged by the real `taggram backfill`.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile

from corpus.music import cut_clip, ensure_music
from service.artefacts.durable import atomic_write
from service.artefacts.manifest import sha256_file
from service.artefacts.similar import artefact
from service.artefacts.similar.search import ExactSearcher, UsearchSearcher
from service.artefacts.similar.serving import load_index
from service.offline import index_build as build
from service.offline.backfill.output import OUTPUT_FORMAT, RUN_FILE
from tests.support.audio_factory import encode_audio
from tests.support.serve_process import ServeProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "msd-musicnn"
CLIP_SECONDS = 10.0
CLIP_OFFSETS_SECONDS = (20.0, 60.0, 100.0)
RUN_TIMEOUT_SECONDS = 300  # the backfill of 9 clips on a loaded 2-core machine


@pytest.fixture(scope="module")
def music_catalog(tmp_path_factory) -> tuple[Path, Path]:
    """(catalog CSV with track_id, path, artist_id, title; the clips' directory)."""
    root = tmp_path_factory.mktemp("music")
    rows = []
    for track in ensure_music():
        artist = track.stem.split(" - ")[1]
        for offset in CLIP_OFFSETS_SECONDS:
            track_id = f"{track.stem.split(' - ')[0]}/at-{int(offset)}s"
            path = root / f"{track_id.replace('/', '_')}.ogg"
            path.write_bytes(cut_clip(track, offset, CLIP_SECONDS))
            rows.append({"track_id": track_id, "path": str(path), "artist_id": artist, "title": track.stem})
    manifest = root / "catalog.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest, root


@pytest.fixture(scope="module")
def backfill_out(music_catalog, models_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("backfill") / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "backfill",
            str(music_catalog[0]),
            "--out",
            str(out),
            "--model",
            MODEL,
            "--models-dir",
            str(models_dir),
            "--workers",
            "1",
            "--progress",
            "log",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stderr
    return out


def index_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "index", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


@pytest.fixture(scope="module")
def index_dir(backfill_out, music_catalog, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index")
    done = index_cli("build", backfill_out, "--output", out, "--artists", music_catalog[0])
    assert done.returncode == 0, done.stderr
    return out


class Models(dict):
    """Loaded models as load_index needs them (name → object with .manifest and .runner.precision), read from the
    model manifests; fp32, as the suite runs (tests/support/serve_process.TEST_PRECISION)."""

    def __init__(self, models_dir: Path, names=(MODEL,)) -> None:
        from types import SimpleNamespace

        from service.artefacts.manifest import load_manifest

        super().__init__(
            {
                n: SimpleNamespace(
                    manifest=load_manifest(models_dir / f"{n}.json"), runner=SimpleNamespace(precision="fp32")
                )
                for n in names
            }
        )


# ---- build → load → query --------------------------------------------------------------------------------------


def test_build_writes_a_manifest_that_describes_the_catalog(index_dir, backfill_out, models_dir, music_catalog):
    manifest = artefact.read_manifest(index_dir / f"{MODEL}.json")
    model = Models(models_dir)[MODEL].manifest
    assert (manifest.model, manifest.onnx_sha256, manifest.count, manifest.dim) == (MODEL, model.onnx.sha256, 9, 200)
    assert manifest.precision == "fp32"  # the backfill's (docs/precision.md)
    assert manifest.library == "numpy" and manifest.metric == "cosine" and manifest.has_artists
    assert manifest.duplicate_threshold == build.CALIBRATED_DUPLICATE_THRESHOLDS[MODEL]
    assert manifest.source["digest"] == build.source_digest(backfill_out)
    assert manifest.files.vectors_sha256 == sha256_file(index_dir / manifest.files.vectors)
    raw = np.asarray(build.read_catalog(backfill_out)[0].column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(manifest.mean, raw.mean(axis=0), atol=1e-6)
    assert not list(index_dir.glob(".*")), "temporary files left behind"


def test_round_trip_every_track_finds_itself_first(index_dir, models_dir):
    index = load_index(index_dir / f"{MODEL}.json", Models(models_dir))
    for row, track_id in enumerate(index.track_ids):
        (first, *rest) = index.neighbours(index.searcher.vector(row), k=3)
        assert index.track_ids[first.row] == track_id and first.score == pytest.approx(1.0, abs=1e-5)
        assert all(n.score < first.score for n in rest)
        vector = index.searcher.vector(row)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_exclusions_drop_the_query_and_its_artist(index_dir, models_dir):
    index = load_index(index_dir / f"{MODEL}.json", Models(models_dir))
    row = 0
    artist = index.artists[row]
    found = index.neighbours(index.searcher.vector(row), k=8, exclude_row=row)
    assert len(found) == 8 and row not in [n.row for n in found]
    others = index.neighbours(index.searcher.vector(row), k=8, exclude_row=row, exclude_artist=artist)
    assert others and all(index.artists[n.row] != artist for n in others)
    assert len(others) == sum(a != artist for a in index.artists)  # fewer than k: every other artist's track


def clustered(n: int, dim: int = 200, seed: int = 5, latent: int = 12) -> np.ndarray:
    """Clusters on a low-dimensional subspace plus a little noise, as embeddings of real music are (isotropic noise
    in 200 dimensions makes every point nearly equidistant: no index can rank such ties the same way)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((latent, dim))  # the same subspace for every seed
    centres = rng.standard_normal((20, latent))
    points = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, latent))
    return (points @ basis + 0.05 * rng.standard_normal((n, dim))).astype(np.float32)


def write_backfill_like(out: Path, vectors: np.ndarray, onnx_sha256: str) -> None:
    """What `index build` reads, as the backfill writes it: the columns (results/part-*.parquet) and the run's
    identity file, whose precision the index records (absent, as in every output before bf16: fp32)."""
    (out / "results").mkdir(parents=True)
    (out / RUN_FILE).write_text(json.dumps({"format": OUTPUT_FORMAT, "model": MODEL, "onnx_sha256": onnx_sha256}))
    table = pa.table(
        {
            "track_id": [f"t{i}" for i in range(len(vectors))],
            "model": [MODEL] * len(vectors),
            "onnx_sha256": [onnx_sha256] * len(vectors),
            "embedding": pa.array(vectors.tolist(), pa.list_(pa.float32(), vectors.shape[1])),
        }
    )
    pq.write_table(table, out / "results" / "part-n0001-i0000-000000.parquet")


def test_catalog_normalisation_removes_the_common_component_and_scales_to_unit_length():
    raw = clustered(300) + 20.0  # a large component shared by every track, as raw musicnn embeddings have
    vectors, mean = artefact.normalise_catalog(raw)
    np.testing.assert_allclose(mean, raw.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    unit_raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    off_diagonal = ~np.eye(len(raw), dtype=bool)
    assert np.median((unit_raw @ unit_raw.T)[off_diagonal]) > 0.9  # raw: every pair looks alike
    assert abs(np.median((vectors @ vectors.T)[off_diagonal])) < 0.2  # centred: unrelated tracks scatter around 0
    np.testing.assert_allclose(artefact.normalise(raw[:5], mean), vectors[:5], atol=1e-6)  # a query, the same way


F16_SCORE_ERROR = 2e-3  # a dot product of unit vectors stored in f16 (11-bit mantissa), 200 dimensions
# HNSW is approximate even with ef_search ≥ n: its neighbour-selection heuristic can leave a node of a tight cluster
# unreachable in one build and not the next (usearch builds on all threads). Over repeated builds of this catalog
# f32 found every exact top 10 (1500 queries); f16 returned another top 10 for 12 of 1500 queries (a missed row, or
# rows within its rounding trading places), which failed the former exact-equality test about one run in eight.
MIN_RECALL_AT_10 = 0.98


@pytest.mark.parametrize("storage", build.HNSW_STORAGES)
def test_hnsw_agrees_with_exact_on_a_small_index(tmp_path, storage):
    vectors = clustered(500)
    write_backfill_like(tmp_path / "bf", vectors, "0" * 64)
    exact = build.build(tmp_path / "bf", tmp_path / "exact", backend="exact")
    hnsw = build.build(tmp_path / "bf", tmp_path / "hnsw", backend="usearch", storage=storage)
    assert (exact.library, hnsw.library, hnsw.storage) == ("numpy", "usearch", storage)
    a = ExactSearcher(tmp_path / "exact" / exact.files.vectors)
    b = UsearchSearcher(tmp_path / "hnsw" / hnsw.files.vectors)
    queries = artefact.normalise(clustered(50, seed=6), exact.mean)
    rounding = F16_SCORE_ERROR if storage == "f16" else 1e-5
    found = 0
    for query in queries:
        rows_a, scores_a = a.search(query, 10)
        rows_b, scores_b = b.search(query, 10)
        np.testing.assert_allclose(scores_b, a.vectors[rows_b] @ query, atol=rounding)  # each row's own score
        assert np.all(np.diff(scores_b) <= 0)  # best first
        # a row counts as found when it is in the exact top 10, or ties (within rounding) with its 10th
        found += sum(row in rows_a or a.vectors[row] @ query >= scores_a[-1] - rounding for row in rows_b.tolist())
    assert found / (10 * len(queries)) >= MIN_RECALL_AT_10


def test_rebuild_keeps_the_previous_generation_and_removes_older_ones(tmp_path):
    write_backfill_like(tmp_path / "bf", clustered(50), "0" * 64)
    names = []
    for threshold in (0.5, 0.6, 0.7):  # same vectors: the threshold alone changes the manifest, not the files
        names.append(build.build(tmp_path / "bf", tmp_path / "ix", duplicate_threshold=threshold).files.vectors)
    assert len(set(names)) == 1 and (tmp_path / "ix" / names[0]).exists()
    write_backfill_like(tmp_path / "bf2", clustered(50, seed=9), "0" * 64)
    second = build.build(tmp_path / "bf2", tmp_path / "ix").files.vectors
    write_backfill_like(tmp_path / "bf3", clustered(50, seed=10), "0" * 64)
    third = build.build(tmp_path / "bf3", tmp_path / "ix").files.vectors
    assert sorted(p.name for p in (tmp_path / "ix").glob("*.npy")) == sorted({second, third})


def test_build_refuses_an_empty_output_and_a_bad_artists_file(tmp_path, backfill_out):
    (tmp_path / "empty" / "results").mkdir(parents=True)
    done = index_cli("build", tmp_path / "empty", "--output", tmp_path / "ix")
    assert done.returncode == 2 and "no committed results" in done.stderr
    (tmp_path / "artists.csv").write_text("id,name\nx,y\n")
    done = index_cli("build", backfill_out, "--output", tmp_path / "ix", "--artists", tmp_path / "artists.csv")
    assert done.returncode == 2 and "artist_id" in done.stderr
    assert not (tmp_path / "ix" / f"{MODEL}.json").exists()


def test_build_refuses_int8_storage(tmp_path):
    """usearch's i8 rounds unit-vector components (~0.04) to multiples of 1/127: recall@10 0.71 at 10⁵ real-derived
    vectors (docs/similar.md), so it is not offered."""
    done = index_cli("build", tmp_path / "bf", "--output", tmp_path / "ix", "--storage", "i8")
    assert done.returncode == 2 and "invalid choice: 'i8'" in done.stderr


# ---- serving over real HTTP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(index_dir, models_dir, tmp_path_factory):
    with ServeProcess(
        models_dir,
        tmp_path_factory.mktemp("logs"),
        TAGGRAM_MODELS=f"{MODEL},mtt-musicnn",
        TAGGRAM_INDEX_DIR=str(index_dir),
    ) as proc:
        proc.wait_ready()
        yield proc


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def test_get_similar_answers_the_contract(server, music_catalog):
    track_id = "01/at-20s"
    body = httpx.get(f"{server.url}/similar/{track_id}", params={"k": 4}, timeout=30).json()
    assert body["model"] == MODEL and len(body["neighbours"]) == 4
    assert track_id not in [n["track_id"] for n in body["neighbours"]]
    scores = [n["score"] for n in body["neighbours"]]
    assert scores == sorted(scores, reverse=True)
    for n in body["neighbours"]:
        assert set(n) == {"track_id", "score", "duplicate", "artist_id", "title"}
        assert n["artist_id"] in {"pronobozo", "Robert van Herk"} and n["title"]
    threshold = httpx.get(f"{server.url}/models").json()["models"][0]["index"]["duplicate_threshold"]
    assert [n["duplicate"] for n in body["neighbours"]] == [s >= threshold for s in scores]
    assert body["duplicate"] == any(n["duplicate"] for n in body["neighbours"])
    own = httpx.get(f"{server.url}/similar/{track_id}", params={"k": 8, "exclude_artist": "true"}).json()
    assert own["neighbours"] and all(n["artist_id"] != "pronobozo" for n in own["neighbours"])


def test_get_similar_errors(server):
    problem(httpx.get(f"{server.url}/similar/no-such-track"), 404, "unknown_track")
    problem(httpx.get(f"{server.url}/similar/01/at-20s", params={"k": 0}), 422, "invalid_parameter")
    problem(httpx.get(f"{server.url}/similar/01/at-20s", params={"k": 51}), 422, "invalid_parameter")
    problem(httpx.get(f"{server.url}/similar/01/at-20s", params={"model": "mtt-musicnn"}), 503, "no_index")
    problem(httpx.get(f"{server.url}/similar/01/at-20s", params={"model": "nope"}), 422, "unknown_model")


def reencoded(music_catalog, name: str, fmt: str = "mp3", bit_rate: int = 128_000) -> bytes:
    samples, rate = soundfile.read(music_catalog[1] / name, dtype="float32", always_2d=True)
    return encode_audio(samples.T, rate, fmt, bit_rate=bit_rate)


def test_post_similar_finds_the_original_of_a_reencode(server, music_catalog):
    upload = reencoded(music_catalog, "02_at-60s.ogg")
    response = httpx.post(
        f"{server.url}/similar", params={"k": 3}, content=upload, headers={"content-type": "audio/mpeg"}, timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["neighbours"][0]
    assert first["track_id"] == "02/at-60s" and first["score"] > body["neighbours"][1]["score"]
    assert first["duplicate"] and body["duplicate"]  # an mp3 of a catalog clip is that clip
    assert body["cached"] is False and body["duration_seconds"] == pytest.approx(CLIP_SECONDS, abs=0.5)
    again = httpx.post(
        f"{server.url}/similar",
        params={"k": 3, "artist_id": "Robert van Herk", "exclude_artist": "true"},
        content=upload,
        headers={"content-type": "audio/mpeg"},
        timeout=120,
    ).json()
    assert again["cached"] is True and all(n["artist_id"] == "pronobozo" for n in again["neighbours"])


def test_post_similar_errors(server, music_catalog):
    upload = reencoded(music_catalog, "01_at-20s.ogg")
    headers = {"content-type": "audio/mpeg"}
    problem(
        httpx.post(f"{server.url}/similar", params={"exclude_artist": "true"}, content=upload, headers=headers),
        422,
        "invalid_parameter",
    )
    problem(
        httpx.post(f"{server.url}/similar", params={"model": "mtt-musicnn"}, content=upload, headers=headers),
        503,
        "no_index",
    )
    problem(
        httpx.post(f"{server.url}/similar", params={"k": 0}, content=upload, headers=headers), 422, "invalid_parameter"
    )
    problem(
        httpx.post(f"{server.url}/similar", params={"hop": 0.01}, content=upload, headers=headers),
        422,
        "invalid_parameter",
    )


def test_models_and_metrics_describe_the_index(server, index_dir):
    manifest = artefact.read_manifest(index_dir / f"{MODEL}.json")
    models = {m["name"]: m for m in httpx.get(f"{server.url}/models").json()["models"]}
    assert models["mtt-musicnn"]["index"] is None
    block = models[MODEL]["index"]
    assert (block["vectors"], block["dim"], block["metric"], block["built_at"]) == (9, 200, "cosine", manifest.built_at)
    assert block["loaded_at"] >= manifest.built_at and block["duplicate_threshold"] == manifest.duplicate_threshold
    text = httpx.get(f"{server.url}/metrics").text
    assert f'taggram_index_vectors{{model="{MODEL}"}} 9.0' in text
    assert f'taggram_index_built_timestamp_seconds{{model="{MODEL}"}}' in text
    assert f'taggram_index_load_duration_seconds{{model="{MODEL}"}}' in text


# ---- hot swap --------------------------------------------------------------------------------------------------


def metric_value(url: str, name: str, **labels) -> float:
    selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(selector + " "):
            return float(line.split()[-1])
    return 0.0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_rebuilt_index_swaps_in_under_concurrent_queries(backfill_out, music_catalog, models_dir, tmp_path):
    index_dir = tmp_path / "index"
    assert index_cli("build", backfill_out, "--output", index_dir).returncode == 0  # no artists yet
    errors: list[str] = []
    answered = [0]
    stop = threading.Event()
    with ServeProcess(
        models_dir, tmp_path / "logs", TAGGRAM_INDEX_DIR=str(index_dir), TAGGRAM_INDEX_POLL_SECONDS="0.2"
    ) as proc:
        proc.wait_ready()

        def query() -> None:
            with httpx.Client(base_url=proc.url, timeout=30) as http:
                while not stop.is_set():
                    r = http.get("/similar/03/at-100s", params={"k": 8})
                    if r.status_code != 200 or len(r.json()["neighbours"]) != 8:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    answered[0] += 1

        threads = [threading.Thread(target=query) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for round_, (backend, artists) in enumerate([("usearch", True), ("exact", False), ("usearch", False)]):
                extra = ["--artists", music_catalog[0]] if artists else []
                done = index_cli("build", backfill_out, "--output", index_dir, "--backend", backend, *extra)
                assert done.returncode == 0, done.stderr
                wait_until(
                    lambda round_=round_: (
                        metric_value(proc.url, "taggram_index_reloads_total", model=MODEL, result="ok") >= round_ + 1
                    ),
                    30,
                    f"reload {round_ + 1}",
                )
                block = httpx.get(f"{proc.url}/models").json()["models"][0]["index"]
                assert block["library"] == ("numpy" if backend == "exact" else "usearch")
                assert block["has_artists"] is artists
            # A broken generation: the manifest names a vectors file that is not there. The old index keeps serving.
            manifest = json.loads((index_dir / f"{MODEL}.json").read_text())
            manifest["files"]["vectors"] = "missing.usearch"
            atomic_write(index_dir / f"{MODEL}.json", lambda p: p.write_text(json.dumps(manifest)))
            wait_until(
                lambda: metric_value(proc.url, "taggram_index_reloads_total", model=MODEL, result="failed") >= 1,
                30,
                "the failed reload",
            )
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert httpx.get(f"{proc.url}/models").json()["models"][0]["index"]["library"] == "usearch"
        assert "index reload failed" in proc.stderr()
    assert answered[0] > 10 and errors == []


# ---- start-up refusals -----------------------------------------------------------------------------------------


def refused(models_dir: Path, log_dir: Path, expected: str, **settings) -> None:
    with ServeProcess(models_dir, log_dir, **settings) as proc:
        assert proc.wait() == 2
        lines = [line for line in proc.stderr().splitlines() if "cannot start" in line]
        assert len(lines) == 1 and expected in lines[0], proc.stderr()


def test_start_refuses_an_index_of_a_model_that_is_not_loaded(index_dir, models_dir, tmp_path):
    refused(
        models_dir,
        tmp_path,
        "which is not loaded",
        TAGGRAM_MODELS="mtt-musicnn",
        TAGGRAM_DEFAULT_MODEL="mtt-musicnn",
        TAGGRAM_INDEX_DIR=str(index_dir),
    )


def copy_index(index_dir: Path, target: Path) -> Path:
    shutil.copytree(index_dir, target)
    return target / f"{MODEL}.json"


def test_start_refuses_an_index_of_another_onnx_file(index_dir, models_dir, tmp_path):
    path = copy_index(index_dir, tmp_path / "ix")
    manifest = json.loads(path.read_text())
    manifest["onnx_sha256"] = "f" * 64
    path.write_text(json.dumps(manifest))
    refused(models_dir, tmp_path, "another msd-musicnn onnx file", TAGGRAM_INDEX_DIR=str(path.parent))


def test_start_refuses_an_index_of_another_precision(index_dir, models_dir, tmp_path):
    path = copy_index(index_dir, tmp_path / "ix")
    manifest = json.loads(path.read_text())
    manifest["precision"] = "bf16"  # built from a backfill run with --precision bf16; this server runs fp32
    path.write_text(json.dumps(manifest))
    refused(
        models_dir, tmp_path, "holds bf16 embeddings; msd-musicnn runs in fp32 here", TAGGRAM_INDEX_DIR=str(path.parent)
    )


def test_start_refuses_a_corrupt_index_file(index_dir, models_dir, tmp_path):
    path = copy_index(index_dir, tmp_path / "ix")
    vectors = path.parent / json.loads(path.read_text())["files"]["vectors"]
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 0xFF
    vectors.write_bytes(bytes(data))
    refused(models_dir, tmp_path, "corrupt or replaced", TAGGRAM_INDEX_DIR=str(path.parent))


def test_start_refuses_a_missing_index_directory(models_dir, tmp_path):
    refused(models_dir, tmp_path, "does not exist", TAGGRAM_INDEX_DIR=str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_an_empty_index_directory_serves_503_until_a_build_and_sighup(backfill_out, models_dir, tmp_path):
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    with ServeProcess(
        models_dir, tmp_path / "logs", TAGGRAM_INDEX_DIR=str(index_dir), TAGGRAM_INDEX_POLL_SECONDS="0"
    ) as proc:  # 0: no polling, only SIGHUP
        proc.wait_ready()
        problem(httpx.get(f"{proc.url}/similar/01/at-20s"), 503, "no_index")
        assert index_cli("build", backfill_out, "--output", index_dir).returncode == 0
        time.sleep(1.0)
        problem(httpx.get(f"{proc.url}/similar/01/at-20s"), 503, "no_index")  # nobody looked yet
        proc.process.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{proc.url}/similar/01/at-20s").status_code == 200, 30, "the SIGHUP reload")
        assert metric_value(proc.url, "taggram_index_reloads_total", model=MODEL, result="ok") == 1
        assert "no index manifests" in proc.stderr()


def test_no_request_generated_from_the_openapi_schema_makes_similar_fail(server):
    """tests/system/test_fuzz.py's schemathesis run, for the /similar operations, against a server with an index."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    from tests.system.test_fuzz import SIMILAR_OPERATIONS, assert_no_server_error

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().label in SIMILAR_OPERATIONS]
    assert {op.label for op in operations} == SIMILAR_OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            assert_no_server_error(operation, mode, examples=15)
