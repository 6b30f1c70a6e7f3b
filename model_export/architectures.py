"""musicnn's two architectures (musicnn 0.1.0 ``models.py``), in inference mode, with TF1 weights.

Read alongside the original: tensors are NCHW here where TF used NHWC, with the same axes meaning
H = time (187 frames) and W = frequency (96 mel bands). Every TF conv/dense is followed, as in the original,
by its activation and then batch normalisation with the moving statistics (TF's epsilon 0.001). Dropout is
the identity at inference and is omitted.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TF_BATCH_NORM_EPSILON = 1e-3
N_MELS = 96

# musicnn's "7774timbraltemporal" front-end with num_filt = 1.6
TIMBRAL_FILTERS = int(1.6 * 128)  # 204
TEMPORAL_FILTERS = int(1.6 * 32)  # 51
TIMBRAL_KERNELS = ((7, int(0.4 * N_MELS)), (7, int(0.7 * N_MELS)))  # (time, freq): (7, 38), (7, 67)
TEMPORAL_KERNEL_FRAMES = (128, 64, 32)
MIDEND_KERNEL_FRAMES = 7
MIDEND_FILTERS = 64
FRONTEND_FEATURES = 2 * TIMBRAL_FILTERS + 3 * TEMPORAL_FILTERS  # 561
POOLED_FEATURES = FRONTEND_FEATURES + 3 * MIDEND_FILTERS  # 753
DENSE_UNITS = 200

VGG_FILTERS = 128
VGG_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))  # (size, stride)
VGG_POOL5_FEATURES = 2 * 1 * VGG_FILTERS  # pool5 is [time 2, freq 1, 128 channels] for a 187×96 patch


def tf_same_time_padding(kernel_frames: int) -> tuple[int, int, int, int]:
    """F.pad amounts reproducing TF 'same' along time for stride 1: the odd extra frame goes at the end."""
    before = (kernel_frames - 1) // 2
    return (0, 0, before, kernel_frames - 1 - before)


def pad_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    return F.pad(x, (0, 0, frames, frames))


class ConvReluBatchNorm(nn.Module):
    """tf.compat.v1.layers.conv2d(activation=relu) followed by batch_normalization, as musicnn stacks them."""

    def __init__(self, in_channels: int, filters: int, kernel: tuple[int, int], padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, kernel, padding=padding)
        self.bn = nn.BatchNorm2d(filters, eps=TF_BATCH_NORM_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusiCNN(nn.Module):
    """Musically motivated CNN (Pons & Serra): timbral + temporal front-end, dense mid-end, pooled back-end."""

    def __init__(self, num_classes: int = 50) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BATCH_NORM_EPSILON)
        self.timbral = nn.ModuleList(ConvReluBatchNorm(1, TIMBRAL_FILTERS, k) for k in TIMBRAL_KERNELS)
        self.temporal = nn.ModuleList(ConvReluBatchNorm(1, TEMPORAL_FILTERS, (k, 1)) for k in TEMPORAL_KERNEL_FRAMES)
        self.midend = nn.ModuleList(
            ConvReluBatchNorm(1, MIDEND_FILTERS, (MIDEND_KERNEL_FRAMES, width))
            for width in (FRONTEND_FEATURES, MIDEND_FILTERS, MIDEND_FILTERS)
        )
        self.pool_bn = nn.BatchNorm1d(2 * POOLED_FEATURES, eps=TF_BATCH_NORM_EPSILON)
        self.dense = nn.Linear(2 * POOLED_FEATURES, DENSE_UNITS)
        self.dense_bn = nn.BatchNorm1d(DENSE_UNITS, eps=TF_BATCH_NORM_EPSILON)
        self.classifier = nn.Linear(DENSE_UNITS, num_classes)

    def frontend(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, 96] → [B, T, 561]: each branch max-pooled over the whole frequency axis."""
        timbral_input = pad_time(x, 3)  # 'same' along time only; frequency stays 'valid'
        branches = [block(timbral_input) for block in self.timbral]
        branches += [
            block(F.pad(x, tf_same_time_padding(k))) for block, k in zip(self.temporal, TEMPORAL_KERNEL_FRAMES)
        ]
        return torch.cat([b.amax(dim=3).transpose(1, 2) for b in branches], dim=2)

    def midend_layer(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """[B, T, F] → [B, T, 64]: a conv spanning all features over 7 frames."""
        out = self.midend[index](pad_time(features.unsqueeze(1), MIDEND_KERNEL_FRAMES // 2))  # [B, 64, T, 1]
        return out.squeeze(3).transpose(1, 2)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input_bn(logmel.unsqueeze(1))
        front = self.frontend(x)
        cnn1 = self.midend_layer(0, front)
        cnn2 = self.midend_layer(1, cnn1) + cnn1
        cnn3 = self.midend_layer(2, cnn2) + cnn2
        features = torch.cat([front, cnn1, cnn2, cnn3], dim=2)  # [B, T, 753]
        max_pool, mean_pool = features.amax(dim=1), features.mean(dim=1)
        # TF concatenated [B, 753, 1] max and mean on the last axis and flattened: features interleave as (max, mean).
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        logits = self.classifier(penultimate)
        return {"tags": torch.sigmoid(logits), "embedding": penultimate, "mean_pool": mean_pool, "max_pool": max_pool}


class VGG(nn.Module):
    """musicnn's VGG-like baseline: five 3×3 conv blocks with max pooling, a linear classifier on pool5."""

    def __init__(self, num_classes: int = 50) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BATCH_NORM_EPSILON)
        self.blocks = nn.ModuleList(
            ConvReluBatchNorm(1 if i == 0 else VGG_FILTERS, VGG_FILTERS, (3, 3), padding=1) for i in range(5)
        )
        self.pools = nn.ModuleList(nn.MaxPool2d(size, stride) for size, stride in VGG_POOLS)
        self.classifier = nn.Linear(VGG_POOL5_FEATURES, num_classes)

    def forward(self, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.input_bn(logmel.unsqueeze(1))
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
        pool5 = x.permute(0, 2, 3, 1).flatten(1)  # flatten in TF's NHWC order, as the dense kernel expects
        return {"tags": torch.sigmoid(self.classifier(pool5)), "embedding": pool5}


# ---- TF checkpoint → module weights -------------------------------------------------------------------------


def _tf_conv(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO → OIHW


def _tf_dense(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.T))  # [in, out] → [out, in]


def _load_bn(bn: nn.Module, tensors: dict[str, np.ndarray], name: str) -> None:
    bn.weight.data = torch.from_numpy(tensors[f"{name}/gamma"])
    bn.bias.data = torch.from_numpy(tensors[f"{name}/beta"])
    bn.running_mean.data = torch.from_numpy(tensors[f"{name}/moving_mean"])
    bn.running_var.data = torch.from_numpy(tensors[f"{name}/moving_variance"])


def _load_conv(block: ConvReluBatchNorm, tensors: dict[str, np.ndarray], conv: str, bn: str) -> None:
    block.conv.weight.data = _tf_conv(tensors[f"{conv}/kernel"])
    block.conv.bias.data = torch.from_numpy(tensors[f"{conv}/bias"])
    _load_bn(block.bn, tensors, bn)


def _load_dense(linear: nn.Linear, tensors: dict[str, np.ndarray], name: str) -> None:
    linear.weight.data = _tf_dense(tensors[f"{name}/kernel"])
    linear.bias.data = torch.from_numpy(tensors[f"{name}/bias"])


def _bn_name(index: int) -> str:
    """TF1 layers are named by creation order: batch_normalization, batch_normalization_1, ..."""
    return "batch_normalization" if index == 0 else f"batch_normalization_{index}"


def musicnn_from_checkpoint(tensors: dict[str, np.ndarray], num_classes: int = 50) -> MusiCNN:
    model = MusiCNN(num_classes)
    _load_bn(model.input_bn, tensors, _bn_name(0))
    conv_blocks = [*model.timbral, *model.temporal, *model.midend]  # creation order in models.py
    for i, block in enumerate(conv_blocks):
        _load_conv(block, tensors, "conv2d" if i == 0 else f"conv2d_{i}", _bn_name(i + 1))
    _load_bn(model.pool_bn, tensors, _bn_name(len(conv_blocks) + 1))
    _load_dense(model.dense, tensors, "dense")
    _load_bn(model.dense_bn, tensors, _bn_name(len(conv_blocks) + 2))
    _load_dense(model.classifier, tensors, "dense_1")
    return model.eval()


def vgg_from_checkpoint(tensors: dict[str, np.ndarray], num_classes: int = 50) -> VGG:
    model = VGG(num_classes)
    _load_bn(model.input_bn, tensors, _bn_name(0))
    for i, block in enumerate(model.blocks):
        _load_conv(block, tensors, f"{i + 1}CNN", _bn_name(i + 1))
    _load_dense(model.classifier, tensors, "dense")
    return model.eval()
