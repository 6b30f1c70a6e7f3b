"""The catalog over real HTTP (issue #23): `GET /catalog/map`, an upload's `position` from `POST /similar`,
`GET /artists/{artist_id}`, `/taggram`'s `representative`, and the map swapped with its index under load.

The catalog is test_similar.py's: 10-s clips of the three lincity-ng-data tracks, three per track, tagged by the
real `taggram backfill` and indexed by the real `taggram index build --artists`.
"""

from __future__ import annotations

import gzip
import json
import shutil
import threading

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.artefacts.manifest import load_manifest
from service.artefacts.similar import artefact
from service.offline.backfill.output import RUN_FILE
from service.offline.catalog_build import BACKFILL_METADATA
from tests.integration.test_similar import (  # noqa: F401
    MODEL,
    backfill_out,
    index_cli,
    index_dir,
    metric_value,
    music_catalog,
    problem,
    server,
    wait_until,
)
from tests.support.serve_process import ServeProcess


def compact(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.taggram.map+json")
    return response.json()  # httpx undoes the Content-Encoding


def test_the_map_lists_every_indexed_track_at_its_stored_position(server, index_dir, models_dir):
    manifest = artefact.read_manifest(index_dir / f"{MODEL}.json")
    stored = pq.read_table(index_dir / manifest.map.file)
    tracks = pq.read_table(index_dir / manifest.files.tracks)
    points = httpx.get(f"{server.url}/catalog/map", headers={"Accept": "application/json"}).json()["points"]
    assert [p["track_id"] for p in points] == tracks.column("track_id").to_pylist()
    assert [p["artist_id"] for p in points] == tracks.column("artist_id").to_pylist()
    np.testing.assert_allclose(
        [[p["x"], p["y"]] for p in points],
        np.stack([stored.column("x").to_numpy(), stored.column("y").to_numpy()], 1),
        atol=1e-4,
    )
    labels = load_manifest(models_dir / f"{MODEL}.json").labels
    assert [p["label"] for p in points] == stored.column("label").to_pylist() and points[0]["label"] in labels


def test_the_compact_map_is_the_same_points_in_columns(server):
    response = httpx.get(f"{server.url}/catalog/map", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    body = compact(response)
    plain = compact(httpx.get(f"{server.url}/catalog/map", headers={"Accept-Encoding": "identity"}))
    assert body == plain and len(response.content) < len(gzip.compress(json.dumps(plain).encode())) * 2
    points = httpx.get(f"{server.url}/catalog/map", headers={"Accept": "application/json"}).json()["points"]
    assert body["count"] == len(points) == len(body["track_ids"]) == len(body["x"]) == len(body["label"])
    for i, p in enumerate(points):
        assert (body["track_ids"][i], body["x"][i], body["y"][i]) == (p["track_id"], p["x"], p["y"])
        assert (body["artists"][body["artist"][i]] if body["artist"][i] >= 0 else None) == p["artist_id"]
        assert body["labels"][body["label"][i]] == p["label"]


def test_the_map_carries_each_tracks_representative_window_from_the_backfill(server, backfill_out):
    results = pq.read_table(sorted((backfill_out / "results").glob("part-*.parquet"))[0])
    # the bodies round to milliseconds: within half of one of the backfill's seconds (and a float's error)
    written = {
        t: {"start_seconds": pytest.approx(s, abs=6e-4), "end_seconds": pytest.approx(e, abs=6e-4)}
        for t, s, e in zip(
            results.column("track_id").to_pylist(),
            results.column("representative_start_seconds").to_pylist(),
            results.column("representative_end_seconds").to_pylist(),
        )
    }
    points = httpx.get(f"{server.url}/catalog/map", headers={"Accept": "application/json"}).json()
    assert points["audio_url_template"] is None  # TAGGRAM_CATALOG_AUDIO_URL unset
    assert {p["track_id"]: p["representative"] for p in points["points"]} == written
    body = compact(httpx.get(f"{server.url}/catalog/map"))
    assert body["audio_url_template"] is None
    columns = body["representative"]
    assert {
        t: {"start_seconds": s, "end_seconds": e}
        for t, s, e in zip(body["track_ids"], columns["start_seconds"], columns["end_seconds"])
    } == written


def test_the_audio_url_template_reaches_the_map_and_the_pages_policy(index_dir, models_dir, tmp_path):
    template = "https://cdn.example.com/catalog/{track_id}.ogg"
    with ServeProcess(
        models_dir, tmp_path / "logs", TAGGRAM_INDEX_DIR=str(index_dir), TAGGRAM_CATALOG_AUDIO_URL=template
    ) as proc:
        proc.wait_ready()
        points = httpx.get(f"{proc.url}/catalog/map", headers={"Accept": "application/json"}).json()
        body = compact(httpx.get(f"{proc.url}/catalog/map"))
        page_policy = httpx.get(f"{proc.url}/").headers["content-security-policy"]
        docs_policy = httpx.get(f"{proc.url}/docs").headers["content-security-policy"]
    assert points["audio_url_template"] == body["audio_url_template"] == template
    assert "media-src 'self' blob: https://cdn.example.com;" in page_policy
    assert "cdn.example.com" not in docs_policy  # the API description pages play nothing: not widened


def test_an_upload_of_a_catalog_track_lands_on_its_own_position(server, music_catalog):
    _, clips = music_catalog
    points = {
        p["track_id"]: p
        for p in httpx.get(f"{server.url}/catalog/map", headers={"Accept": "application/json"}).json()["points"]
    }
    data = (clips / "02_at-60s.ogg").read_bytes()
    answer = httpx.post(f"{server.url}/similar", content=data, headers={"Content-Type": "audio/ogg"}, timeout=60).json()
    assert answer["neighbours"][0]["track_id"] == "02/at-60s"
    own = points["02/at-60s"]
    assert answer["position"] == pytest.approx({"x": own["x"], "y": own["y"]}, abs=1e-3)


def test_an_artist_is_a_lookup_of_its_pooled_tracks(server, backfill_out, music_catalog, index_dir):
    manifest = artefact.read_manifest(index_dir / f"{MODEL}.json")
    body = httpx.get(f"{server.url}/artists/Robert van Herk").json()
    assert sorted(t["track_id"] for t in body["tracks"]) == sorted(
        f"{n}/at-{o}s" for n in ("02", "03") for o in (20, 60, 100)
    )
    assert body["taxonomy"] == manifest.artists.taxonomy
    scores = [s["score"] for s in body["subgenres"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(manifest.artists.subgenres)
    assert body["nearest_artists"] == [
        {"artist_id": "pronobozo", "score": pytest.approx(body["nearest_artists"][0]["score"])}
    ]
    problem(httpx.get(f"{server.url}/artists/nobody"), 404, "unknown_artist")
    problem(httpx.get(f"{server.url}/artists/pronobozo", params={"model": "mtt-musicnn"}), 503, "no_index")


def test_taggram_returns_the_representative_window(server, music_catalog):
    _, clips = music_catalog
    body = httpx.post(
        f"{server.url}/taggram",
        content=(clips / "01_at-20s.ogg").read_bytes(),
        headers={"Content-Type": "audio/ogg"},
        timeout=60,
    ).json()
    window = body["representative"]
    assert 0.0 <= window["start_seconds"] < window["end_seconds"] <= body["duration_seconds"]
    assert window == {"start_seconds": 0.0, "end_seconds": body["duration_seconds"]}  # a 10-s clip: all of it


def write_other_generation(out, backfill) -> list[str]:
    """A backfill-like output with other track ids (the same vectors, reversed): what a rebuild brings."""
    table = pq.read_table(sorted((backfill / "results").glob("part-*.parquet"))[0])
    ids = [f"other-{t}" for t in table.column("track_id").to_pylist()]
    other = table.set_column(table.column_names.index("track_id"), "track_id", pa.array(ids, pa.string()))
    other = other.replace_schema_metadata({BACKFILL_METADATA: table.schema.metadata[BACKFILL_METADATA]})
    (out / "results").mkdir(parents=True)
    shutil.copy(backfill / RUN_FILE, out / RUN_FILE)  # the run's identity (its precision), as the backfill writes it
    pq.write_table(other, out / "results" / "part-n0001-i0000-000000.parquet")
    return ids


def test_the_map_swaps_with_its_index_under_concurrent_requests(backfill_out, music_catalog, models_dir, tmp_path):
    index_dir = tmp_path / "index"
    assert index_cli("build", backfill_out, "--output", index_dir, "--artists", music_catalog[0]).returncode == 0
    first_ids = (
        pq.read_table(sorted((backfill_out / "results").glob("part-*.parquet"))[0]).column("track_id").to_pylist()
    )
    second_ids = write_other_generation(tmp_path / "other", backfill_out)
    seen, errors, stop = [], [], threading.Event()
    with ServeProcess(
        models_dir, tmp_path / "logs", TAGGRAM_INDEX_DIR=str(index_dir), TAGGRAM_INDEX_POLL_SECONDS="0.2"
    ) as proc:
        proc.wait_ready()

        def read_map() -> None:
            with httpx.Client(base_url=proc.url, timeout=30) as http:
                while not stop.is_set():
                    r = http.get("/catalog/map")
                    body = r.json()
                    if r.status_code != 200 or not (body["count"] == len(body["track_ids"]) == len(body["x"])):
                        errors.append(r.text[:200])
                    seen.append(frozenset(body.get("track_ids", ())))

        threads = [threading.Thread(target=read_map) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            assert index_cli("build", tmp_path / "other", "--output", index_dir).returncode == 0
            wait_until(
                lambda: metric_value(proc.url, "taggram_index_reloads_total", model=MODEL, result="ok") >= 1,
                30,
                "the reload",
            )
            wait_until(lambda: seen and seen[-1] == frozenset(second_ids), 30, "the new map")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == [] and set(seen) == {frozenset(first_ids), frozenset(second_ids)}  # never a mix
        neighbours = httpx.get(f"{proc.url}/similar/{second_ids[0]}").json()["neighbours"]
        assert {n["track_id"] for n in neighbours} <= set(second_ids)
