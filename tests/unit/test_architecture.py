"""The import rule of the house (README, "Architecture"): which package may import which, read from the source's
import statements (every ``import``/``from … import``, at module level or inside a function; relative imports
resolved), so a forbidden arrow fails here, whatever path the code would take at run time."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

OUTSIDE_THE_SERVICE = ("bench", "corpus", "tests", "head_training", "model_export")
# importer package → packages it must never import (a package covers its sub-modules)
FORBIDDEN = {
    "service.engine": ("service.api",),  # no arrow from the engine up to the HTTP layer
    "service.decode": ("service.api",),
    "service.artefacts": ("service.api",),
    "service.offline": ("service.api",),  # the offline commands use the engine, never the HTTP layer
    "service": OUTSIDE_THE_SERVICE,  # the service ships alone (the runtime image holds service/ only)
    "tests": ("bench",),  # benchmarks measure; tests never depend on them
}
# importer package → the only parts of service/ it may import
ONLY_ALLOWED = {
    "service.decode": ("service.decode", "service.config", "service.errors"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module ``source`` (the text of ``path``) imports; ``from a import b`` yields
    ``a`` and ``a.b`` (b may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(path: Path, source: str | None = None) -> list[str]:
    """Every import in ``path`` (or in ``source``, read as if it were ``path``) the rule forbids, as
    ``file:line imports module (rule)``."""
    importer = module_name(path)
    found = []
    for line, imported in imported_modules(path, path.read_text() if source is None else source):
        for package, forbidden in FORBIDDEN.items():
            if within(importer, package) and any(within(imported, f) for f in forbidden):
                found.append(
                    f"{path.relative_to(REPO_ROOT)}:{line} imports {imported} ({package} never imports "
                    f"{', '.join(forbidden)})"
                )
        for package, allowed in ONLY_ALLOWED.items():
            if (
                within(importer, package)
                and within(imported, "service")
                and imported != "service"
                and not any(within(imported, a) for a in allowed)
            ):
                found.append(
                    f"{path.relative_to(REPO_ROOT)}:{line} imports {imported} ({package} imports only "
                    f"{', '.join(allowed)} of service/)"
                )
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO_ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["service", "tests"])
def test_no_module_imports_what_its_layer_may_not(folder):
    found = [v for path in sources(folder) for v in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("importer", "source", "seen"),
    [
        ("service/engine/probe.py", "import service.api.app", "service.api.app"),
        ("service/engine/probe.py", "from service import api", "service.api"),
        ("service/engine/probe.py", "from ..api.upload import read_upload", "service.api.upload"),
        (
            "service/offline/backfill/probe.py",
            "def f():\n    from service.api.responses import X",
            "service.api.responses",
        ),
        ("service/decode/probe.py", "from service.engine.patch import patch_count", "service.engine.patch"),
        ("service/artefacts/probe.py", "import bench.common", "bench.common"),
        ("tests/unit/probe.py", "from bench.common import x", "bench.common"),
    ],
)
def test_the_checker_sees_every_kind_of_forbidden_import(importer, source, seen):
    """Absolute, from-, relative and function-level imports of a forbidden module are all reported."""
    found = violations(REPO_ROOT / importer, source)
    assert any(f"imports {seen}" in v for v in found), found


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("service/offline/probe.py", "from service.engine.cache import cache_key"),
        (
            "service/decode/probe.py",
            "from service.config import Settings\nfrom service.decode.facts import DecodeFacts",
        ),
        ("service/decode/probe.py", "from . import facts\nimport numpy"),
        ("service/api/probe.py", "from service.engine.pipeline import analyse"),
    ],
)
def test_the_checker_lets_the_allowed_arrows_pass(importer, source):
    assert violations(REPO_ROOT / importer, source) == []
