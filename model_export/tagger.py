"""One exportable module per model: the in-graph frontend feeding a musicnn architecture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_export import architectures
from model_export.frontend import LogMelFrontend

MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy",
]  # fmt: skip
MTT_LABELS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
]  # fmt: skip


@dataclass(frozen=True)
class OutputSpec:
    dim: int
    meaning: str


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the service's model name
    folder: str  # musicnn's checkpoint folder
    architecture: str  # "musicnn" | "vgg"
    dataset: str
    labels: list[str]
    published_roc_auc: float  # musicnn's experiment.result, on the dataset's test set
    published_pr_auc: float

    @property
    def outputs(self) -> dict[str, OutputSpec]:
        tags = OutputSpec(len(self.labels), "sigmoid tag probabilities, in the order of `labels`")
        logmel = OutputSpec(96, "the in-graph frontend's log10(1 + 10000·mel) per frame: [batch, 187, 96]")
        if self.architecture == "musicnn":
            return {
                "tags": tags,
                "embedding": OutputSpec(
                    architectures.DENSE_UNITS,
                    "musicnn's `penultimate`: batch-normalised output of the 200-unit ReLU dense layer",
                ),
                "mean_pool": OutputSpec(
                    architectures.POOLED_FEATURES,
                    "musicnn's `mean_pool`: temporal mean of the "
                    "front-end and mid-end features (recommended for transfer learning)",
                ),
                "max_pool": OutputSpec(architectures.POOLED_FEATURES, "musicnn's `max_pool`: temporal max of the same"),
                "logmel": logmel,
            }
        return {
            "tags": tags,
            "embedding": OutputSpec(
                architectures.VGG_POOL5_FEATURES,
                "vgg's `pool5` flattened in TF's (time, freq, channel) order: the input of the tag classifier",
            ),
            "logmel": logmel,
        }


MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "msd-musicnn", "MSD_musicnn", "musicnn", "Million Song Dataset (last.fm tags)", MSD_LABELS, 0.8802, 0.2891
        ),
        ModelSpec("mtt-musicnn", "MTT_musicnn", "musicnn", "MagnaTagATune", MTT_LABELS, 0.9067, 0.3831),
        ModelSpec("msd-vgg", "MSD_vgg", "vgg", "Million Song Dataset (last.fm tags)", MSD_LABELS, 0.8768, 0.2819),
        ModelSpec("mtt-vgg", "MTT_vgg", "vgg", "MagnaTagATune", MTT_LABELS, 0.9030, 0.3823),
    )
}


class WaveformTagger(nn.Module):
    """waveform [batch, 48128] → named outputs; the network is exactly the TF graph fed float32 log-mel."""

    def __init__(self, network: nn.Module, output_names: list[str]) -> None:
        super().__init__()
        self.frontend = LogMelFrontend()
        self.network = network
        self.output_names = output_names

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logmel = self.frontend(waveform)
        outputs = {**self.network(logmel), "logmel": logmel}
        return tuple(outputs[name] for name in self.output_names)


def inference_weight_names(tensors: dict[str, np.ndarray]) -> set[str]:
    """Checkpoint tensors that inference uses: everything but the optimizer's state."""
    return {n for n in tensors if "Adam" not in n and n not in ("beta1_power", "beta2_power")}


class _RecordingWeights(dict):
    """A tensors mapping that remembers which names were read, to prove every inference weight is used."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        super().__init__(tensors)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return super().__getitem__(name)


def build_tagger(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> WaveformTagger:
    build = (
        architectures.musicnn_from_checkpoint if spec.architecture == "musicnn" else architectures.vgg_from_checkpoint
    )
    weights = _RecordingWeights(tensors)
    network = build(weights, len(spec.labels))
    unused = inference_weight_names(tensors) - weights.read
    if unused:
        raise ValueError(f"{spec.folder}: checkpoint weights not used by the architecture: {sorted(unused)}")
    return WaveformTagger(network, list(spec.outputs)).eval()
