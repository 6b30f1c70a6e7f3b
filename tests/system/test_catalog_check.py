"""`taggram check-catalog`: what a backfill would analyse or refuse, found without the model, through the real CLI.

The catalog mixes clean files, a truncated one, one only libsndfile reads and files the service refuses; every
outcome must match what the API answers for the same bytes (same refusal codes, same warnings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.audio_factory import encode_audio, sine
from tests.support.ogg_pages import with_padded_vorbis_setup

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_SECONDS = 10.0
TIMEOUT_SECONDS = 300  # a loaded 2-core machine


def flac_halved() -> bytes:
    data = encode_audio(sine(440, 6.0, 44_100), 44_100, "flac")
    return data[: len(data) // 2]


CATALOG = {  # name → (bytes, status, refusal code, warnings, decoder)
    "clean/a.mp3": (lambda: encode_audio(sine(440, 3.0, 44_100), 44_100, "mp3"), "ok", None, [], "ffmpeg"),
    "clean/b.wav": (lambda: encode_audio(sine(660, 2.0, 16_000), 16_000, "wav"), "ok", None, [], "ffmpeg"),
    "odd/only_libsndfile.ogg": (lambda: with_padded_vorbis_setup(encode_audio(sine(300, 3.0, 44_100), 44_100, "ogg")),
                                "ok", None, [], "libsndfile"),
    "damaged/half.flac": (flac_halved, "ok", None, ["audio_damaged", "audio_truncated"], "ffmpeg"),
    "refused/too_long.wav": (lambda: encode_audio(sine(440, 12.0, 8_000), 8_000, "wav"), "refused", "audio_too_long",
                             [], None),
    "refused/too_short.wav": (lambda: encode_audio(sine(440, 0.5, 8_000), 8_000, "wav"), "refused", "audio_too_short",
                              [], None),
    "refused/noise.mp3": (lambda: bytes(range(256)) * 40, "refused", "undecodable_audio", [], None),
    "refused/empty.ogg": (lambda: b"", "refused", "empty_body", [], None),
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog")
    for name, (make, *_expected) in CATALOG.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(make())
    (root / "notes.txt").write_text("not audio: not listed")
    return root


def check(source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "check-catalog",
            str(source),
            "--output",
            str(output),
            "--workers",
            "2",
            "--max-seconds",
            str(MAX_SECONDS),
            *extra,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )


@pytest.mark.slow
def test_every_file_gets_its_outcome_decoder_and_warnings(catalog, tmp_path):
    result = check(catalog, tmp_path / "rows.jsonl")
    assert result.returncode == 0, result.stderr
    rows = {row["track_id"]: row for row in map(json.loads, (tmp_path / "rows.jsonl").read_text().splitlines())}
    assert set(rows) == set(CATALOG)
    for name, (_make, status, code, warnings, decoder) in CATALOG.items():
        row = rows[name]
        assert (row["status"], row["code"], row["warnings"]) == (status, code, warnings), name
        if status == "ok":
            assert row["decoder"] == decoder and row["duration_seconds"] > 0, name
        else:
            assert row["message"], name
    assert rows["damaged/half.flac"]["declared_duration_seconds"] == pytest.approx(6.0)


@pytest.mark.slow
def test_the_terminal_gets_a_summary_not_a_line_per_file(catalog, tmp_path):
    result = check(catalog, tmp_path / "rows.parquet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{len(CATALOG)} files checked")
    text = result.stdout
    assert "would be analysed: 4" in text and "by libsndfile: 1" in text and "would be refused:  4" in text
    assert "audio_too_long" in text and "audio_truncated" in text and "rows.parquet" in text
    assert len(lines) < 20
    table = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert sorted(r["track_id"] for r in table) == sorted(CATALOG)


@pytest.mark.slow
def test_json_summary_and_the_refuse_policy(catalog, tmp_path):
    result = check(catalog, tmp_path / "rows.jsonl", "--json", "--damaged-audio", "refuse")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == len(CATALOG) and summary["ok"] == 3 and summary["refused"] == 5
    assert summary["refusals"]["damaged_audio"] == 1 and summary["decoders"] == {"ffmpeg": 2, "libsndfile": 1}
    assert summary["examples"]["damaged_audio"] == [str(catalog / "damaged/half.flac")]


@pytest.mark.slow
def test_a_manifest_works_and_bad_arguments_exit_2(catalog, tmp_path):
    manifest = tmp_path / "tracks.csv"
    manifest.write_text("track_id,path\nb,clean/b.wav\nmissing,nowhere.wav\n")
    (tmp_path / "clean").symlink_to(catalog / "clean")
    result = check(manifest, tmp_path / "rows.jsonl", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["refusals"] == {"unreadable_file": 1}
    assert check(catalog, tmp_path / "rows.csv").returncode == 2  # unknown output format
    assert check(tmp_path / "absent", tmp_path / "rows.jsonl").returncode == 2
    for limit in ("--min-seconds", "--max-seconds", "--max-bytes", "--workers"):  # checked as the backfill checks them
        refused = check(catalog, tmp_path / "rows.jsonl", limit, "-1")
        assert refused.returncode == 2 and f"argument {limit}: must be" in refused.stderr, refused.stderr
