"""The runtime dependency set is complete: every third-party module that ``service/`` imports is installed by
``pip install taggram`` without extras (or, for a module imported only where it is installed, by an extra of
``OPTIONAL_RUNTIME_EXTRAS``).

Before this test, ``soundfile`` was imported by the second decoder but listed by no runtime dependency: every venv the
tests ran in had it only through librosa (an export/test extra), and the image crashed at import. The fast check below
reads ``pyproject.toml`` and the installed distributions' metadata; the slow one installs the runtime set alone into
a fresh venv and starts what the image runs.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = REPO_ROOT / "service"


def imported_top_level_modules(package: Path) -> set[str]:
    """Top-level names of every absolute import in the package (relative imports stay inside it)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"service", "__future__"}


# Extras the service imports only behind a check that they are installed (without them it runs as before): cpu-bf16's
# openvino (service/engine/run_openvino.py; tests/integration/test_runtime_install.py serves without it).
OPTIONAL_RUNTIME_EXTRAS = ("cpu-bf16",)


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    optional = [text for extra in OPTIONAL_RUNTIME_EXTRAS for text in project["optional-dependencies"][extra]]
    return [Requirement(text) for text in project["dependencies"] + optional]


def distribution_closure(requirements: list[Requirement]) -> set[str]:
    """Normalised names of the distributions these requirements install (installed metadata, no extras)."""
    seen: set[str] = set()
    pending = [(req, frozenset(req.extras)) for req in requirements]
    while pending:
        req, extras = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(req.name).metadata["Name"].lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(req.name) or []:
            child = Requirement(text)
            if child.marker is not None and not any(child.marker.evaluate({"extra": e}) for e in (*extras, "")):
                continue
            pending.append((child, frozenset(child.extras)))
    return {key.split("[")[0] for key in seen}


# Modules service/ imports only inside an offline option that says which extra it needs (and fails with that
# message without it): module → the extra that installs it. Never imported by `taggram serve`.
OPTIONAL_IMPORTS = {"openTSNE": "map"}  # `taggram index build --projection tsne` (docs/catalog.md)


def test_every_module_the_service_imports_comes_with_the_runtime_dependencies():
    provided_by = metadata.packages_distributions()
    installed = distribution_closure(runtime_requirements())
    missing = {
        module: provided_by.get(module, ["(not installed)"])
        for module in sorted(imported_top_level_modules(SERVICE) - set(OPTIONAL_IMPORTS))
        if not {d.lower().replace("_", "-") for d in provided_by.get(module, [])} & installed
    }
    assert not missing, f"service/ imports modules no runtime dependency installs: {missing}"


def test_each_optional_import_is_listed_by_its_extra():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, extra in OPTIONAL_IMPORTS.items():
        assert module in imported_top_level_modules(SERVICE)  # still used, or remove it from the list
        assert any(Requirement(text).name.lower() == module.lower() for text in extras[extra]), (module, extra)
