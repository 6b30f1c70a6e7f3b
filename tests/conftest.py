"""Shared fixtures. Keep this file small: fixtures used by one test module belong in that module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.serve_process import TEST_PRECISION

# In-process Settings() read it too: the suite's expected numbers are fp32's (see TEST_PRECISION).
os.environ.update(TEST_PRECISION)

REPO_ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "system")  # tests/<tier>/: the folder is the tier, its marker is applied here


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test with its folder's tier, and holds the unit tier to its promise: no exported models."""
    for item in items:
        tier = Path(item.path).relative_to(REPO_ROOT / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)
        if tier == "unit" and "models_dir" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid}: a unit test may not need the exported models (move it to tests/integration)"
            )


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The repo's ``models/`` with all four exported models (<name>.onnx + <name>.json) built and up to date.

    Runs ``build_all`` (a no-op when up to date, ~25 s otherwise). A failed build fails the tests that need the
    models; it never skips them.
    """
    from model_export.export import build_all  # lazily: needs the `export` extra (onnx, librosa)
    from model_export.tagger import MODELS

    out_dir = REPO_ROOT / "models"
    try:
        build_all(list(MODELS), out_dir, cache_dir=REPO_ROOT / ".cache" / "musicnn")
    except Exception as error:  # noqa: BLE001 - any build failure must fail, with its cause in the report
        pytest.fail(f"building the models into {out_dir} failed: {error!r}", pytrace=True)
    files = [out_dir / f"{name}{ext}" for name in MODELS for ext in (".onnx", ".json")]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        pytest.fail(f"build_all succeeded but {out_dir} lacks {missing}")
    return out_dir
