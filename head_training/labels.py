"""The labels file: track ids → one or more classes, optional artist (the CV group) and genre (the hierarchy).

CSV (header row) or JSONL. Columns/keys:

* ``track_id`` (required): the backfill's track id.
* ``subgenres`` (or ``subgenre``, ``label``, ``labels``): one or more classes; in CSV separated by ``;``, in JSONL
  a string (``;``-separated) or a list.
* ``artist_id`` (or ``artist``): optional; folds keep an artist's tracks on one side.
* ``genre``: optional parent of the row's classes (the hierarchy); a ``--hierarchy`` JSON file
  (``{"genre": ["subgenre", ...]}``) may give it instead.

Problems are collected, each naming its rows (file line numbers), so a user can fix the file in one go.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from service.offline.backfill.catalog import jsonl_objects

CLASS_KEYS = ("subgenres", "subgenre", "labels", "label")
ARTIST_KEYS = ("artist_id", "artist")
SEPARATOR = ";"
MAX_ROWS_NAMED = 10  # rows listed in one message; the rest are counted


class LabelError(ValueError):
    """The labels (or their combination with the embeddings) cannot give a trustworthy head; names the rows."""


@dataclass(frozen=True)
class LabelRow:
    line: int
    track_id: str
    classes: tuple[str, ...]
    artist: str | None
    genre: str | None


@dataclass
class Labels:
    path: Path
    rows: list[LabelRow]
    hierarchy: dict[str, list[str]]  # genre → its subgenres (empty: none given)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_artists(self) -> bool:
        return all(r.artist for r in self.rows)


def name_rows(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_ROWS_NAMED])
    more = f" and {len(lines) - MAX_ROWS_NAMED} more" if len(lines) > MAX_ROWS_NAMED else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _first(record: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in record and record[key] not in (None, ""):
            return record[key]
    return None


def _classes(value) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value or "").split(SEPARATOR)
    seen: dict[str, None] = {}
    for item in items:
        text = str(item).strip()
        if text:
            seen[text] = None
    return tuple(seen)


def _records(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "track_id" not in (reader.fieldnames or ()):
                raise LabelError(f"{path}: the header has no track_id column")
            if not set(CLASS_KEYS) & set(reader.fieldnames or ()):
                raise LabelError(f"{path}: the header has none of the class columns {list(CLASS_KEYS)}")
            for record in reader:
                yield reader.line_num, record
    elif suffix in (".jsonl", ".ndjson"):
        yield from jsonl_objects(path, LabelError, str(path))
    else:
        raise LabelError(f"{path}: unknown type {suffix!r} (use .csv, .jsonl or .ndjson)")


def read_labels(path: Path, hierarchy_path: Path | None = None) -> Labels:
    """Parse and check the file on its own (rows against the embeddings: ``dataset.join``)."""
    rows: list[LabelRow] = []
    empty: list[int] = []
    by_id: dict[str, list[int]] = {}
    for line, record in _records(path):
        track_id = str(record.get("track_id") or "").strip()
        if not track_id:
            raise LabelError(f"{path}, line {line}: empty track_id")
        by_id.setdefault(track_id, []).append(line)
        classes = _classes(_first(record, CLASS_KEYS))
        if not classes:
            empty.append(line)
            continue
        artist = _first(record, ARTIST_KEYS)
        genre = record.get("genre")
        rows.append(
            LabelRow(
                line, track_id, classes, str(artist).strip() if artist else None, str(genre).strip() if genre else None
            )
        )
    duplicates = {k: v for k, v in by_id.items() if len(v) > 1}
    if duplicates:
        named = "; ".join(f"{k!r} on {name_rows(v)}" for k, v in list(duplicates.items())[:MAX_ROWS_NAMED])
        raise LabelError(
            f"{path}: {len(duplicates)} duplicate track ids: {named} (give all of a track's classes "
            f"on one row, separated by '{SEPARATOR}')"
        )
    labels = Labels(path, rows, {})
    if empty:
        labels.warnings.append(f"{path}: {len(empty)} rows without any class are ignored: {name_rows(empty)}")
    if rows and not labels.has_artists:
        missing = [r.line for r in rows if not r.artist]
        if len(missing) < len(rows):
            raise LabelError(f"{path}: artist_id is missing on {name_rows(missing)}; give it on every row or none")
    labels.hierarchy = _hierarchy(path, rows, hierarchy_path)
    return labels


def _hierarchy(path: Path, rows: list[LabelRow], hierarchy_path: Path | None) -> dict[str, list[str]]:
    parent: dict[str, str] = {}
    if hierarchy_path is not None:
        try:
            document = json.loads(hierarchy_path.read_text())
        except (OSError, ValueError) as error:
            raise LabelError(f"hierarchy {hierarchy_path} cannot be read: {error}") from None
        if not isinstance(document, dict) or not all(isinstance(v, list) for v in document.values()):
            raise LabelError(f"hierarchy {hierarchy_path}: expected {{genre: [subgenre, ...]}}")
        for genre, children in document.items():
            for child in children:
                if parent.setdefault(str(child), genre) != genre:
                    raise LabelError(f"hierarchy {hierarchy_path}: {child!r} is under {parent[child]!r} and {genre!r}")
    for row in rows:
        if row.genre is None:
            continue
        for cls in row.classes:
            if parent.setdefault(cls, row.genre) != row.genre:
                raise LabelError(
                    f"{path}, line {row.line}: {cls!r} is under genre {row.genre!r} here and {parent[cls]!r} elsewhere"
                )
    tree: dict[str, list[str]] = {}
    for child, genre in sorted(parent.items()):
        tree.setdefault(genre, []).append(child)
    return tree
