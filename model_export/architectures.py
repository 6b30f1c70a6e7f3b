"""musicnn's two architectures (musicnn 0.1.0 ``models.py``) as ONNX graphs, in inference mode, with TF1 weights.

Read alongside the original: the log-mel input enters as NCHW [batch, 1, time 187, freq 96] where TF used NHWC
with the same axes meaning. Every TF conv/dense is followed, as in the original, by its activation and then
batch normalisation with the moving statistics (TF's epsilon 0.001), kept as BatchNormalization nodes (after a
ReLU they cannot be folded into the conv). Dropout is the identity at inference and is omitted.

Weights are read by TF1's layer names in creation order (`conv2d`, `conv2d_1`, …; `batch_normalization`,
`batch_normalization_1`, …; vgg's `1CNN`…`5CNN`), from a mapping that tagger.py checks for completeness.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from model_export.graph import GraphBuilder

Weights = Mapping[str, np.ndarray]

TF_BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
N_MELS = 96

# musicnn's "7774timbraltemporal" front-end with num_filt = 1.6
TIMBRAL_FILTERS = int(1.6 * 128)  # 204
TEMPORAL_FILTERS = int(1.6 * 32)  # 51
TIMBRAL_KERNELS = ((7, int(0.4 * N_MELS)), (7, int(0.7 * N_MELS)))  # (time, freq): (7, 38), (7, 67)
TEMPORAL_KERNEL_FRAMES = (128, 64, 32)
MIDEND_KERNEL_FRAMES = 7
MIDEND_FILTERS = 64
MIDEND_LAYERS = 3
FRONTEND_FEATURES = 2 * TIMBRAL_FILTERS + 3 * TEMPORAL_FILTERS  # 561
POOLED_FEATURES = FRONTEND_FEATURES + MIDEND_LAYERS * MIDEND_FILTERS  # 753
DENSE_UNITS = 200
MUSICNN_CONV_LAYERS = len(TIMBRAL_KERNELS) + len(TEMPORAL_KERNEL_FRAMES) + MIDEND_LAYERS  # 8

VGG_FILTERS = 128
VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))  # (size, stride)
VGG_POOL5_FEATURES = 2 * 1 * VGG_FILTERS  # pool5 is [time 2, freq 1, 128 channels] for a 187×96 patch


def tf_same_time_padding(kernel_frames: int) -> tuple[int, int]:
    """(before, after) frames reproducing TF 'same' along time for stride 1: the odd extra frame goes at the end."""
    before = (kernel_frames - 1) // 2
    return before, kernel_frames - 1 - before


def bn_name(index: int) -> str:
    """TF1 layers are named by creation order: batch_normalization, batch_normalization_1, ..."""
    return "batch_normalization" if index == 0 else f"batch_normalization_{index}"


def batch_norm(
    g: GraphBuilder, x: str, weights: Weights, name: str, output: str | None = None, order: np.ndarray | None = None
) -> str:
    """Inference batch normalisation over axis 1 with TF's moving statistics; `order` permutes the channels."""
    params = {p: weights[f"{name}/{p}"] for p in BATCH_NORM_PARAMS}  # ONNX's input order too
    names = [g.weight(f"{name}/{p}", v if order is None else v[order]) for p, v in params.items()]
    return g.op("BatchNormalization", x, *names, epsilon=TF_BATCH_NORM_EPSILON, output=output)


def conv_relu_bn(
    g: GraphBuilder, x: str, weights: Weights, conv: str, bn: str, pads: list[int], kernel: np.ndarray | None = None
) -> str:
    """tf.compat.v1.layers.conv2d(activation=relu) then batch_normalization, as musicnn stacks them. The kernel is
    TF's HWIO → ONNX's OIHW unless given already laid out; pads are ONNX's [begins..., ends...]."""
    kernel = weights[f"{conv}/kernel"].transpose(3, 2, 0, 1) if kernel is None else kernel
    w, b = g.weight(f"{conv}/kernel", kernel), g.weight(f"{conv}/bias", weights[f"{conv}/bias"])
    return batch_norm(g, g.op("Relu", g.op("Conv", x, w, b, pads=pads)), weights, bn)


def dense(g: GraphBuilder, x: str, weights: Weights, name: str, rows: np.ndarray | None = None) -> str:
    """x·kernel + bias with TF's [in, out] kernel; `rows` permutes the kernel's input rows."""
    kernel = weights[f"{name}/kernel"]
    kernel = kernel if rows is None else kernel[rows]
    return g.op("Gemm", x, g.weight(f"{name}/kernel", kernel), g.weight(f"{name}/bias", weights[f"{name}/bias"]))


# ---- musicnn ----------------------------------------------------------------------------------------------------


def midend_kernel(kernel: np.ndarray) -> np.ndarray:
    """TF's [7, features, 1, 64] kernel, a 2-D conv spanning all features, as the equivalent 1-D conv's
    [64, features, 7]: the features become channels and no transposes are needed between layers."""
    return kernel[:, :, 0, :].transpose(2, 1, 0)


def pooled_order() -> np.ndarray:
    """TF concatenated [B, 753, 1] max and mean on the last axis and flattened: features interleave as (max, mean).
    The graph concatenates [max, mean] instead; this is where each of its 1506 features sits in TF's order."""
    return np.concatenate([np.arange(0, 2 * POOLED_FEATURES, 2), np.arange(1, 2 * POOLED_FEATURES, 2)])


def musicnn_conv_names():
    """(conv, batch norm) TF names of musicnn's conv layers in creation order: timbral, temporal, mid-end."""
    for i in range(MUSICNN_CONV_LAYERS):
        yield ("conv2d" if i == 0 else f"conv2d_{i}"), bn_name(i + 1)  # bn 0 is the input's


def musicnn(g: GraphBuilder, logmel: str, weights: Weights) -> dict[str, str]:
    """[B, T, 96] log-mel → tags, embedding (`penultimate`), mean_pool, max_pool."""
    x = batch_norm(g, g.op("Unsqueeze", logmel, g.ints("channel_axis", [1])), weights, bn_name(0))  # [B, 1, T, 96]
    freq_axis, time_axis = g.ints("freq_axis", [3]), g.ints("time_axis", [2])
    names = musicnn_conv_names()

    # front-end: 'same' along time only (frequency stays 'valid'), each branch max-pooled over all frequencies
    branches = []
    for kernel_frames in [k for k, _ in TIMBRAL_KERNELS] + list(TEMPORAL_KERNEL_FRAMES):
        before, after = tf_same_time_padding(kernel_frames)
        branches.append(conv_relu_bn(g, x, weights, *next(names), pads=[before, 0, after, 0]))
    front = g.op("Concat", *(g.op("ReduceMax", b, freq_axis, keepdims=0) for b in branches), axis=1)  # [B, 561, T]

    # mid-end: three convs over 7 frames spanning all features, the last two residual
    layers, features = [front], front
    half = MIDEND_KERNEL_FRAMES // 2
    for index, (conv, bn) in enumerate(names):
        kernel = midend_kernel(weights[f"{conv}/kernel"])
        out = conv_relu_bn(g, features, weights, conv, bn, pads=[half, half], kernel=kernel)  # [B, 64, T]
        features = out if index == 0 else g.op("Add", out, features)
        layers.append(features)
    all_features = g.op("Concat", *layers, axis=1)  # [B, 753, T]

    # back-end: temporal pooling, batch norm, dense, batch norm (the embedding), classifier
    max_pool = g.op("ReduceMax", all_features, time_axis, keepdims=0, output="max_pool")
    mean_pool = g.op("ReduceMean", all_features, time_axis, keepdims=0, output="mean_pool")
    order = pooled_order()
    pooled_bn, dense_bn = bn_name(MUSICNN_CONV_LAYERS + 1), bn_name(MUSICNN_CONV_LAYERS + 2)
    pooled = batch_norm(g, g.op("Concat", max_pool, mean_pool, axis=1), weights, pooled_bn, order=order)
    hidden = g.op("Relu", dense(g, pooled, weights, "dense", rows=order))
    embedding = batch_norm(g, hidden, weights, dense_bn, output="embedding")
    g.op("Sigmoid", dense(g, embedding, weights, "dense_1"), output="tags")
    return {"tags": "tags", "embedding": embedding, "mean_pool": mean_pool, "max_pool": max_pool}


# ---- vgg --------------------------------------------------------------------------------------------------------


def vgg(g: GraphBuilder, logmel: str, weights: Weights) -> dict[str, str]:
    """[B, T, 96] log-mel → tags, embedding (`pool5`): five 3×3 conv blocks with max pooling, a linear classifier."""
    x = batch_norm(g, g.op("Unsqueeze", logmel, g.ints("channel_axis", [1])), weights, bn_name(0))
    for i, (size, stride) in enumerate(VGG_POOLS):
        x = conv_relu_bn(g, x, weights, f"{i + 1}CNN", bn_name(i + 1), pads=[1, 1, 1, 1])
        x = g.op("MaxPool", x, kernel_shape=list(size), strides=list(stride))
    # flatten in TF's NHWC order, as the dense kernel expects; 0 keeps the batch dimension
    nhwc = g.op("Transpose", x, perm=[0, 2, 3, 1])
    embedding = g.op("Reshape", nhwc, g.ints("flat_shape", [0, VGG_POOL5_FEATURES]), output="embedding")
    g.op("Sigmoid", dense(g, embedding, weights, "dense"), output="tags")
    return {"tags": "tags", "embedding": embedding}
