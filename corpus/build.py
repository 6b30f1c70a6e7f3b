"""A shared real-music corpus built from freely licensed game soundtracks in Debian packages.

``python -m corpus.build --dest /work/corpus`` downloads each package of ``SOURCES`` once with ``apt-get download``
(into ``DEST/debs``), unpacks it with ``dpkg -x`` (into ``DEST/unpacked/<package>``), hard-links the music files
that match the package's pattern into ``DEST/audio/<package>/...``, reads title/artist/album from the files' own
tags (PyAV) or from the package's documented album files, joins the genre labels kept in git
(``corpus/labels.csv``) and writes ``DEST/corpus.csv``. Every step skips what already exists, so a second run
only re-catalogues.

``--scan`` also decodes every file fully with PyAV (FFmpeg) and with python-soundfile (libsndfile) and writes
``DEST/ffmpeg_refused.csv``: the files FFmpeg refuses or decodes only partly while libsndfile reads them whole.

The audio never enters git: the packages' licences (recorded per package below, read from each package's
``/usr/share/doc/<package>/copyright``) allow redistribution, but the bytes belong in Debian's archive, not ours.
What the labels mean and what the corpus can and cannot show: docs/corpus.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import av

REPO_ROOT = Path(__file__).resolve().parent.parent
LABELS_CSV = REPO_ROOT / "corpus" / "labels.csv"
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".mp3", ".wav")
# Shorter files are jingles and stingers (game-over fanfares, 'level won' riffs), not pieces of music.
MIN_TRACK_SECONDS = 20.0
# A decode that yields less than this share of the frames libsndfile reads counts as partial.
PARTIAL_DECODE_RATIO = 0.98

CORPUS_COLUMNS = [
    "track_id",
    "path",
    "package",
    "package_version",
    "artist",
    "album",
    "title",
    "licence",
    "duration_seconds",
    "codec",
    "label",
    "label_reason",
    "label_evidence",
    "cv_group",
]
LABEL_COLUMNS = ["track_id", "label", "artist", "album", "label_reason", "evidence", "cv_group"]
REFUSED_COLUMNS = ["track_id", "path", "ffmpeg_error", "soundfile_frames", "soundfile_samplerate"]


# What the corpus CSV writes for a track whose artist nobody names: an empty cell. Never a word such as "unknown":
# a catalog reading the CSV (taggram index build --artists) would take it for one artist and pool every such track
# under it (docs/catalog.md, "Artists").
NO_ARTIST = ""


@dataclass(frozen=True)
class Source:
    """One Debian package: where its music lies inside the package, under which licence, by whom."""

    package: str
    pattern: str  # regex on the path relative to the unpacked package root
    licence: str  # SPDX-ish, from /usr/share/doc/<package>/copyright
    artist: str  # fallback when a file carries no artist tag (NO_ARTIST: the package names no one)
    album: str  # fallback album (the game's soundtrack)
    # (regex on the file's path in the package, licence) for files the copyright file licenses differently
    licence_overrides: tuple[tuple[str, str], ...] = ()
    # (regex on the file name, artist) from the package's own credits, for files whose tags name no one
    credited_artists: tuple[tuple[str, str], ...] = ()

    def credited_artist(self, name: str) -> str:
        for pattern, artist in self.credited_artists:
            if re.search(pattern, name):
                return artist
        return ""

    def licence_of(self, relative_path: str) -> str:
        for pattern, licence in self.licence_overrides:
            if re.search(pattern, relative_path):
                return licence
        return self.licence


SOURCES: tuple[Source, ...] = (
    Source(
        "wesnoth-1.16-music",
        r"usr/share/games/wesnoth/1\.16/data/core/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "The Battle for Wesnoth OST",
    ),
    Source(
        "fretsonfire-songs-muldjord",
        r"songs/muldjord/[^/]+/(song|guitar)\.ogg$",
        "CC-BY-SA-3.0",
        "El Senator (Muldjord)",
        "Muldjord Frets on Fire song pack",
    ),
    Source(
        "fretsonfire-songs-sectoid",
        r"songs/sectoid/[^/]+/(song|guitar)\.ogg$",
        "MIT",
        "Carlos Viola Iborra (Sectoid)",
        "Sectoid Frets on Fire song pack",
    ),
    Source(
        "lincity-ng-data",
        r"usr/share/games/lincity-ng/music/default/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "LinCity-NG soundtrack",
    ),
    Source(
        "asc-music",
        r"usr/share/games/asc/music/[^/]+\.mp3$",
        "GPL-2.0-or-later",
        "Michael Kievernagel",
        "Advanced Strategic Command music",
    ),
    Source(
        "ardentryst",
        r"usr/share/games/ardentryst/Music/[^/]+\.ogg$",
        "CC-BY-SA-3.0",
        "Jordan Trudgett",
        "Ardentryst soundtrack",
    ),
    Source(
        "btanks-data",
        r"usr/share/games/btanks/data/tunes/[^/]+\.ogg$",
        "LicenseRef-GPL-2.0-Battle-Tanks-exception",
        NO_ARTIST,
        "Battle Tanks soundtrack",
    ),
    Source(
        "colobot-common-sounds",
        r"usr/share/games/colobot/music/[^/]+\.ogg$",
        "GPL-3.0-or-later",
        NO_ARTIST,
        "Colobot soundtrack",
    ),
    Source(
        "drascula-music",
        r"usr/share/scummvm/drascula/audio/[^/]+\.ogg$",
        "LicenseRef-Drascula",
        "Alcachofa Soft",
        "Drascula: The Vampire Strikes Back soundtrack",
    ),
    Source(
        "extremetuxracer-data",
        r"usr/share/games/etr/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "Extreme Tux Racer soundtrack",
        # usr/share/games/etr/music/readme ("Music Authors List")
        credited_artists=(
            (r"-jt\.ogg$", "Joseph Toscano"),
            (r"-ks\.ogg$", "K. Schroeder"),
            (r"-cp\.ogg$", "Christian Picon"),
            (r"^freezingpoint", "Grady O'Connell"),
        ),
    ),
    Source(
        "fillets-ng-data",
        r"usr/share/games/fillets-ng/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "Fish Fillets NG soundtrack",
    ),
    Source(
        "flare-game",
        r"usr/share/games/flare/mods/fantasycore/music/[^/]+\.ogg$",
        "CC-BY-SA-3.0-or-later",
        NO_ARTIST,
        "Flare soundtrack",
    ),
    Source(
        "freedroidrpg-data",
        r"usr/share/freedroidrpg/data/sound/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "FreedroidRPG soundtrack",
    ),
    Source(
        "hedgewars-data",
        r"usr/share/games/hedgewars/Data/Music/[^/]+\.ogg$",
        "GPL-2.0-only",
        NO_ARTIST,
        "Hedgewars soundtrack",
    ),
    Source(
        "lordsawar-data",
        r"usr/share/games/lordsawar/music/[^/]+\.ogg$",
        "GPL-3.0-or-later",
        NO_ARTIST,
        "LordsAWar soundtrack",
    ),
    Source(
        "marsshooter-data",
        r"usr/share/games/marsshooter/audio/(music/[^/]+|menu|tutorial)\.ogg$",
        "CC-BY-SA-3.0",
        "Obsidian Shell",
        "M.A.R.S. soundtrack",
    ),
    Source(
        "scorched3d-data",
        r"usr/share/games/scorched3d/data/globalmods/none/data/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "Scorched3D soundtrack",
    ),
    Source(
        "supertux-data",
        r"usr/share/games/supertux2/music/.+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "SuperTux Soundtrack",
    ),
    Source("warmux-data", r"usr/share/games/warmux/music/.+\.ogg$", "GPL-2.0-or-later", NO_ARTIST, "WarMUX soundtrack"),
    Source(
        "warzone2100-music",
        r"usr/share/games/warzone2100/music/.+\.opus$",
        "CC-BY-SA-3.0-or-later OR GPL-2.0-or-later",
        NO_ARTIST,
        "Warzone 2100 soundtrack",
        # the albums' license.txt: Martin Severn's original tracks (and track3_enhanced, derived) are GPL-2+
        ((r"original_soundtrack/|track3_enhanced|music/menu\.opus$", "GPL-2.0-or-later"),),
    ),
    Source(
        "xmoto-data",
        r"usr/share/games/xmoto/Textures/Musics/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "X-Moto soundtrack",
    ),
    Source(
        "frozen-bubble-data",
        r"usr/share/games/frozen-bubble/snd/(introzik|frozen-mainzik-[12]p)\.ogg$",
        "GPL-2.0-only",
        NO_ARTIST,
        "Frozen-Bubble soundtrack",
    ),
    Source(
        "supertuxkart-data",
        # the *_fast / *_f files are sped-up copies of the same pieces (played on the last lap): left out
        r"usr/share/games/supertuxkart/data/music/(?![^/]*_(fast|f)\.ogg$)[^/]+\.ogg$",
        "CC-BY-SA-3.0",
        NO_ARTIST,
        "SuperTuxKart soundtrack",
        ((r"/(Boom_boom_boom|alien_signal)\.ogg$", "CC-BY-SA-4.0"), (r"/klabauter_dance\.ogg$", "GPL")),
    ),
    Source(
        "widelands-data",
        r"usr/share/games/widelands/data/music/[^/]+\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "Widelands soundtrack",
        ((r"/ingame_2[456]\.ogg$", "CC-BY-SA-3.0"),),
    ),
    Source(
        "megaglest-data",
        r"usr/share/games/megaglest/.*/music/[^/]+\.ogg$",
        "CC-BY-SA-3.0",
        NO_ARTIST,
        "MegaGlest soundtrack",
    ),
    Source(
        "tuxtype-data",
        r"usr/share/tuxtype/sounds/(tuxi|amidst_the_raindrops|chiptune2)\.ogg$",
        "GPL-2.0-or-later",
        NO_ARTIST,
        "Tux Typing music",
        ((r"tuxi\.ogg$", "LicenseRef-public-domain"),),
    ),
    Source(
        "parsec47-data",
        r"usr/share/games/parsec47/sounds/ptn\d\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "PARSEC47 soundtrack",
    ),
    Source(
        "rrootage-data",
        r"usr/share/games/rrootage/sounds/stg_[a-z]\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "rRootage soundtrack",
    ),
    Source(
        "noiz2sa-data",
        r"usr/share/games/noiz2sa/sounds/stg\d+\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "Noiz2sa soundtrack",
    ),
    Source(
        "tumiki-fighters-data",
        r"usr/share/games/tumiki-fighters/sounds/[a-z_]+\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "TUMIKI Fighters soundtrack",
    ),
    Source(
        "torus-trooper-data",
        r"usr/share/games/torus-trooper/sounds/musics/[^/]+\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "Torus Trooper soundtrack",
    ),
    Source(
        "gunroar-data",
        r"usr/share/games/gunroar/sounds/musics/[^/]+\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "Gunroar soundtrack",
    ),
    Source(
        "titanion-data",
        r"usr/share/games/titanion/sounds/musics/[^/]+\.ogg$",
        "BSD-2-Clause",
        "Kenta Cho",
        "Titanion soundtrack",
    ),
)


# ---------------------------------------------------------------- download and unpack


def deb_path(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def download(package: str, debs: Path) -> Path:
    """The package's .deb in ``debs``, fetched with ``apt-get download`` unless already there."""
    existing = deb_path(debs, package)
    if existing:
        return existing
    debs.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"apt-get download {package} failed (run 'apt-get update' first?): {run.stderr.strip()}")
    found = deb_path(debs, package)
    if not found:
        raise SystemExit(f"apt-get download {package} succeeded but left no {package}_*.deb in {debs}")
    return found


def package_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def unpack(deb: Path, root: Path) -> Path:
    """``dpkg -x`` into ``root`` (via a partial directory, so an interrupted run never leaves half a tree)."""
    if root.is_dir():
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["dpkg", "-x", str(deb), str(partial)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"dpkg -x {deb} failed: {run.stderr.strip()}")
    partial.rename(root)
    return root


# ---------------------------------------------------------------- catalogue


def music_files(root: Path, pattern: str) -> list[Path]:
    """Audio files under ``root`` whose root-relative path matches ``pattern``."""
    rx = re.compile(pattern)
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and rx.search(p.relative_to(root).as_posix())
    )


def relative_names(paths: list[Path]) -> list[str]:
    """Each path below the deepest directory all of a package's music files share (short, readable names)."""
    if not paths:
        return []
    common = Path(os.path.commonpath([p.parent for p in paths]))
    return [p.relative_to(common).as_posix() for p in paths]


def track_id(package: str, name: str) -> str:
    """``<package>/<name without extension>``, with anything outside [A-Za-z0-9._-] in the name turned into '_'
    (one slash only, after the package: safe in URLs and as a file name part)."""
    stem = name.rsplit(".", 1)[0]
    return f"{package}/{re.sub(r'[^A-Za-z0-9._-]+', '_', stem).strip('_')}"


def tags(path: Path) -> dict[str, str]:
    """Container and first-audio-stream tags, keys lower-cased (Vorbis comments live on the stream in PyAV)."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            found = {k.lower(): v for k, v in container.metadata.items()}
            if container.streams.audio:
                found.update({k.lower(): v for k, v in container.streams.audio[0].metadata.items()})
            return found
    except av.error.FFmpegError:
        return {}


def stream_facts(path: Path) -> tuple[float | None, str]:
    """(duration in seconds, codec name) from container metadata, without decoding; libsndfile as a fallback
    for files FFmpeg will not open."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = None
            return seconds, stream.codec_context.name
    except (av.error.FFmpegError, IndexError):
        import soundfile

        info = soundfile.info(str(path))
        return info.frames / info.samplerate, info.subtype.lower()


def music_xml_titles(root: Path, album: str) -> dict[str, tuple[str, str, str]]:
    """filename → (title, composer, album) from SuperTuxKart's ``*.music`` XML files (its documented credits)."""
    found: dict[str, tuple[str, str, str]] = {}
    for music_file in root.rglob("*.music"):
        try:
            element = ElementTree.parse(music_file).getroot()
        except ElementTree.ParseError:
            continue  # SuperTux's *.music files are S-expressions, not XML: nothing documented there
        if element.tag == "music" and element.get("file"):
            key = (music_file.parent / element.get("file")).as_posix()
            found[key] = (element.get("title", ""), element.get("composer", ""), album)
    return found


def album_json_titles(root: Path) -> dict[str, tuple[str, str, str]]:
    """filename → (title, author, album title) from Warzone 2100's ``album.json`` files (its documented music
    metadata); empty for packages without them."""
    found: dict[str, tuple[str, str, str]] = {}
    for album_file in root.rglob("album.json"):
        album = json.loads(album_file.read_text(encoding="utf-8"))
        for track in album.get("tracks", []):
            key = (album_file.parent / track["filename"]).as_posix()
            found[key] = (track.get("title", ""), track.get("author", album.get("author", "")), album.get("title", ""))
    return found


# "01 - pronobozo - lincity.ogg" (LinCity-NG), "Olivier Militon.-.Apnee.ogg" (WarMUX)
FILENAME_ARTIST_TITLE = re.compile(r"^(?:\d+\s*-\s*)?(?P<artist>[^-]+?)\s*(?:\.-\.| - )\s*(?P<title>.+)$")


def filename_artist_title(name: str) -> tuple[str, str]:
    """(artist, title) when a file name follows 'NN - Artist - Title' or 'Artist.-.Title', else ('', title)."""
    stem = re.sub(r"_+", " ", Path(name).stem).strip()
    match = FILENAME_ARTIST_TITLE.match(stem)
    if match:
        return match.group("artist").strip(), match.group("title").strip()
    return "", stem


PLACEHOLDER_TAGS = ("none", "(none)", "<unknown>", "unknown", "???")


def meaningful(tag: str | None) -> str:
    """A tag's text, or '' for the placeholders some files carry ('none', '???', a web address)."""
    text = (tag or "").strip()
    if text.lower() in PLACEHOLDER_TAGS or text.startswith(("http", "www.")):
        return ""
    return text


def describe(path: Path, root: Path, source: Source, albums: dict[str, tuple[str, str, str]]) -> dict[str, str]:
    """artist, album and title for one file: album.json, then the file's tags, then the package defaults."""
    found = tags(path)
    title, artist, album = albums.get(path.as_posix(), ("", "", ""))
    name_artist, name_title = filename_artist_title(path.name)
    tagged_artist = meaningful(found.get("artist")) or meaningful(found.get("composer"))
    artist = meaningful(artist) or tagged_artist or source.credited_artist(path.name) or name_artist or source.artist
    album = album or meaningful(found.get("album")) or source.album
    title = title or found.get("title") or name_title
    return {"artist": artist.strip(), "album": album.strip(), "title": title.strip()}


def cv_group(artist: str, album: str) -> str:
    """The unit an artist-disjoint split keeps together: the artist, or the album when the artist is unknown (no
    artist, or a placeholder such as the labels file's "unknown")."""
    return artist if meaningful(artist) else album


def read_labels(path: Path = LABELS_CSV) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["track_id"]: row for row in csv.DictReader(f)}


def catalogue_package(
    source: Source, root: Path, version: str, audio_dir: Path, labels: dict[str, dict[str, str]]
) -> list[dict[str, str]]:
    """Link the package's music into ``audio_dir/<package>/`` and describe each track (one row per track)."""
    albums = album_json_titles(root) | music_xml_titles(root, source.album)
    rows = []
    paths = music_files(root, source.pattern)
    for path, name in zip(paths, relative_names(paths)):
        seconds, codec = stream_facts(path)
        if seconds is not None and seconds < MIN_TRACK_SECONDS:
            continue
        target = audio_dir / source.package / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        tid = track_id(source.package, name)
        row = {
            "track_id": tid,
            "path": str(target),
            "package": source.package,
            "package_version": version,
            **describe(path, root, source, albums),
            "licence": source.licence_of(path.relative_to(root).as_posix()),
            "duration_seconds": f"{seconds:.2f}" if seconds is not None else "",
            "codec": codec,
            "label": "",
            "label_reason": "",
            "label_evidence": "",
        }
        label = labels.get(tid)
        if label:
            # the labels file is the curated record: its artist/album (read from copyright files and docs) win
            row.update({k: label[k] for k in ("label", "label_reason", "album") if label.get(k)})
            if label.get("artist"):  # its "unknown" is the curator's word too: no artist (NO_ARTIST)
                row["artist"] = meaningful(label["artist"])
            row["label_evidence"] = label.get("evidence", "")
        # the labels file may group a track with another artist's (a remaster stays with its original)
        row["cv_group"] = (label or {}).get("cv_group") or cv_group(row["artist"], row["album"])
        rows.append(row)
    return rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    partial.rename(path)


# ---------------------------------------------------------------- decoder scan


def ffmpeg_decode(path: Path) -> tuple[int, str]:
    """(samples per channel decoded, error text or '') with PyAV decoding every audio frame."""
    frames = 0
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            for frame in container.decode(audio=0):
                frames += frame.samples
    except (av.error.FFmpegError, IndexError) as exc:
        return frames, f"{type(exc).__name__}: {exc}"
    return frames, ""


def soundfile_decode(path: Path) -> tuple[int, int, str]:
    """(frames, sample rate, error text or '') with libsndfile reading the whole file."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        return 0, 0, f"{type(exc).__name__}: {exc}"
    return data.shape[0], rate, ""


def declared_frames(path: Path) -> int:
    """The frame count libsndfile reads from the file's headers (cheap: no decoding); 0 if it cannot open it."""
    import soundfile

    try:
        return soundfile.info(str(path)).frames
    except (soundfile.LibsndfileError, RuntimeError):
        return 0


def refused_row(tid: str, path: Path) -> dict[str, str] | None:
    """A row for ffmpeg_refused.csv when FFmpeg fails or stops short while libsndfile reads the file whole.

    FFmpeg decodes every file; libsndfile decodes fully only the files FFmpeg failed on or cut short against
    libsndfile's header frame count (the full read is what proves libsndfile reads them whole)."""
    ff_frames, ff_error = ffmpeg_decode(path)
    # FFmpeg resamples nothing here, so both count frames at the file's own rate (Opus: libsndfile reports 48 kHz too)
    if not ff_error and ff_frames >= PARTIAL_DECODE_RATIO * declared_frames(path):
        return None
    sf_frames, sf_rate, sf_error = soundfile_decode(path)
    if sf_error or sf_frames == 0:
        return None
    partial = ff_frames < PARTIAL_DECODE_RATIO * sf_frames
    if not ff_error and not partial:
        return None
    # say how far FFmpeg got: an error raised after every frame was decoded is a different bug from a refusal
    error = (
        f"{ff_error} (after {ff_frames} of {sf_frames} frames)"
        if ff_error
        else f"decoded {ff_frames} of {sf_frames} frames without an error"
    )
    return {
        "track_id": tid,
        "path": str(path),
        "ffmpeg_error": error,
        "soundfile_frames": str(sf_frames),
        "soundfile_samplerate": str(sf_rate),
    }


# ---------------------------------------------------------------- main


def build(dest: Path, packages: list[str] | None = None) -> list[dict[str, str]]:
    unknown = sorted(set(packages or ()) - {s.package for s in SOURCES})
    if unknown:
        raise SystemExit(
            f"not in corpus.build.SOURCES: {', '.join(unknown)} (known: {', '.join(s.package for s in SOURCES)})"
        )
    labels = read_labels()
    rows: list[dict[str, str]] = []
    for source in SOURCES:
        if packages and source.package not in packages:
            continue
        deb = download(source.package, dest / "debs")
        root = unpack(deb, dest / "unpacked" / source.package)
        found = catalogue_package(source, root, package_version(deb), dest / "audio", labels)
        if not found:
            raise SystemExit(f"{source.package}: no music matched {source.pattern!r} under {root}")
        print(f"{source.package}: {len(found)} tracks", file=sys.stderr)
        rows += found
    missing = sorted(set(labels) - {r["track_id"] for r in rows})
    if missing and not packages:
        raise SystemExit(f"{len(missing)} labelled tracks not found in the packages, e.g. {missing[:3]}")
    if packages and (dest / "corpus.csv").exists():
        # a partial run re-catalogues only the named packages and keeps every other package's rows
        with (dest / "corpus.csv").open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["package"] not in packages] + rows
    write_csv(dest / "corpus.csv", CORPUS_COLUMNS, rows)
    return rows


def scan(dest: Path, rows: list[dict[str, str]]) -> list[dict[str, str]]:
    refused = []
    for n, row in enumerate(rows, 1):
        found = refused_row(row["track_id"], Path(row["path"]))
        if found:
            refused.append(found)
            print(f"FFmpeg refuses {found['path']}: {found['ffmpeg_error']}", file=sys.stderr)
        if n % 50 == 0:
            print(f"scanned {n}/{len(rows)}", file=sys.stderr)
    write_csv(dest / "ffmpeg_refused.csv", REFUSED_COLUMNS, refused)
    return refused


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="where debs/, unpacked/, audio/, corpus.csv go")
    parser.add_argument("--packages", nargs="*", help="only these packages (default: all of SOURCES)")
    parser.add_argument("--scan", action="store_true", help="also write ffmpeg_refused.csv (decodes everything)")
    args = parser.parse_args(argv)
    rows = build(args.dest, args.packages)
    print(
        f"{len(rows)} tracks, {sum(float(r['duration_seconds'] or 0) for r in rows) / 60:.0f} min "
        f"→ {args.dest / 'corpus.csv'}",
        file=sys.stderr,
    )
    if args.scan:
        refused = scan(args.dest, rows)
        print(
            f"{len(refused)} files FFmpeg refuses or cuts short → {args.dest / 'ffmpeg_refused.csv'}", file=sys.stderr
        )


if __name__ == "__main__":
    main()
