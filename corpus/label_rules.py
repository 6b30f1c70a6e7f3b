"""The rules that wrote ``corpus/labels.csv``: each label, its reason and its kind of evidence, per track.

``python -m corpus.label_rules --dest /work/corpus`` reads ``DEST/corpus.csv`` (built *without* a labels file,
so artists and albums are the packages' own) and the files' tags, and rewrites ``corpus/labels.csv``. The CSV
in git is the record; this module shows how each row came about (docs/corpus.md, "How the labels were decided").
No rule looks at any model's output.
"""

import argparse
import csv
from pathlib import Path

from corpus.build import LABEL_COLUMNS, LABELS_CSV, NO_ARTIST, cv_group, tags

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--dest", type=Path, required=True)
args = parser.parse_args()
with open(args.dest / "corpus.csv", newline="", encoding="utf-8") as corpus_csv:
    rows = {r["track_id"]: r for r in csv.DictReader(corpus_csv)}
out = []


def add(tid, label, reason, evidence, artist=None, album=None, group=None):
    r = rows[tid]
    artist = artist or r["artist"]
    album = album or r["album"]
    group = group or cv_group(artist, album)
    out.append(
        dict(
            track_id=tid,
            label=label,
            artist=artist,
            album=album,
            label_reason=reason,
            evidence=evidence,
            cv_group=group,
        )
    )


def genre(tid):
    return tags(Path(rows[tid]["path"])).get("genre", "")


KENTA = {
    "parsec47-data": "PARSEC47",
    "rrootage-data": "rRootage",
    "noiz2sa-data": "Noiz2sa",
    "tumiki-fighters-data": "TUMIKI Fighters",
    "torus-trooper-data": "Torus Trooper",
    "gunroar-data": "Gunroar",
    "titanion-data": "Titanion",
}
for tid, r in rows.items():
    p = r["package"]
    if p == "wesnoth-1.16-music":
        g = genre(tid)
        if g == "Romantic Classical":
            add(
                tid,
                "orchestral",
                "Wesnoth OST; composer's GENRE tag 'Romantic Classical' (orchestral score)",
                "documented",
            )
        else:
            add(
                tid,
                "orchestral",
                f"Wesnoth OST orchestral score; this file's genre tag is {g or 'absent'!r}, the rest of the OST is tagged 'Romantic Classical'",
                "documented",
            )
    elif p == "fretsonfire-songs-muldjord":
        stem = "guitar stem" if tid.endswith("_guitar") else "backing stem (all but lead guitar)"
        add(
            tid,
            "rock_metal",
            f"GENRE tag 'Death Metal'; copyright: composed by El Senator of the Danish metal band Muldjord; Frets on Fire {stem}",
            "documented",
            artist="Muldjord (El Senator)",
            album="Muldjord Frets on Fire song pack",
        )
    elif p == "fretsonfire-songs-sectoid":
        stem = "guitar stem" if tid.endswith("_guitar") else "backing stem (all but lead guitar)"
        song = tid.split("/")[1].rsplit("_", 1)[0].replace("_", " ")
        ev = "documented" if "Metal" in song else "curator"
        add(
            tid,
            "rock_metal",
            f"Sectoid's Frets on Fire song pack '{song}' (guitar-game song with separate guitar track), {stem}"
            + ("; title says metal" if ev == "documented" else "; rock/metal: curator judgement of the pack"),
            ev,
            album="Sectoid Frets on Fire song pack",
        )
    elif p == "marsshooter-data":
        g = genre(tid)
        if g:
            add(tid, "rock_metal", f"Obsidian Shell (band, copyright file); GENRE tag {g!r}", "documented")
        else:
            add(
                tid,
                "rock_metal",
                "Obsidian Shell (band, copyright file) album used by M.A.R.S.; half of its tracks are tagged 'Female Fronted Metal', this one untagged",
                "curator",
            )
    elif p in KENTA:
        add(
            tid,
            "electronic",
            f"Kenta Cho's {KENTA[p]} shoot-'em-up loops; tag 'Made with Sonic Foundry ACID 3' (loop-sequencer production); electronic/techno by curator judgement",
            "curator",
            album=f"{KENTA[p]} soundtrack",
        )
    elif tid == "warzone2100-music/albums_aftermath_soundtrack_track3_enhanced":
        # a remaster of Martin Severn's track 3 (license.txt): kept in his group so no split separates the two
        add(
            tid,
            "electronic",
            "Warzone 2100: LupusMechanicus's remaster of Martin Severn's original track 3 (albums' license.txt); synthesizer-based electronic score, curator judgement",
            "curator",
            group="Martin Severn",
        )
    elif p == "warzone2100-music" and "/albums_" in tid:
        add(
            tid,
            "electronic",
            f"Warzone 2100: album '{r['album']}' (album.json) by {r['artist']}: synthesizer-based electronic score, curator judgement (no genre in the package)",
            "curator",
        )
    elif tid == "freedroidrpg-data/temple":
        add(
            tid,
            "electronic",
            "GENRE tag 'dnb' (drum and bass); Arvid Picciani credited for music in FreedroidRPG's Credits.lua",
            "documented",
        )
    elif tid == "supertux-data/antarctic_airship_remix":
        add(tid, "orchestral", "title 'Airship Song Orchestral Mix'", "documented")
    elif tid == "warmux-data/menu_Divertissement_pour_flute":
        add(tid, "orchestral", "GENRE tag 'Classique'; title: a divertimento for flute", "documented")
    elif p == "flare-game" and tid != "flare-game/wind_ambient":
        add(
            tid,
            "orchestral",
            "Flare (fantasy action-RPG) score, orchestral/cinematic by curator judgement; no genre or composer in the package",
            "curator",
        )
    elif tid in ("widelands-data/ingame_15", "widelands-data/ingame_16", "widelands-data/ingame_17"):
        add(
            tid,
            "rock_metal",
            f"GENRE tag {genre(tid)!r} (thrash metal) by MiddleFinger, Widelands soundtrack",
            "documented",
        )
    elif tid == "widelands-data/ingame_18":
        add(tid, "orchestral", "title 'orchestralsample' (Nikola Whallon, Widelands soundtrack)", "documented")
    elif tid == "megaglest-data/techs_megapack_factions_romans_music_romans":
        add(tid, "orchestral", "GENRE tag 'Classical' (Eliminator, MegaGlest Romans faction music)", "documented")
    elif tid == "tuxtype-data/chiptune2":
        add(tid, "chiptune_retro", "title 'Chiptune2'", "documented")
    elif tid == "supertux-data/antarctic_chipdisko":
        add(tid, "chiptune_retro", "title 'Mortimer's Chipdisko'", "documented")
    elif tid == "btanks-data/gameboy":
        add(
            tid,
            "chiptune_retro",
            "title 'gameboy' (Battle Tanks OST album tag)",
            "documented",
            album="Battle Tanks OST",
        )
    elif p == "supertux-data" and "/retro_" in tid:
        zhay = tags(Path(r["path"])).get("artist", "").startswith("http://zhaymusic.com")
        add(
            tid,
            "chiptune_retro",
            "SuperTux's own 'retro' music folder (music of the early SuperTux releases); retro game-music style by curator judgement"
            + ("; artist tag is zhaymusic.com, Zhaytee's site" if zhay else ""),
            "curator",
            artist="Joseph G. Toscano (Zhaytee)" if zhay else "unknown",  # the curator's word: no artist
            album="SuperTux retro music",
        )
    elif tid == "freedroidrpg-data/TheBeginning":
        add(
            tid,
            "ambient",
            "GENRE tag 'ambient'; 'The Beginning by 4t thieves' in FreedroidRPG's Credits.lua",
            "documented",
            artist="4T Thieves",
        )
    elif tid in ("freedroidrpg-data/Ambience", "freedroidrpg-data/AmbientBattle"):
        add(tid, "ambient", f"title '{r['title']}'", "documented", album="FreedroidRPG soundtrack")
    elif tid == "flare-game/wind_ambient":
        add(tid, "ambient", "GENRE tag 'Ambient'; title 'Wind Ambient'", "documented")
    elif tid == "warmux-data/ingame_construction":
        add(tid, "ambient", "GENRE tag 'Ambiance'", "documented", album="WarMUX soundtrack")

out.sort(key=lambda r: (r["label"], r["track_id"]))
with open(LABELS_CSV, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=LABEL_COLUMNS)
    w.writeheader()
    w.writerows(out)
for lab in sorted({r["label"] for r in out}):
    rs = [r for r in out if r["label"] == lab]
    print(
        f"{lab:15s} tracks={len(rs):3d} groups={len({r['cv_group'] for r in rs}):2d} artists_known={len({r['artist'] for r in rs if r['artist'] not in (NO_ARTIST, 'unknown')}):2d} albums={len({r['album'] for r in rs}):2d} documented={sum(r['evidence'] == 'documented' for r in rs):3d}"
    )
print(len(out), "labelled tracks")
