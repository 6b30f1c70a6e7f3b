"""Grouped folds: every group (artist, or track when no artist is known) lies in exactly one test fold, so a head
is always scored on artists it never saw (Pampalk, Flexer & Widmer 2005: without this, genre accuracy is inflated).
"""

from __future__ import annotations

import numpy as np

DEFAULT_FOLDS = 5
INNER_FOLDS = 3  # for the calibration's out-of-fold scores inside each training fold


def grouped_folds(
    groups: list[str], n_splits: int, seed: int, strata: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group-disjoint folds; with ``strata`` (a class per track, e.g. its first label), each fold's class mix is
    kept close to the whole's (StratifiedGroupKFold), so a small class is not all in one fold."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    distinct = len(set(groups))
    if distinct < 2:
        raise ValueError(f"grouped folds need at least 2 groups, got {distinct}")
    n = min(n_splits, distinct)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    if strata is not None:
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        splits = splitter.split(codes, strata, groups=codes)
    else:
        splits = GroupKFold(n_splits=n, shuffle=True, random_state=seed).split(codes, groups=codes)
    return [(train, test) for train, test in splits if len(test)]


def primary_class(targets: np.ndarray) -> np.ndarray:
    """The first true class of each track (the stratum of a multi-label track)."""
    return np.argmax(targets, axis=1)


def assert_disjoint(groups: list[str], folds: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """No group on both sides of any fold, and every track tested exactly once."""
    g = np.asarray(groups)
    tested = np.zeros(len(g), int)
    for train, test in folds:
        overlap = set(g[train]) & set(g[test])
        if overlap:
            raise AssertionError(f"groups on both sides of a fold: {sorted(overlap)[:5]}")
        tested[test] += 1
    if not (tested == 1).all():
        raise AssertionError("a track is tested more or less than once")
