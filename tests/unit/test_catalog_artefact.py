"""The catalog map and the pooled artists of an index generation (issue #23), on constructed backfill outputs:
the projection, the artists' pooled scores and nearest artists by construction, the files and their checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.artefacts.similar import artefact
from service.artefacts.similar.artists import NEAREST_ARTISTS, pool
from service.artefacts.similar.catalog import WINDOW_COLUMNS
from service.artefacts.similar.projection import PROJECTIONS, Projection, fit, place_by_neighbours
from service.artefacts.similar.serving import load_index
from service.offline import index_build as build
from service.offline.backfill.output import OUTPUT_FORMAT, RUN_FILE
from service.offline.catalog_build import CatalogInputError

MODEL = "msd-musicnn"
ONNX = "0" * 64
DIM = 200
LABELS = ["rock", "jazz", "ambient", "techno"]
TAXONOMY = {"name": "test", "subgenres": {"Rock": ["rock"], "Jazz": ["jazz"], "Electronic": ["ambient", "techno"]}}


def write_backfill(
    out: Path,
    vectors: np.ndarray,
    scores: np.ndarray,
    artists: list[str | None],
    windows: np.ndarray | None = None,
) -> None:
    """The columns and metadata `index build` reads, as the backfill writes them; ``windows`` (float64 [n, 2]
    representative start/end seconds, NaN: null) or None for an output of a format before the columns."""
    (out / "results").mkdir(parents=True)
    (out / RUN_FILE).write_text(json.dumps({"format": OUTPUT_FORMAT, "model": MODEL, "onnx_sha256": ONNX}))
    n = len(vectors)
    columns = {
        "track_id": [f"t{i}" for i in range(n)],
        "model": [MODEL] * n,
        "onnx_sha256": [ONNX] * n,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), DIM),
        "tag_scores": pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1), pa.float32()), len(LABELS)),
        "artist_id": pa.array(artists, pa.string()),
    }
    if windows is not None:
        for i, name in enumerate(WINDOW_COLUMNS):
            columns[name] = pa.array(windows[:, i], pa.float64(), mask=np.isnan(windows[:, i]))
    table = pa.table(columns)
    table = table.replace_schema_metadata({b"taggram.backfill": json.dumps({"labels": LABELS}).encode()})
    pq.write_table(table, out / "results" / "part-n0001-i0000-000000.parquet")


@pytest.fixture
def taxonomy_dir(tmp_path) -> Path:
    folder = tmp_path / "taxonomies"
    folder.mkdir()
    (folder / f"{MODEL}.json").write_text(json.dumps(TAXONOMY))
    return folder


def models() -> dict:
    manifest = SimpleNamespace(onnx=SimpleNamespace(sha256=ONNX), embedding_dim=DIM)
    return {MODEL: SimpleNamespace(manifest=manifest, runner=SimpleNamespace(precision="fp32"))}


def catalog(seed: int = 0, n: int = 90) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32) + 3.0
    scores = rng.random((n, len(LABELS))).astype(np.float32)
    artists = [f"artist-{i % 6}" if i % 10 else None for i in range(n)]  # every tenth track has no artist
    return vectors, scores, artists


# ---- the projection ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", PROJECTIONS)
def test_a_catalog_vector_is_placed_at_its_stored_position(tmp_path, taxonomy_dir, method):
    vectors, scores, artists = catalog(n=150)  # t-SNE needs more than 3 × its perplexity
    write_backfill(tmp_path / "bf", vectors, scores, artists)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", projection=method, taxonomy_dir=taxonomy_dir)
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    assert index.catalog_map.projection.method == method and len(index.catalog_map.positions) == manifest.count
    for row in range(manifest.count):
        assert index.position(index.searcher.vector(row)) == pytest.approx(
            tuple(index.catalog_map.positions[row]), abs=1e-5
        )
    # an upload's raw embedding goes through the index's normalisation, then the same projection
    raw = vectors[7] * 1.0
    np.testing.assert_allclose(index.position(index.query_vector(raw)), index.catalog_map.positions[7], atol=1e-5)


def test_pca_keeps_the_two_directions_of_largest_variance():
    rng = np.random.default_rng(4)
    spread = np.ones(DIM)
    spread[[17, 42]] = [10.0, 5.0]  # the two widest dimensions, widest first
    vectors = rng.standard_normal((2000, DIM)) * spread
    projection = fit(vectors, "pca")
    np.testing.assert_allclose(projection.components @ projection.components.T, np.eye(2), atol=1e-9)
    assert np.argmax(np.abs(projection.components[0])) == 17 and np.argmax(np.abs(projection.components[1])) == 42
    positions = projection.place(vectors)
    assert positions[:, 0].var() > positions[:, 1].var() > 1.0


def test_standardised_pca_ignores_each_dimensions_scale():
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((500, DIM)) @ rng.standard_normal((DIM, DIM)) * 0.1
    rescaled = vectors * rng.uniform(0.1, 10.0, DIM)
    a, b = fit(vectors, "standardised-pca").place(vectors), fit(rescaled, "standardised-pca").place(rescaled)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert not np.allclose(fit(vectors, "pca").place(vectors), fit(rescaled, "pca").place(rescaled), atol=1e-3)


def test_the_fit_is_deterministic_and_round_trips_through_the_manifest():
    vectors = np.random.default_rng(6).standard_normal((300, DIM))
    first, second = fit(vectors, "pca"), fit(vectors.copy(), "pca")
    np.testing.assert_array_equal(first.components, second.components)
    restored = Projection.from_json(json.loads(json.dumps(first.as_json())), DIM)
    np.testing.assert_array_equal(restored.place(vectors), first.place(vectors))
    with pytest.raises(ValueError, match="do not fit dim"):
        Projection.from_json(first.as_json(), DIM + 1)
    with pytest.raises(ValueError, match="unknown projection"):
        Projection.from_json({**first.as_json(), "method": "tsne"}, DIM)


# ---- artists -----------------------------------------------------------------------------------------------------


def test_pooled_subgenre_scores_are_the_mean_and_spread_of_the_artists_tracks(tmp_path, taxonomy_dir):
    vectors, scores, artists = catalog()
    write_backfill(tmp_path / "bf", vectors, scores, artists)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    assert manifest.artists.subgenres == ["Rock", "Jazz", "Electronic"] and manifest.artists.count == 6
    # the taxonomy's rule: a subgenre scores the highest of its tags
    per_track = np.stack([scores[:, 0], scores[:, 1], scores[:, 2:].max(axis=1)], axis=1).astype(np.float64)
    for artist in {a for a in artists if a}:
        rows = [i for i, a in enumerate(artists) if a == artist]
        entry = index.artist_table.entry(artist)
        assert entry.rows == rows
        expected_mean, expected_std = per_track[rows].mean(axis=0), per_track[rows].std(axis=0)
        by_name = {name: (mean, std) for name, mean, std in entry.subgenres}
        for j, name in enumerate(manifest.artists.subgenres):
            assert by_name[name] == pytest.approx((expected_mean[j], expected_std[j]), abs=1e-6)
        means = [mean for _, mean, _ in entry.subgenres]
        assert means == sorted(means, reverse=True)  # ranked
    assert index.artist_table.entry("nobody") is None


def test_nearest_artists_by_construction():
    rng = np.random.default_rng(7)
    # three pairs of artists: within a pair the tracks scatter around one direction, pairs are far apart
    directions = np.linalg.qr(rng.standard_normal((DIM, 3)))[0].T
    vectors, artist_of_row = [], []
    for pair in range(3):
        for member in range(2):
            for _ in range(4):
                vectors.append(directions[pair] + 0.05 * rng.standard_normal(DIM))
                artist_of_row.append(f"p{pair}-m{member}")
    vectors = np.asarray(vectors, np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pooled = pool(artist_of_row, vectors, np.zeros((len(vectors), 0), np.float32))
    assert pooled.nearest.shape == (6, min(NEAREST_ARTISTS, 5))
    for i, artist in enumerate(pooled.artist_ids):
        nearest = [pooled.artist_ids[j] for j in pooled.nearest[i]]
        assert artist not in nearest  # itself excluded
        partner = artist.replace("m0", "m1") if artist.endswith("m0") else artist.replace("m1", "m0")
        assert nearest[0] == partner and pooled.nearest_score[i, 0] > 0.8  # same direction, independent noise
        assert np.all(np.abs(pooled.nearest_score[i, 1:]) < 0.3)  # the other pairs: orthogonal directions
        assert np.all(np.diff(pooled.nearest_score[i]) <= 0)  # best first
        mean = vectors[[r for r, a in enumerate(artist_of_row) if a == artist]].mean(axis=0)
        np.testing.assert_allclose(pooled.vectors[i], mean / np.linalg.norm(mean), atol=1e-6)


def test_a_lone_artist_has_no_nearest_artists():
    pooled = pool(["solo", "solo", None], np.eye(3, DIM, dtype=np.float32), np.zeros((3, 1), np.float32))
    assert pooled.artist_ids == ["solo"] and pooled.nearest.shape == (1, 0)


# ---- the files: checked, swapped and removed with the index ----------------------------------------------------


def test_a_corrupt_map_or_artists_file_refuses_the_generation(tmp_path, taxonomy_dir):
    vectors, scores, artists = catalog()
    write_backfill(tmp_path / "bf", vectors, scores, artists)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    for name in (manifest.map.file, manifest.artists.file):
        path = tmp_path / "ix" / name
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(artefact.IndexFileError, match="corrupt or replaced"):
            load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
        path.write_bytes(original)


def test_rebuilds_keep_the_previous_generations_map_and_artists_and_remove_older_ones(tmp_path, taxonomy_dir):
    generations = []
    for seed in range(3):
        vectors, scores, artists = catalog(seed)
        write_backfill(tmp_path / f"bf{seed}", vectors, scores, artists)
        generations.append(build.build(tmp_path / f"bf{seed}", tmp_path / "ix", taxonomy_dir=taxonomy_dir))
    present = {p.name for p in (tmp_path / "ix").iterdir()}
    for old in generations[:1]:
        assert old.map.file not in present and old.artists.file not in present
    for kept in generations[1:]:
        assert {kept.map.file, kept.artists.file} <= present


def test_an_output_without_tag_scores_or_artists_still_gets_a_map(tmp_path):
    vectors, scores, _ = catalog()
    write_backfill(tmp_path / "bf", vectors, scores, [None] * len(vectors))
    manifest = build.build(tmp_path / "bf", tmp_path / "ix")
    assert manifest.artists is None and manifest.map is not None
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    assert index.artist_table is None
    assert index.catalog_map.labels[0] == LABELS[int(np.argmax(scores[0]))]


def test_a_new_point_is_placed_among_its_nearest_catalog_tracks():
    positions = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [5.0, 5.0]], np.float32)
    # weighted by cosine: twice as close to track 1 as to track 2
    np.testing.assert_allclose(place_by_neighbours(positions, [1, 2], [0.6, 0.3]), [20 / 3, 10 / 3], atol=1e-5)
    # negative scores weigh nothing
    np.testing.assert_allclose(place_by_neighbours(positions, [1, 2, 0], [0.5, 0.5, -0.4]), [5.0, 5.0], atol=1e-6)
    # the point itself (a catalog track's own vector): exactly its position
    np.testing.assert_array_equal(place_by_neighbours(positions, [3, 1], [1.0, 0.9]), positions[3])
    # nothing alike: at the best neighbour
    np.testing.assert_array_equal(place_by_neighbours(positions, [2, 1], [-0.1, -0.2]), positions[2])


# ---- the representative windows: from the backfill's columns into the map --------------------------------------


def track_windows(n: int) -> np.ndarray:
    start = np.arange(n, dtype=np.float64) * 2.99
    return np.stack([start, start + 30.08], axis=1)


def test_each_tracks_representative_window_is_carried_into_the_map(tmp_path, taxonomy_dir):
    vectors, scores, artists = catalog()
    windows = track_windows(len(vectors))
    windows[5] = np.nan  # a row without a window: null in the columns, NaN in the map
    write_backfill(tmp_path / "bf", vectors, scores, artists, windows)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    assert manifest.map.representative is True
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    np.testing.assert_array_equal(index.catalog_map.windows, windows)
    stored = pq.read_table(tmp_path / "ix" / manifest.map.file)
    assert stored.column(WINDOW_COLUMNS[0]).null_count == 1


def test_an_output_without_the_columns_gives_a_map_without_windows(tmp_path, taxonomy_dir):
    vectors, scores, artists = catalog()
    write_backfill(tmp_path / "bf", vectors, scores, artists, windows=None)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    assert manifest.map.representative is False
    assert load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models()).catalog_map.windows is None


@pytest.mark.parametrize("bad", [(-1.0, 29.0), (40.0, 40.0), (40.0, 10.0), (np.inf, np.inf), (3.0, np.nan)])
def test_a_window_that_is_not_one_refuses_the_build_before_anything_is_written(tmp_path, taxonomy_dir, bad):
    vectors, scores, artists = catalog()
    windows = track_windows(len(vectors))
    windows[7] = bad
    write_backfill(tmp_path / "bf", vectors, scores, artists, windows)
    with pytest.raises(CatalogInputError, match="track 't7': representative window"):
        build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    assert not (tmp_path / "ix").exists()


def test_a_map_whose_windows_do_not_hold_refuses_the_generation(tmp_path, taxonomy_dir):
    """A map file that passes its checksum (rewritten with the manifest updated) but whose windows are missing or
    broken: the generation is refused, as any unreadable map."""
    vectors, scores, artists = catalog()
    write_backfill(tmp_path / "bf", vectors, scores, artists, track_windows(len(vectors)))
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    path = tmp_path / "ix" / manifest.map.file
    original = pq.read_table(path)
    broken_end = original.column(WINDOW_COLUMNS[1]).to_numpy().copy()
    broken_end[3] = -1.0
    for table, says in (
        (original.drop_columns(list(WINDOW_COLUMNS)), "cannot be read"),
        (
            original.set_column(
                original.schema.get_field_index(WINDOW_COLUMNS[1]), WINDOW_COLUMNS[1], pa.array(broken_end)
            ),
            "row 3 has no valid representative window",
        ),
    ):
        pq.write_table(table, path)
        document = json.loads(artefact.manifest_path(tmp_path / "ix", MODEL).read_text())
        document["map"]["sha256"] = build.sha256_file(path)
        artefact.manifest_path(tmp_path / "ix", MODEL).write_text(json.dumps(document))
        with pytest.raises(artefact.IndexFileError, match=says):
            load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())


def test_the_map_bodies_carry_the_windows_and_the_template(tmp_path, taxonomy_dir):
    from service.api.catalog_payload import compact_document, points_document

    vectors, scores, artists = catalog(n=12)
    windows = track_windows(12) + 0.00049  # rounded to milliseconds in the bodies
    windows[2] = np.nan
    write_backfill(tmp_path / "bf", vectors, scores, artists, windows)
    build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    template = "https://cdn.example.com/{track_id}.mp3"
    compact, points = compact_document(MODEL, index, template), points_document(MODEL, index, template)
    assert compact["audio_url_template"] == points["audio_url_template"] == template
    expected = [None if np.isnan(s) else [round(s, 3), round(e, 3)] for s, e in windows.tolist()]
    got = [None if s is None else [s, e] for s, e in zip(*compact["representative"].values())]
    assert got == expected and list(compact["representative"]) == ["start_seconds", "end_seconds"]
    assert [p["representative"] for p in points["points"]] == [
        None if w is None else {"start_seconds": w[0], "end_seconds": w[1]} for w in expected
    ]
    # An index from an older backfill output (no columns): no windows anywhere, no template when unset.
    write_backfill(tmp_path / "old", vectors, scores, artists, windows=None)
    build.build(tmp_path / "old", tmp_path / "ix-old", taxonomy_dir=taxonomy_dir)
    old = load_index(artefact.manifest_path(tmp_path / "ix-old", MODEL), models())
    assert compact_document(MODEL, old)["representative"] is None
    assert compact_document(MODEL, old)["audio_url_template"] is None
    assert all(p["representative"] is None for p in points_document(MODEL, old)["points"])


# ---- tracks without an artist ------------------------------------------------------------------------------------


def test_an_empty_or_blank_artist_is_no_artist(tmp_path, taxonomy_dir):
    vectors, scores, _ = catalog()
    artists = [["artist-a", "artist-b", "", "  ", None][i % 5] for i in range(len(vectors))]
    write_backfill(tmp_path / "bf", vectors, scores, artists)
    manifest = build.build(tmp_path / "bf", tmp_path / "ix", taxonomy_dir=taxonomy_dir)
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    assert index.artists == [["artist-a", "artist-b", None, None, None][i % 5] for i in range(len(vectors))]
    assert manifest.artists.count == 2 and index.artist_table.ids == ["artist-a", "artist-b"]
    assert index.artist_table.entry("") is None and index.artist_table.entry("  ") is None


def test_an_artists_csv_with_an_empty_artist_gives_no_artist(tmp_path, taxonomy_dir):
    vectors, scores, _ = catalog(n=6)
    write_backfill(tmp_path / "bf", vectors, scores, [None] * 6)
    # the backfill output has an artist_id column of nulls: drop it, so the CSV is what names the artists
    part = next((tmp_path / "bf" / "results").glob("part-*.parquet"))
    pq.write_table(pq.read_table(part).drop_columns(["artist_id"]), part)
    csv_path = tmp_path / "catalog.csv"
    csv_path.write_text("track_id,artist,title\nt0,Ann,One\nt1,,Two\nt2, ,Three\nt3,Ann,Four\n")
    build.build(tmp_path / "bf", tmp_path / "ix", artists_csv=csv_path, taxonomy_dir=taxonomy_dir)
    index = load_index(artefact.manifest_path(tmp_path / "ix", MODEL), models())
    assert index.artists == ["Ann", None, None, "Ann", None, None]
    assert index.artist_table.ids == ["Ann"] and index.artist_table.entry("Ann").rows == [0, 3]
