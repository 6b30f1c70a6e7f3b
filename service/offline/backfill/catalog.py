"""The catalog: a directory tree or a manifest of tracks, deterministic sharding, and the size checks the service
makes before decoding an upload (done here, in the parent, before a file goes to a decode worker)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.decode import ALLOWED_DEMUXERS
from service.errors import BodyTooLarge, EmptyBody
from service.offline.codes import UsageError

# File extensions a directory walk picks up, per demuxer the decoder allows (service/decode.py ALLOWED_DEMUXERS):
# one list, checked against the other at import, so a demuxer added there without its extensions fails loudly.
EXTENSIONS_BY_DEMUXER = {
    "wav": (".wav", ".wave"),
    "w64": (".w64",),
    "aiff": (".aif", ".aiff", ".aifc"),
    "caf": (".caf",),
    "flac": (".flac",),
    "mp3": (".mp3",),
    "ogg": (".ogg", ".oga", ".opus"),
    "mov": (".m4a", ".mp4", ".m4b", ".3gp"),
    "aac": (".aac", ".adts"),
    "matroska": (".mka", ".webm"),
}
if set(EXTENSIONS_BY_DEMUXER) != set(ALLOWED_DEMUXERS):
    raise RuntimeError(
        f"EXTENSIONS_BY_DEMUXER covers {sorted(EXTENSIONS_BY_DEMUXER)}, the decoder allows {sorted(ALLOWED_DEMUXERS)}"
    )
AUDIO_EXTENSIONS = tuple(ext for demuxer in ALLOWED_DEMUXERS for ext in EXTENSIONS_BY_DEMUXER[demuxer])


@dataclass(frozen=True)
class Track:
    track_id: str
    path: str  # as recorded in the output: the manifest's path (relative ones joined to its directory), or the
    # directory argument joined with the file's relative path


def shard_of(track_id: str, shard_count: int) -> int:
    """Stable shard of a track: BLAKE2b-64 of the UTF-8 id, modulo the count (same on every machine and Python)."""
    digest = hashlib.blake2b(track_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard_count


def walk_directory(root: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> Iterator[Track]:
    """Audio files under ``root`` in sorted order; the id is the POSIX path relative to ``root``. Hidden files and
    directories (leading '.') are skipped; symlinked directories are not followed."""
    root_text = str(root)
    for directory, subdirs, files in os.walk(root, onerror=_raise):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root_text)
            yield Track(Path(rel).as_posix(), full)


def _raise(error: OSError) -> None:
    raise error


def read_manifest(manifest: Path) -> Iterator[Track]:
    """Tracks of a CSV (header row with ``track_id`` and ``path``) or JSONL (one object per line with the same keys)
    manifest. Relative paths are relative to the manifest's directory (and recorded joined to it)."""
    suffix = manifest.suffix.lower()
    base = manifest.parent
    if suffix == ".csv":
        rows = _csv_rows(manifest)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(manifest)
    else:
        raise UsageError(f"manifest {manifest}: unknown type {suffix!r} (use .csv, .jsonl or .ndjson)")
    for line, track_id, path in rows:
        if track_id is None or path is None or str(track_id).strip() == "" or str(path).strip() == "":
            raise UsageError(f"manifest {manifest}, line {line}: needs a non-empty track_id and path")
        text = str(path)
        yield Track(str(track_id), text if os.path.isabs(text) else os.path.join(base, text))


def _csv_rows(manifest: Path) -> Iterator[tuple[int, Any, Any]]:
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"track_id", "path"} - set(reader.fieldnames or ())
        if missing:
            raise UsageError(f"manifest {manifest}: the header lacks {sorted(missing)}")
        for row in reader:
            yield reader.line_num, row.get("track_id"), row.get("path")


def jsonl_objects(path: Path, error: type[Exception], what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file; ``error(f"{what} …")`` names a bad
    line (the backfill's manifests and train-head's label files read JSON lines the same way)."""
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as problem:
                raise error(f"{what}, line {line_number}: not JSON ({problem})") from None
            if not isinstance(row, dict):
                raise error(f"{what}, line {line_number}: expected a JSON object")
            yield line_number, row


def _jsonl_rows(manifest: Path) -> Iterator[tuple[int, Any, Any]]:
    for line_number, row in jsonl_objects(manifest, UsageError, f"manifest {manifest}"):
        yield line_number, row.get("track_id"), row.get("path")


def catalog(source: Path) -> Iterator[Track]:
    if source.is_dir():
        return walk_directory(source)
    if source.is_file():
        return read_manifest(source)
    raise UsageError(f"input {source} is neither a directory nor a manifest file")


def select_shard(tracks: Iterable[Track], shard_index: int, shard_count: int) -> list[Track]:
    """This shard's tracks, in catalog order; a duplicate track id anywhere in the catalog is a usage error."""
    seen: set[str] = set()
    mine: list[Track] = []
    try:
        for track in tracks:
            if track.track_id in seen:
                raise UsageError(f"track id {track.track_id!r} appears more than once in the catalog")
            seen.add(track.track_id)
            if shard_count == 1 or shard_of(track.track_id, shard_count) == shard_index:
                mine.append(track)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read the catalog: {error}") from None
    return mine


def refusal(path: str, max_bytes: int) -> tuple[str, str] | None:
    """(code, message) when the service would refuse the file before decoding it (read_upload: empty or too large
    a body); None when it goes on to decoding. Raises OSError when the file cannot be examined."""
    size = os.stat(path).st_size
    if size == 0:
        problem = EmptyBody()  # what the API answers for the same file
    elif size > max_bytes:
        problem = BodyTooLarge(max_bytes)
    else:
        return None
    return problem.code, problem.detail
