"""A trained head as plain arrays: dense layers (ReLU between, sigmoid at the end) with the input standardisation
and the per-class calibration folded into the weights.

Folding keeps the exported graph exact and tiny (MatMul + Add [+ Relu] ... + Sigmoid): standardising is affine, so
it merges into the first layer; Platt scaling, sigmoid(a·z + c), is affine in the last layer's output z, so it
merges into the last layer. What the graph computes is what ``Head.scores`` computes, in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POOLINGS = ("mean_embedding", "mean_scores")  # head(mean of segment embeddings) | mean of head(segment)


@dataclass
class Head:
    kind: str  # candidate name, e.g. "logreg-pooled"
    pooling: str
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weights [in, out], bias [out]), float32

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities for each row of ``embeddings`` [n, dim] → [n, classes] (float32, like the graph)."""
        x = np.asarray(embeddings, np.float32)
        for i, (weights, bias) in enumerate(self.layers):
            x = x @ weights + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0)
        return (1 / (1 + np.exp(-x))).astype(np.float32)

    def track_scores(self, pooled: np.ndarray, segments: list[np.ndarray] | None) -> np.ndarray:
        """Track-level probabilities [tracks, classes] under this head's pooling."""
        if self.pooling == "mean_embedding":
            return self.scores(pooled)
        return np.stack([self.scores(s).astype(np.float64).mean(axis=0) for s in segments]).astype(np.float32)


def fold_standardisation(weights: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray):
    """(x - mean) / scale @ W + b  ==  x @ (W / scale) + (b - (mean / scale) @ W)."""
    folded = weights / scale[:, None]
    return folded, bias - (mean / scale) @ weights


def fold_platt(weights: np.ndarray, bias: np.ndarray, slope: np.ndarray, offset: np.ndarray):
    """sigmoid(slope · (x @ W + b) + offset)  ==  sigmoid(x @ (W · slope) + (slope · b + offset))."""
    return weights * slope[None, :], bias * slope + offset
