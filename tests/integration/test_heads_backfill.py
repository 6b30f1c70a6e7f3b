"""`taggram backfill --segment-embeddings`: the per-segment embeddings heads train on, equal to the service's.

A small real catalog (real encoders), a real in-process backfill, and the live service's /embed?segments=true on
the same bytes; the option is part of the run identity (a directory started without it refuses a run with it).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from service.offline.backfill import read_output
from service.offline.codes import EXIT_USAGE
from tests.support.audio_factory import chord, encode_audio, sine
from tests.support.head_catalog import backfill_one_worker as run
from tests.support.live_server import live_server, server_settings

EMBEDDING_DIM = 200
FILES = {
    "one.wav": lambda: encode_audio(sine(440, 7.0, 22_050), 22_050, "wav"),  # 2 segments (whole patches of 2.99 s)
    "two.flac": lambda: encode_audio(chord((220, 330, 440), 10.0, 22_050), 22_050, "flac"),  # 3 segments
}


def test_segment_embeddings_column_matches_the_pooled_embedding_and_the_service(models_dir, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for name, make in FILES.items():
        (catalog / name).write_bytes(make())
    out = tmp_path / "out"
    assert run(catalog, out, models_dir, "--segment-embeddings") == 0

    table = read_output(out)
    assert table.schema.field("segment_embeddings").type == pa.list_(pa.list_(pa.float32(), EMBEDDING_DIM))
    identity = json.loads((out / "_backfill.json").read_text())
    assert identity["segment_embeddings"] is True
    rows = {r["track_id"]: r for r in table.to_pylist()}
    assert {k: len(v["segment_embeddings"]) for k, v in rows.items()} == {"one.wav": 2, "two.flac": 3}
    for row in rows.values():
        assert len(row["segment_embeddings"]) == row["segments"]
        np.testing.assert_allclose(np.mean(row["segment_embeddings"], axis=0), row["embedding"], rtol=1e-5, atol=1e-6)

    with live_server(server_settings(models_dir)) as live, live.client() as http:
        for name in FILES:
            body = http.post("/embed?segments=true", content=(catalog / name).read_bytes()).json()
            served = [s["embedding"] for s in body["segments"]]
            np.testing.assert_allclose(served, rows[name]["segment_embeddings"], rtol=1e-4, atol=1e-5, err_msg=name)

    # The option changes the output's content: resuming that directory without it is refused (exit 2).
    assert run(catalog, out, models_dir) == EXIT_USAGE


def test_without_the_option_the_identity_and_schema_are_unchanged(models_dir, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "one.wav").write_bytes(FILES["one.wav"]())
    out = tmp_path / "out"
    assert run(catalog, out, models_dir) == 0
    assert "segment_embeddings" not in json.loads((out / "_backfill.json").read_text())
    assert "segment_embeddings" not in read_output(out).schema.names
