"""Scores of out-of-fold class probabilities: per class ROC-AUC and PR-AUC (average precision: what shows rare
classes), and over tracks the top-1/top-3 hit rate (the best-ranked class(es) include a true one) and the expected
calibration error (probabilities that say 0.8 should be right 80 % of the time)."""

from __future__ import annotations

import numpy as np

ECE_BINS = 10  # equal-width probability bins


def expected_calibration_error(targets: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Over every (track, class) pair: Σ_bins (pairs in bin / pairs) · |mean probability − fraction true|."""
    p = probabilities.reshape(-1).astype(np.float64)
    y = targets.reshape(-1).astype(np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(error)


def hit_rate(targets: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(targets, top, axis=1).any(axis=1).mean())


def evaluate(targets: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    per_class: dict[str, dict] = {}
    for i, name in enumerate(classes):
        y, p = targets[:, i], probabilities[:, i]
        both = 0 < y.sum() < len(y)  # an AUC needs positives and negatives
        per_class[name] = {
            "positives": int(y.sum()),
            "roc_auc": round(float(roc_auc_score(y, p)), 4) if both else None,
            "pr_auc": round(float(average_precision_score(y, p)), 4) if both else None,
            "prevalence": round(float(y.mean()), 4),
        }
    roc = [m["roc_auc"] for m in per_class.values() if m["roc_auc"] is not None]
    pr = [m["pr_auc"] for m in per_class.values() if m["pr_auc"] is not None]
    macro = {
        "roc_auc": round(float(np.mean(roc)), 4) if roc else None,
        "pr_auc": round(float(np.mean(pr)), 4) if pr else None,
        "top1": round(hit_rate(targets, probabilities, 1), 4),
        "top3": round(hit_rate(targets, probabilities, 3), 4),
        "ece": round(expected_calibration_error(targets, probabilities), 4),
        "tracks": len(targets),
    }
    return {"per_class": per_class, "macro": macro}
