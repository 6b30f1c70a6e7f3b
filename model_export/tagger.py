"""One graph per model: the in-graph frontend feeding a musicnn architecture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_export import architectures, frontend
from model_export.graph import GraphBuilder

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


def output_shape(name: str, dim: int) -> list:
    """An output's shape in the graph and the manifest: per frame for the log-mel, per patch for the rest."""
    return ["batch", frontend.PATCH_FRAMES, dim] if name == "logmel" else ["batch", dim]


def build_tagger(spec: ModelSpec, tensors: dict[str, np.ndarray]):
    """waveform [batch, 48128] → the spec's named outputs, as an onnx ModelProto: the network is exactly the TF
    graph fed float32 log-mel. Raises KeyError naming a missing weight, ValueError naming an unused one."""
    build = architectures.musicnn if spec.architecture == "musicnn" else architectures.vgg
    weights = _RecordingWeights(tensors)
    g = GraphBuilder()
    logmel = frontend.log_mel(g, "waveform", output="logmel")
    build(g, logmel, weights)  # names its outputs as the spec does; the checker refuses a graph missing one
    unused = inference_weight_names(tensors) - weights.read
    if unused:
        raise ValueError(f"{spec.folder}: checkpoint weights not used by the architecture: {sorted(unused)}")
    return g.model(
        spec.name, f"{spec.name}: musicnn {spec.folder} with its log-mel frontend in the graph",
        inputs={"waveform": ["batch", frontend.PATCH_SAMPLES]},
        outputs={name: output_shape(name, out.dim) for name, out in spec.outputs.items()},
    )  # fmt: skip
