"""Shared fixtures. Keep this file small: fixtures used by one test module belong in that module."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The repo's ``models/`` with all four exported models (<name>.onnx + <name>.json) built and up to date.

    Runs ``build_all`` (a no-op when up to date, ~25 s otherwise). A failed build fails the tests that need the
    models; it never skips them.
    """
    from model_export.export import build_all  # lazily: needs the `export` extra (torch, onnx, librosa)
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
