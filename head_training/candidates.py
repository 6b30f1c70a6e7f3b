"""The heads compared by grouped cross-validation, each fitted and calibrated on one training set.

* ``logreg-pooled``: one-vs-rest logistic regression (class_weight="balanced": rare subgenres count as much as
  common ones) on the track's mean embedding; served on the mean of the segment embeddings.
* ``logreg-segments``: the same model trained on segments (each labelled with its track's classes, at most
  ``MAX_SEGMENTS_PER_TRACK`` evenly spaced per track so long tracks do not dominate); served as the mean of the
  per-segment probabilities.
* ``mlp-pooled``: one hidden ReLU layer on the mean embedding (scikit-learn's MLPClassifier, multi-label sigmoid
  outputs; it has no class weights).

Calibration: Platt scaling per class, fitted on out-of-fold scores of an inner grouped split of the *training*
set only (never on the fold being evaluated), then folded into the last layer (``head.fold_platt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from head_training.folds import INNER_FOLDS, grouped_folds, primary_class
from head_training.head import Head, fold_platt, fold_standardisation

REGULARISATION_C = 1.0  # inverse L2 strength on standardised inputs: scikit-learn's default
MAX_ITER = 2000  # lbfgs iterations; 200-d standardised inputs converge in far fewer
MAX_SEGMENTS_PER_TRACK = 16
MLP_HIDDEN = 64  # units: 200·64 + 64·classes weights, a few tens of KB
MLP_ALPHA = 1e-3  # L2
MLP_MAX_ITER = 300
PROBABILITY_CLIP = 1e-4  # a class constant in a training set gets this logit floor, not ±inf
BLAS_THREADS_PER_FIT = 1  # per logistic fit; parallelism comes from fitting classes side by side (``jobs``)


@dataclass(frozen=True)
class Candidate:
    name: str
    pooling: str  # head.POOLINGS
    uses_segments: bool
    fit_logits: Callable  # (X, Y, seed, jobs) -> layers on *standardised* X whose last layer gives logits


def _constant_logit(y: np.ndarray) -> float:
    p = float(np.clip(y.mean(), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP))
    return float(np.log(p / (1 - p)))


def _fit_binary_logreg(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """One class's (weights, bias); a class constant in this training set gets the clipped constant logit."""
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        return np.zeros(x.shape[1]), _constant_logit(y)
    model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=MAX_ITER)
    model.fit(x, y)
    return model.coef_[0], float(model.intercept_[0])


def _fit_logreg(x: np.ndarray, y: np.ndarray, seed: int, jobs: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest: the classes are independent fits, run ``jobs`` at a time, each on one BLAS thread.

    Why one BLAS thread: lbfgs on [tracks, 200] spends its time in matrix-vector products, too small for
    OpenBLAS's threads to pay off; at 2 threads on 2 busy cores the threads' hand-offs made one calibrated fit
    of 4000 tracks take 113 CPU-s instead of 3.3 (docs/heads.md, "Training time"). The cores are used by fitting
    classes side by side instead (threads: the arrays are shared, and BLAS and lbfgs release the GIL)."""
    from sklearn.utils.parallel import Parallel, delayed
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=BLAS_THREADS_PER_FIT, user_api="blas"):
        fitted = Parallel(n_jobs=jobs, backend="threading")(
            delayed(_fit_binary_logreg)(x, y[:, c]) for c in range(y.shape[1])
        )
    weights = np.stack([w for w, _ in fitted], axis=1)
    bias = np.array([b for _, b in fitted])
    return [(weights, bias)]


def _fit_mlp(x: np.ndarray, y: np.ndarray, seed: int, jobs: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """One joint fit of every class (``jobs`` has nothing to split): its matrix products are large enough for
    the BLAS threads the environment gives."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=MLP_ALPHA, max_iter=MLP_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget; CV measures what it gives
        model.fit(x, y.astype(int))
    return [(w.astype(np.float64), b.astype(np.float64)) for w, b in zip(model.coefs_, model.intercepts_)]


CANDIDATES = {
    c.name: c
    for c in (
        Candidate("logreg-pooled", "mean_embedding", False, _fit_logreg),
        Candidate("logreg-segments", "mean_scores", True, _fit_logreg),
        Candidate("mlp-pooled", "mean_embedding", False, _fit_mlp),
    )
}


def _logits(layers, x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def _platt(logits: np.ndarray, usable: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class (slope, offset) of sigmoid(slope·z + offset), fitted to y with Platt's (1999) smoothed targets
    (N+ + 1)/(N+ + 2) and 1/(N- + 2): on separable scores the plain fit's slope runs to infinity and the
    probabilities saturate to exact 0 and 1 (ties that ruin the ranking on unseen artists). Unweighted: the
    probabilities are of the collection's real class frequencies."""
    from sklearn.linear_model import LogisticRegression

    slope, offset = np.ones(y.shape[1]), np.zeros(y.shape[1])
    for c in range(y.shape[1]):
        rows = usable[:, c]
        yc = y[rows, c]
        positives = int(yc.sum())
        negatives = len(yc) - positives
        if positives == 0 or negatives == 0:  # no usable out-of-fold scores: keep the model's own logits
            continue
        target = np.where(yc == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
        z = logits[rows, c : c + 1]
        # Soft targets as two weighted copies of each score: one positive (weight t), one negative (1 - t).
        model = LogisticRegression(C=1e6, max_iter=MAX_ITER).fit(
            np.concatenate([z, z]), np.r_[np.ones(len(z)), np.zeros(len(z))], sample_weight=np.r_[target, 1 - target]
        )
        slope[c], offset[c] = model.coef_[0, 0], model.intercept_[0]
    return slope, offset


def training_matrix(
    candidate: Candidate, rows: np.ndarray, pooled: np.ndarray, segments, targets: np.ndarray, groups: np.ndarray
):
    """The rows a candidate learns from for the given tracks: their pooled embeddings, or their segments."""
    if not candidate.uses_segments:
        return pooled[rows], targets[rows], groups[rows]
    xs, ys, gs = [], [], []
    for r in rows:
        seg = segments[r]
        pick = np.unique(np.linspace(0, len(seg) - 1, min(len(seg), MAX_SEGMENTS_PER_TRACK)).round().astype(int))
        xs.append(seg[pick])
        ys.append(np.repeat(targets[r : r + 1], len(pick), axis=0))
        gs.append(np.repeat(groups[r : r + 1], len(pick)))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def fit(
    candidate: Candidate,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    seed: int,
    calibrate: bool = True,
    jobs: int = 1,
) -> Head:
    """Fit on (x, y), calibrate on inner grouped out-of-fold logits, fold it all into a Head. ``jobs``: classes
    fitted side by side by the one-vs-rest candidates (the result does not depend on it)."""
    from sklearn.preprocessing import StandardScaler

    x64 = x.astype(np.float64)
    scaler = StandardScaler().fit(x64)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    xs = (x64 - scaler.mean_) / scale
    y = y.astype(int)
    layers = candidate.fit_logits(xs, y, seed, jobs)
    if calibrate:
        slope, offset = _platt(*_inner_oof_logits(candidate, xs, y, groups, seed, jobs), y)
        layers[-1] = fold_platt(*layers[-1], slope, offset)
    layers[0] = fold_standardisation(*layers[0], scaler.mean_, scale)
    return Head(candidate.name, candidate.pooling, [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers])


def _inner_oof_logits(candidate: Candidate, xs: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, jobs: int):
    """Out-of-fold logits of an inner grouped split, and per (row, class) whether they are usable: a class with
    no positive (or no negative) in an inner training set gives constant logits that say nothing about ranking,
    and would pull Platt's slope the wrong way."""
    if len(set(groups.tolist())) < 2:
        return _logits(candidate.fit_logits(xs, y, seed, jobs), xs), np.ones(y.shape, bool)  # in-sample (optimistic)
    oof = np.zeros(y.shape, np.float64)
    usable = np.zeros(y.shape, bool)
    for train, test in grouped_folds(groups.tolist(), INNER_FOLDS, seed, primary_class(y)):
        oof[test] = _logits(candidate.fit_logits(xs[train], y[train], seed, jobs), xs[test])
        usable[test] = (y[train].min(axis=0) != y[train].max(axis=0))[None, :]
    return oof, usable
