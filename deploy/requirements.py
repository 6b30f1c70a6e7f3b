"""Print the requirement lines of pyproject.toml, one per line, for `pip install -r` in the Docker build.

    python deploy/requirements.py                        # [project].dependencies: the runtime set
    python deploy/requirements.py --extra export         # runtime + the `export` extra (model build stage)
    python deploy/requirements.py --exclude onnxruntime  # runtime without onnxruntime (the GPU image adds it as -gpu)

Standard library only (tomllib, Python 3.11+): it runs in bare base images before anything is installed.
Versions are not pinned here: the build passes `-c constraints.txt`.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def distribution_name(requirement: str) -> str:
    """PEP 503-normalised distribution name of a requirement line ("uvicorn[standard]>=0.30" -> "uvicorn")."""
    match = NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(
    pyproject: Path, extras: list[str] | tuple[str, ...] = (), exclude: list[str] | tuple[str, ...] = ()
) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no optional-dependencies group {extra!r} (have {sorted(optional)})")
        lines += optional[extra]
    excluded = {distribution_name(name) for name in exclude}
    return [line for line in lines if distribution_name(line) not in excluded]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="also list this optional-dependencies group")
    parser.add_argument("--exclude", action="append", default=[], help="leave out this distribution")
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.pyproject, args.extra, args.exclude)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
