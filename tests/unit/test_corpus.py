"""The corpus builder's pure parts (corpus/build.py) and its decode scan, on files generated here: no download."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from corpus import build as corpus
from corpus.build import Source
from tests.support.audio_factory import encode_audio, sine

SAMPLE_RATE = 44_100  # Hz


def test_track_id_is_package_slash_safe_name():
    assert (
        corpus.track_id("fretsonfire-songs-sectoid", "Metal madness/guitar.ogg")
        == "fretsonfire-songs-sectoid/Metal_madness_guitar"
    )
    assert (
        corpus.track_id("lincity-ng-data", "01 - pronobozo - lincity.ogg") == "lincity-ng-data/01_-_pronobozo_-_lincity"
    )
    assert corpus.track_id("p", "a/b/c.d.ogg").count("/") == 1


def test_relative_names_drop_the_shared_folder():
    paths = [Path("/r/usr/share/x/music/forest/a.ogg"), Path("/r/usr/share/x/music/misc/b.ogg")]
    assert corpus.relative_names(paths) == ["forest/a.ogg", "misc/b.ogg"]
    assert corpus.relative_names([Path("/r/m/a.ogg")]) == ["a.ogg"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("01 - pronobozo - lincity.ogg", ("pronobozo", "lincity")),
        ("02 - Robert van Herk - City Blues.ogg", ("Robert van Herk", "City Blues")),
        ("Olivier Militon.-.Vogue_a_lame.ogg", ("Olivier Militon", "Vogue a lame")),
        ("forest-sprint.ogg", ("", "forest-sprint")),
        ("battle_theme.ogg", ("", "battle theme")),
    ],
)
def test_filename_artist_title(name, expected):
    assert corpus.filename_artist_title(name) == expected


def test_placeholder_tags_are_not_names():
    assert corpus.meaningful("none") == ""
    assert corpus.meaningful("http://zhaymusic.com/") == ""
    assert corpus.meaningful(None) == ""
    assert corpus.meaningful(" Kenta Cho ") == "Kenta Cho"


def test_per_file_licence_and_credits_override_the_package_defaults():
    source = Source(
        "p",
        r"\.ogg$",
        "GPL-2.0-or-later",
        "unknown",
        "A",
        (("tuxi\\.ogg$", "LicenseRef-public-domain"),),
        ((r"-jt\.ogg$", "Joseph Toscano"),),
    )
    assert source.licence_of("usr/share/tuxtype/sounds/tuxi.ogg") == "LicenseRef-public-domain"
    assert source.licence_of("usr/share/tuxtype/sounds/chiptune2.ogg") == "GPL-2.0-or-later"
    assert source.credited_artist("race1-jt.ogg") == "Joseph Toscano"
    assert source.credited_artist("calmrace-ks.ogg") == ""


def test_cv_group_falls_back_to_the_album():
    assert corpus.cv_group("Kenta Cho", "Gunroar soundtrack") == "Kenta Cho"
    assert corpus.cv_group("unknown", "Flare soundtrack") == "Flare soundtrack"
    assert corpus.cv_group(corpus.NO_ARTIST, "Flare soundtrack") == "Flare soundtrack"


def test_a_track_nobody_names_has_an_empty_artist_and_index_build_reads_it_as_none(tmp_path):
    """Issue #23: the corpus CSV wrote "unknown", and `index build --artists corpus.csv` pooled 117 tracks as one
    artist called "unknown". Now the CSV leaves the cell empty, whether no one is named by the file, its name, the
    package's credits and defaults, or the labels file says "unknown"; and index build reads an empty cell as none."""
    from service.offline.index_build import read_artists

    root = tmp_path / "unpacked" / "pkg"
    music = root / "usr" / "share" / "games" / "pkg" / "music"
    music.mkdir(parents=True)
    piece = encode_audio(sine(330, 25, SAMPLE_RATE), SAMPLE_RATE, "ogg")
    for name in ("theme.ogg", "battle.ogg", "01 - Some Body - Named.ogg"):
        (music / name).write_bytes(piece)
    source = Source("pkg", r"music/[^/]+\.ogg$", "GPL-2.0-or-later", corpus.NO_ARTIST, "Pkg soundtrack")
    curated = {"label": "ambient", "album": "", "label_reason": "why", "evidence": "curator", "cv_group": ""}
    labels = {"pkg/battle": {"track_id": "pkg/battle", "artist": "unknown", **curated}}
    rows = {r["track_id"]: r for r in corpus.catalogue_package(source, root, "1", tmp_path / "audio", labels)}
    assert rows["pkg/theme"]["artist"] == rows["pkg/battle"]["artist"] == ""
    assert rows["pkg/theme"]["cv_group"] == rows["pkg/battle"]["cv_group"] == "Pkg soundtrack"
    assert rows["pkg/01_-_Some_Body_-_Named"]["artist"] == "Some Body"
    # no package default is a placeholder word: a name, or no artist
    assert all(s.artist == corpus.NO_ARTIST or corpus.meaningful(s.artist) for s in corpus.SOURCES)

    catalog = tmp_path / "corpus.csv"
    corpus.write_csv(catalog, corpus.CORPUS_COLUMNS, list(rows.values()))
    assert read_artists(catalog) == {
        "pkg/theme": (None, "theme"),
        "pkg/battle": (None, "battle"),
        "pkg/01_-_Some_Body_-_Named": ("Some Body", "Named"),
    }


def test_music_xml_titles_reads_supertuxkart_credits_and_skips_s_expressions(tmp_path):
    (tmp_path / "bay.music").write_text(
        '<?xml version="1.0"?>\n<music title="Bay" composer="0zone0ne" file="bay.ogg"/>'
    )
    (tmp_path / "forest.music").write_text('(supertux-music (file "forest.ogg"))')
    found = corpus.music_xml_titles(tmp_path, "SuperTuxKart soundtrack")
    assert found == {(tmp_path / "bay.ogg").as_posix(): ("Bay", "0zone0ne", "SuperTuxKart soundtrack")}


def test_catalogue_links_describes_skips_jingles_and_joins_labels(tmp_path):
    root = tmp_path / "unpacked" / "pkg"
    music = root / "usr" / "share" / "games" / "pkg" / "music"
    music.mkdir(parents=True)
    piece = encode_audio(sine(440, 25, SAMPLE_RATE), SAMPLE_RATE, "ogg")
    (music / "01 - Some Body - Long Piece.ogg").write_bytes(piece)
    (music / "jingle.ogg").write_bytes(encode_audio(sine(440, 3, SAMPLE_RATE), SAMPLE_RATE, "ogg"))
    source = Source("pkg", r"music/[^/]+\.ogg$", "GPL-2.0-or-later", corpus.NO_ARTIST, "Pkg soundtrack")
    tid = "pkg/01_-_Some_Body_-_Long_Piece"
    labels = {
        tid: {
            "track_id": tid,
            "label": "ambient",
            "artist": "",
            "album": "",
            "label_reason": "why",
            "evidence": "documented",
            "cv_group": "The Original's Composer",
        }
    }
    rows = corpus.catalogue_package(source, root, "1.0-1", tmp_path / "audio", labels)
    assert [r["track_id"] for r in rows] == [tid]  # the 3 s jingle is left out
    (row,) = rows
    assert Path(row["path"]).samefile(music / "01 - Some Body - Long Piece.ogg")
    assert (row["artist"], row["title"], row["album"]) == ("Some Body", "Long Piece", "Pkg soundtrack")
    assert (row["label"], row["label_reason"], row["label_evidence"], row["cv_group"]) == (
        "ambient",
        "why",
        "documented",
        "The Original's Composer",
    )  # the labels file's grouping wins
    assert row["codec"] == "vorbis" and abs(float(row["duration_seconds"]) - 25) < 0.1
    # a second run finds the link already there and gives the same row
    assert corpus.catalogue_package(source, root, "1.0-1", tmp_path / "audio", labels) == rows


def test_scan_lists_neither_clean_files_nor_files_libsndfile_cannot_read(tmp_path):
    clean = tmp_path / "clean.flac"
    clean.write_bytes(encode_audio(sine(440, 5, SAMPLE_RATE), SAMPLE_RATE, "flac"))
    assert corpus.refused_row("t/clean", clean) is None
    # libsndfile reads neither an empty file nor garbage: such files are FFmpeg's problem only, never listed
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"OggS" + bytes(200))
    assert corpus.refused_row("t/garbage", garbage) is None


def test_labels_file_is_consistent():
    """The committed labels: known classes, a reason and evidence kind on every row, >= 3 groups per class."""
    with corpus.LABELS_CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == corpus.LABEL_COLUMNS
    assert len({r["track_id"] for r in rows}) == len(rows)
    assert all(r["label_reason"] and r["evidence"] in ("documented", "curator") and r["cv_group"] for r in rows)
    classes = {r["label"] for r in rows}
    assert len(classes) >= 5
    for label in classes:
        assert len({r["cv_group"] for r in rows if r["label"] == label}) >= 3, label


def test_an_unknown_package_is_refused_before_any_download(tmp_path):
    with pytest.raises(SystemExit, match=r"not in corpus\.build\.SOURCES: no-such-package"):
        corpus.build(tmp_path, ["no-such-package"])
    assert not (tmp_path / "debs").exists()
