"""`taggram backfill`: real files, real worker processes, real Parquet; parity with the live service.

The catalog is generated once per module with the real encoders (tests/support/audio_factory.py), broken files included.
One clean in-process run is the reference the other runs (killed and resumed, sharded, SIGTERMed) must reproduce
exactly. Behaviour that depends on processes (SIGKILL, a dying decoder, SIGTERM) is exercised on the real CLI
(`python -m service backfill`) in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis
import yaml

from service.config import Settings
from service.engine.cache import cache_key
from service.offline import backfill
from service.offline.backfill import read_output, shard_of
from service.offline.backfill.cli import build_parser
from tests.support.audio_factory import chord, encode_audio, noise, sine, sweep
from tests.support.live_server import live_server, server_settings
from tests.support.ogg_pages import with_padded_vorbis_setup
from tests.support.redis_support import redis_url  # noqa: F401 (fixture)

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "msd-musicnn"
MAX_SECONDS = 15.0  # small, so that a 16-s file is refused as too long (service and backfill alike)
TOP_K = 3
BATCH = 3  # --batch-patches: 3-patch tracks make one full batch, 2-patch ones a partial batch, longer ones both
RUN_TIMEOUT = 120  # seconds for one CLI subprocess on a loaded 2-core machine


def _wav_halved(seconds: float) -> bytes:
    data = encode_audio(sine(880, seconds, 44_100), 44_100, "wav")
    return data[: len(data) // 2]  # header announces the full length; the service decodes the prefix


GOOD = {  # analysed: a result row each (the service answers 200)
    "a/sine.wav": lambda: encode_audio(sine(440, 6.0, 44_100, channels=2), 44_100, "wav"),
    "a/chord.flac": lambda: encode_audio(chord((220, 330, 440), 8.0, 22_050), 22_050, "flac"),
    "b/noise.mp3": lambda: encode_audio(noise(12.0, 44_100, seed=1, channels=2), 44_100, "mp3"),  # 4 patches
    "b/c/sweep.ogg": lambda: encode_audio(sweep(100, 4000, 5.0, 48_000), 48_000, "ogg"),
    "short.m4a": lambda: encode_audio(sine(660, 1.5, 44_100), 44_100, "m4a"),  # one repeat-padded patch
    "truncated.wav": lambda: _wav_halved(11.0),  # cut in the middle: its first 5.5 s
    "libsndfile_only.ogg": lambda: with_padded_vorbis_setup(encode_audio(sine(550, 4.0, 44_100), 44_100, "ogg")),
}
BROKEN = {  # error rows, with the service's code for the same bytes
    "too_short.wav": (lambda: encode_audio(sine(440, 0.5, 16_000), 16_000, "wav"), "audio_too_short"),
    "too_long.opus": (lambda: encode_audio(chord((300, 500), 16.0, 48_000), 48_000, "opus"), "audio_too_long"),
    "random.mp3": (lambda: np.random.default_rng(7).bytes(20_000), "undecodable_audio"),
    "cut.flac": (lambda: encode_audio(sine(440, 3.0, 44_100), 44_100, "flac")[:200], "undecodable_audio"),
    "empty.wav": (lambda: b"", "empty_body"),
}
IGNORED = {"notes.txt": b"not audio", ".hidden/skip.wav": b"hidden"}  # not picked up by the directory walk

# Flags every run here shares (so all runs have the same output identity). --chunk-seconds 1.3: several worker
# messages per patch, boundaries nowhere near patch boundaries: the streaming patcher is exercised on every file.
COMMON = ["--model", MODEL, "--max-seconds", str(MAX_SECONDS), "--top-k", str(TOP_K), "--taggram",
          "--chunk-seconds", "1.3", "--batch-patches", str(BATCH), "--progress", "log"]  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    files = {name: make() for name, make in GOOD.items()}
    files |= {name: make() for name, (make, _) in BROKEN.items()}
    files |= IGNORED
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def run_inprocess(args: list) -> int:
    return backfill.main([str(a) for a in args])


@pytest.fixture(scope="module")
def clean_run(catalog, models_dir, tmp_path_factory) -> Path:
    """One uninterrupted, unsharded run: the reference output."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert run_inprocess([catalog, "--out", out, "--models-dir", models_dir, "--workers", 2, *COMMON]) == 0
    return out


def sorted_rows(out: Path, table: str) -> list[dict]:
    data = read_output(out, table)
    assert data is not None, f"no {table} parts in {out}"
    return data.sort_by("track_id").to_pylist()


def cli(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service", "backfill", *map(str, args)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # fmt: skip


def committed_ids(out: Path) -> set[str]:
    ids: set[str] = set()
    for table in ("results", "errors"):
        data = read_output(out, table)
        if data is not None:
            ids |= set(data.column("track_id").to_pylist())
    return ids


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the backfill exited ({process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def worker_pids(pid: int) -> list[int]:
    """The decode workers of a backfill process (its spawned children other than the resource tracker)."""
    pids = []
    for child in children_of(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(child)
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Shard assignment
# ---------------------------------------------------------------------------------------------------------------


def test_shard_assignment_is_a_stable_hash_of_the_id():
    # Pinned values: the same on every machine, Python version and PYTHONHASHSEED (BLAKE2b of the UTF-8 id).
    assert [shard_of(t, 7) for t in ("a", "track-1", "ü/ß.mp3", "")] == [2, 0, 6, 0]
    assert hashlib.blake2b(b"track-1", digest_size=8).hexdigest() and shard_of("anything", 1) == 0
    counts = np.bincount([shard_of(f"t{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # about even


# ---------------------------------------------------------------------------------------------------------------
# One clean run: rows, errors, schema
# ---------------------------------------------------------------------------------------------------------------


def test_catalog_gives_a_result_row_per_good_file_and_an_error_row_per_broken_one(clean_run, catalog, models_dir):
    results = sorted_rows(clean_run, "results")
    errors = sorted_rows(clean_run, "errors")
    assert [r["track_id"] for r in results] == sorted(GOOD)
    assert {e["track_id"]: e["code"] for e in errors} == {name: code for name, (_, code) in BROKEN.items()}
    assert all(e["message"] and e["path"] == str(catalog / e["track_id"]) for e in errors)

    manifest = json.loads((models_dir / f"{MODEL}.json").read_text())
    for row in results:
        data = (catalog / row["track_id"]).read_bytes()
        assert row["path"] == str(catalog / row["track_id"])
        assert row["audio_sha256"] == hashlib.sha256(data).hexdigest()
        assert row["model"] == MODEL and row["onnx_sha256"] == manifest["onnx"]["sha256"]
        assert row["hop_samples"] == 187 * 256
        assert len(row["tag_scores"]) == len(manifest["labels"]) and len(row["embedding"]) == 200
        assert len(row["taggram"]) == row["segments"] >= 1
        np.testing.assert_allclose(row["tag_scores"], np.mean(row["taggram"], axis=0), rtol=1e-6, atol=1e-7)
        scores = [s["score"] for s in row["top_subgenres"]]
        assert len(scores) == TOP_K and scores == sorted(scores, reverse=True)
    durations = {r["track_id"]: r["duration_seconds"] for r in results}
    assert durations["a/sine.wav"] == 6.0 and durations["short.m4a"] == pytest.approx(1.5, abs=0.1)
    assert durations["truncated.wav"] == pytest.approx(5.5, abs=0.01)
    warnings = {r["track_id"]: r["warnings"] for r in results}
    assert warnings.pop("truncated.wav") == ["audio_truncated"]  # analysed, and the row says what is missing
    assert set(map(tuple, warnings.values())) == {()}
    declared = {r["track_id"]: r["declared_duration_seconds"] for r in results}
    assert declared["truncated.wav"] == pytest.approx(11.0) and declared["a/sine.wav"] == pytest.approx(6.0)
    decoders = {r["track_id"]: r["decoder"] for r in results}
    assert decoders.pop("libsndfile_only.ogg") == "libsndfile"  # FFmpeg refuses it (tests/support/ogg_pages.py)
    assert set(decoders.values()) == {"ffmpeg"}

    schema = read_output(clean_run, "results").schema
    assert schema.field("embedding").type == pa.list_(pa.float32(), 200)
    identity = json.loads(schema.metadata[b"taggram.backfill"])
    assert identity["model"] == MODEL and identity["labels"] == manifest["labels"]
    assert json.loads((clean_run / "_backfill.json").read_text()) == identity
    assert not [p for p in clean_run.rglob(".*") if p.is_file() and ".tmp" in p.name]  # no temporaries left


def test_results_equal_what_the_service_answers_for_the_same_bytes(clean_run, catalog, models_dir):
    """Same decode, patching, model, pooling, taxonomy, top-k and error codes as the API, computed independently.

    Equal to float32 rounding: ONNX Runtime's outputs for a patch vary in the last bits with the batch it ran in,
    and the service's batches depend on timing (a batch runs when full or after TAGGRAM_MAX_BATCH_WAIT_MS). Any real
    difference (a patch boundary, the pooling, the decoder) would be orders of magnitude larger.
    """
    results = {r["track_id"]: r for r in sorted_rows(clean_run, "results")}
    errors = {e["track_id"]: e for e in sorted_rows(clean_run, "errors")}
    settings = server_settings(models_dir, max_audio_seconds=MAX_SECONDS, max_batch_patches=BATCH)
    close = {"rtol": 1e-5, "atol": 1e-6}
    with live_server(settings) as live, live.client() as http:
        for name in GOOD:
            data = (catalog / name).read_bytes()
            row = results[name]
            taggram = http.post("/taggram", content=data).json()
            embed = http.post("/embed", content=data).json()
            suggest = http.post(f"/suggest-subgenres?k={TOP_K}", content=data).json()
            assert taggram["cached"] is False and embed["cached"] is True  # computed by the service itself
            assert taggram["duration_seconds"] == row["duration_seconds"], name
            assert len(taggram["segments"]) == row["segments"], name
            np.testing.assert_allclose(
                [s["scores"] for s in taggram["segments"]], row["taggram"], **close, err_msg=name
            )
            np.testing.assert_allclose(taggram["mean"], row["tag_scores"], **close, err_msg=name)
            assert (taggram["representative"]["start_seconds"], taggram["representative"]["end_seconds"]) == (
                row["representative_start_seconds"],
                row["representative_end_seconds"],
            ), name
            np.testing.assert_allclose(embed["embedding"], row["embedding"], **close, err_msg=name)
            assert [s["subgenre"] for s in suggest["suggestions"]] == [s["subgenre"] for s in row["top_subgenres"]]
            assert [w["code"] for w in taggram["warnings"]] == row["warnings"], name
            assert taggram["decode"]["decoder"] == row["decoder"], name
            np.testing.assert_allclose(
                [s["score"] for s in suggest["suggestions"]],
                [s["score"] for s in row["top_subgenres"]],
                **close,
                err_msg=name,
            )
        for name, (_, code) in BROKEN.items():
            response = http.post("/embed", content=(catalog / name).read_bytes())
            assert response.status_code in (413, 415, 422), name
            assert response.json()["code"] == errors[name]["code"] == code, name


def test_refusing_damaged_audio_makes_truncated_files_error_rows(catalog, models_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        run_inprocess(
            [catalog, "--out", out, "--models-dir", models_dir, "--workers", 1, *COMMON, "--damaged-audio", "refuse"]
        )
        == 0
    )
    errors = {e["track_id"]: e for e in sorted_rows(out, "errors")}
    assert errors["truncated.wav"]["code"] == "damaged_audio"
    assert "11.0 s" in errors["truncated.wav"]["message"]  # says what the file declares
    assert "truncated.wav" not in {r["track_id"] for r in sorted_rows(out, "results")}
    assert json.loads((out / "_backfill.json").read_text())["damaged_audio"] == "refuse"


# ---------------------------------------------------------------------------------------------------------------
# Resumability, sharding, signals, crashes
# ---------------------------------------------------------------------------------------------------------------


def test_killed_run_resumes_to_exactly_the_clean_output(clean_run, catalog, models_dir, tmp_path):
    out = tmp_path / "out"
    args = [catalog, "--out", out, "--models-dir", models_dir, "--workers", 1, "--tracks-per-part", 1, *COMMON]
    first = cli(*args)
    try:
        wait_for(lambda: read_output(out, "results") is not None, RUN_TIMEOUT, "a committed results part", first)
        workers = worker_pids(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    done_before = committed_ids(out)  # every committed part is complete and readable
    total = len(GOOD) + len(BROKEN)
    assert 0 < len(done_before) < total, "the kill must land mid-run for this test to mean anything"
    assert workers, "the run had decode workers"
    wait_for(lambda: not any(alive(p) for p in workers), 15, "the orphaned decode workers to exit")

    second = cli(*args)
    stdout, stderr = second.communicate(timeout=RUN_TIMEOUT)
    assert second.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["already_done"] == len(done_before)
    assert summary["analysed"] + summary["errors"] == total - len(done_before)
    assert sorted_rows(out, "results") == sorted_rows(clean_run, "results")
    assert sorted_rows(out, "errors") == sorted_rows(clean_run, "errors")

    third = cli(*args)  # a finished output: nothing left to do
    stdout, _ = third.communicate(timeout=RUN_TIMEOUT)
    assert third.returncode == 0 and json.loads(stdout.strip().splitlines()[-1])["already_done"] == total


def test_two_shards_together_equal_one_unsharded_run(clean_run, catalog, models_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [catalog, "--out", out, "--models-dir", models_dir, "--workers", 1, *COMMON]
    assert run_inprocess([*args, "--shard-index", 0, "--shard-count", 2]) == 0
    # The second shard takes its index and count from the environment, as in the Kubernetes Indexed Job.
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("TAGGRAM_BACKFILL_SHARD_COUNT", "2")
    assert run_inprocess(args) == 0
    for table in ("results", "errors"):
        parts = sorted(p.name for p in (out / table).glob("part-*.parquet"))
        shards = {name.split("-")[2] for name in parts}
        assert shards <= {"i0000", "i0001"}
        for part in (out / table).glob("part-*.parquet"):
            index = int(part.name.split("-")[2][1:])
            ids = read_output_single(part)
            assert all(shard_of(i, 2) == index for i in ids)
    assert sorted_rows(out, "results") == sorted_rows(clean_run, "results")
    assert sorted_rows(out, "errors") == sorted_rows(clean_run, "errors")


def test_the_numbers_do_not_depend_on_how_many_batches_run_at_once(catalog, models_dir, tmp_path):
    """Each batch is one track's and each run single-threaded: three inference threads write one thread's bits."""
    outputs = {}
    for workers in (1, 3):
        outputs[workers] = tmp_path / f"out-{workers}"
        assert (
            run_inprocess(
                [
                    catalog,
                    "--out",
                    outputs[workers],
                    "--models-dir",
                    models_dir,
                    "--workers",
                    2,
                    "--inference-workers",
                    workers,
                    "--intra-op-threads",
                    1,
                    *COMMON,
                ]
            )
            == 0
        )
    assert sorted_rows(outputs[3], "results") == sorted_rows(outputs[1], "results")


def read_output_single(part: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(part, columns=["track_id"]).column(0).to_pylist()


def long_and_short_catalog(root: Path, long_first: bool, long_seconds: float = 150.0) -> Path:
    """Three 4-s tracks and one long track (150 s: 50 patches, about a second of inference or more, during which its
    decoder holds it)."""
    root.mkdir()
    long_name = "0-long.wav" if long_first else "9-long.wav"
    (root / long_name).write_bytes(encode_audio(noise(long_seconds, 16_000, seed=3), 16_000, "wav"))
    for i in range(1, 4):
        (root / f"{i}-short.wav").write_bytes(encode_audio(sine(200 * i, 4.0, 16_000), 16_000, "wav"))
    return root


def test_sigterm_commits_the_finished_tracks_and_exits_143(models_dir, tmp_path):
    catalog = long_and_short_catalog(tmp_path / "catalog", long_first=False)
    out = tmp_path / "out"
    # Nothing would be committed before the end with these part settings: only the stop commits.
    process = cli(
        catalog,
        "--out",
        out,
        "--models-dir",
        models_dir,
        "--workers",
        1,
        "--tracks-per-part",
        1000,
        "--part-seconds",
        1000,
        "--chunk-seconds",
        5,
        "--progress",
        "log",
        "--progress-seconds",
        0.01,
    )
    try:
        for line in process.stderr:  # progress lines: "backfill:  75%|...| 3/4 [..."
            if " 3/4 [" in line:
                break
        else:
            pytest.fail("the run ended without reporting 3 finished tracks")
        assert read_output(out, "results") is None
        process.send_signal(signal.SIGTERM)  # while the long track is being analysed
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted_by"] == "SIGTERM" and summary["analysed"] == 3 and summary["remaining"] == 1
    assert committed_ids(out) == {"1-short.wav", "2-short.wav", "3-short.wav"}


def test_a_dying_decoder_costs_its_track_only(models_dir, tmp_path):
    # Sorted walk: the long file goes to the only worker first; the worker then blocks sending its chunks while
    # the parent runs the model on them. Killed during that time, it dies holding the track: 600 s (200 patches)
    # keep it busy for seconds even on a fast machine with every core inferring.
    catalog = long_and_short_catalog(tmp_path / "catalog", long_first=True, long_seconds=600.0)
    out = tmp_path / "out"
    process = cli(catalog, "--out", out, "--models-dir", models_dir, "--workers", 1, "--chunk-seconds", 5,
                  "--progress", "log")  # fmt: skip
    try:
        wait_for(lambda: worker_pids(process.pid), RUN_TIMEOUT, "the decode worker", process)
        (worker,) = worker_pids(process.pid)
        time.sleep(1.0)
        os.kill(worker, signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    errors = sorted_rows(out, "errors")
    assert [(e["track_id"], e["code"]) for e in errors] == [("0-long.wav", "decoder_crashed")]
    # A new worker took over the rest.
    assert [r["track_id"] for r in sorted_rows(out, "results")] == ["1-short.wav", "2-short.wav", "3-short.wav"]


# ---------------------------------------------------------------------------------------------------------------
# Cache warming, manifests, usage errors, the Kubernetes Job
# ---------------------------------------------------------------------------------------------------------------


def test_warm_cache_makes_the_same_bytes_a_hit_in_the_service(catalog, models_dir, redis_url, tmp_path):
    # A JSONL manifest this time: ids are free text, relative paths are relative to the manifest.
    picked = {"track-sine": "a/sine.wav", "track-short": "short.m4a", "track-random": "random.mp3"}
    manifest = catalog / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"track_id": i, "path": p}) + "\n" for i, p in picked.items()))
    out = tmp_path / "out"
    args = [manifest, "--out", out, "--models-dir", models_dir, "--model", MODEL, "--warm-cache", "--redis-url",
            redis_url, "--batch-patches", 2, "--progress", "log"]  # fmt: skip
    assert run_inprocess(args) == 0
    rows = {r["track_id"]: r for r in sorted_rows(out, "results")}
    assert set(rows) == {"track-sine", "track-short"}
    assert [e["track_id"] for e in sorted_rows(out, "errors")] == ["track-random"]

    manifest_json = json.loads((models_dir / f"{MODEL}.json").read_text())
    client = redis.Redis.from_url(redis_url)
    try:
        for row in rows.values():
            key = cache_key(row["audio_sha256"], MODEL, manifest_json["onnx"]["sha256"], 187 * 256, precision="fp32")
            assert client.exists(key), key
    finally:
        client.close()
    with live_server(server_settings(models_dir, redis_url=redis_url)) as live, live.client() as http:
        for track_id, row in rows.items():
            data = (catalog / picked[track_id]).read_bytes()
            embed = http.post("/embed", content=data).json()
            assert embed["cached"] is True, track_id
            np.testing.assert_array_equal(np.array(embed["embedding"], np.float32), row["embedding"])
            suggest = http.post("/suggest-subgenres", content=data).json()
            assert suggest["cached"] is True
            assert [s["subgenre"] for s in suggest["suggestions"][:5]] == [s["subgenre"] for s in row["top_subgenres"]]


def test_csv_manifest_missing_files_and_duplicate_ids(catalog, models_dir, tmp_path):
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(f"track_id,path\nx1,{catalog / 'a/sine.wav'}\nx2,does/not/exist.mp3\n")
    out = tmp_path / "out"
    args = ["--out", out, "--models-dir", models_dir, "--batch-patches", 2, "--progress", "log"]
    assert run_inprocess([manifest, *args]) == 0
    assert [r["track_id"] for r in sorted_rows(out, "results")] == ["x1"]
    (error,) = sorted_rows(out, "errors")
    assert error["track_id"] == "x2" and error["code"] == "unreadable_file"
    assert error["path"] == str(tmp_path / "does/not/exist.mp3")

    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("track_id,path\nx1,a.wav\nx1,b.wav\n")
    assert run_inprocess([duplicated, "--out", tmp_path / "out2", *args[2:]]) == 2


def test_failures_of_the_run_itself_exit_2(catalog, models_dir, clean_run, tmp_path):
    base = ["--models-dir", models_dir, "--progress", "log"]
    assert run_inprocess([catalog, "--out", tmp_path / "o1", "--model", "no-such-model", *base]) == 2
    assert run_inprocess([tmp_path / "missing", "--out", tmp_path / "o2", *base]) == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert run_inprocess([catalog, "--out", blocker / "out", *base]) == 2  # output cannot be created
    # Resuming into an output started with other settings would mix two analyses: refused.
    other_k = ["--max-seconds", str(MAX_SECONDS), "--taggram", "--top-k", str(TOP_K + 1)]
    assert run_inprocess([catalog, "--out", clean_run, *base, *other_k]) == 2
    for bad in (["--shard-index", "2", "--shard-count", "2"], ["--warm-cache", "--redis-url", ""], ["--hop", "0.1"]):
        with pytest.raises(SystemExit) as exit_info:
            run_inprocess([catalog, "--out", tmp_path / "o3", *base, *bad])
        assert exit_info.value.code == 2, bad


@pytest.mark.parametrize(
    "argument, accepted, refused",
    [
        ("--hop", ["0.5", "30"], ["0.49", "30.01", "nan", "abc"]),
        ("--top-k", ["1", "50"], ["0", "51", "2.5"]),
    ],
)
def test_hop_and_top_k_take_exactly_the_apis_ranges(argument, accepted, refused, capsys):
    from service.offline.backfill.cli import parse_options

    for value in accepted:
        options = parse_options(["catalog", "--out", "out", argument, value])
        assert float(options.hop_seconds if argument == "--hop" else options.top_k) == float(value)
    for value in refused:
        with pytest.raises(SystemExit) as exit_info:
            parse_options(["catalog", "--out", "out", argument, value])
        assert exit_info.value.code == 2, value
        error = capsys.readouterr().err
        assert f"argument {argument}: " in error and "(as the API)" in error, error


def test_taggram_cli_has_the_backfill_subcommand():
    done = subprocess.run([sys.executable, "-m", "service", "backfill", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--shard-index" in done.stdout and "--warm-cache" in done.stdout


def test_kubernetes_job_is_an_indexed_job_running_taggram_backfill():
    import kubernetes_validate

    documents = list(yaml.safe_load_all((REPO_ROOT / "k8s/backfill-job.yaml").read_text()))
    for document in documents:  # offline, against the OpenAPI schemas of the oldest Kubernetes targeted
        kubernetes_validate.validate(document, "1.33.0", strict=True)
    (job,) = [d for d in documents if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["taggram", "backfill"]
    build_parser(Settings()).parse_args(command[2:])  # every flag the Job passes is one the command takes
    assert command[command.index("--shard-count") + 1] == str(spec["completions"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert any("persistentVolumeClaim" in v for v in volumes.values())


def test_a_decode_worker_imports_no_inference_output_or_web_stack():
    """Spawned decode workers import service.offline.backfill.workers: by structure, it loads no pyarrow, ONNX Runtime,
    FastAPI, Redis or tqdm (each worker would pay their import time and memory)."""
    heavy = ("pyarrow", "onnxruntime", "fastapi", "redis", "tqdm", "starlette")
    code = (
        "import sys, service.offline.backfill.workers; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_walked_extensions_are_those_of_the_decoders_demuxers():
    from service.decode import ALLOWED_DEMUXERS
    from service.offline.backfill.catalog import AUDIO_EXTENSIONS, EXTENSIONS_BY_DEMUXER

    assert set(EXTENSIONS_BY_DEMUXER) == set(ALLOWED_DEMUXERS)
    assert AUDIO_EXTENSIONS and all(ext.startswith(".") and ext == ext.lower() for ext in AUDIO_EXTENSIONS)
