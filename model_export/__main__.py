"""python -m model_export [--out models] [--cache .cache/musicnn] [--force] [NAME ...]"""

from __future__ import annotations

import argparse
from pathlib import Path

from model_export.export import build_all, log
from model_export.tagger import MODELS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to build (default: all of {', '.join(MODELS)})"
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="output folder (default: models)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/musicnn"), help="download cache")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    names = args.names or list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    built = build_all(names, args.out, args.cache, args.force)
    log(f"done: {len(built)} built, {len(names) - len(built)} up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
