"""Load every configured model at start-up: manifest → verified .onnx → session → taxonomy.

Any missing or corrupt file, or a model for another sample rate than the decoder's, stops the start with one
ModelFileError naming that file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service import metrics
from service.artefacts.manifest import Manifest, ModelFileError, discover, load_manifest, verify_onnx
from service.artefacts.taxonomy import Taxonomy, load_taxonomy
from service.config import Settings
from service.decode import SAMPLE_RATE
from service.engine.precision import select_runner
from service.engine.run import CPU_PROVIDER, BatchPolicy, Runner, batch_policy, choose_providers, load_runner

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    manifest: Manifest
    runner: Runner  # or service.engine.run_openvino.OpenVinoRunner (bf16): same interface
    taxonomy: Taxonomy
    batch_policy: BatchPolicy

    @property
    def name(self) -> str:
        return self.manifest.name


def load_models(settings: Settings) -> dict[str, LoadedModel]:
    """Every configured model, each with the batch policy it runs under (``service.engine.run.batch_policy``)."""
    on_cuda = choose_providers(settings.device)[0] != CPU_PROVIDER
    policy = batch_policy(settings, on_cuda)
    models: dict[str, LoadedModel] = {}
    for manifest_path in discover(settings.models_dir, settings.models):
        manifest = load_manifest(manifest_path)
        if manifest_path.stem != manifest.name:
            raise ModelFileError(
                f"model manifest {manifest_path} names model {manifest.name!r}, not {manifest_path.stem!r}"
            )
        if manifest.sample_rate != SAMPLE_RATE:
            raise ModelFileError(
                f"model manifest {manifest_path} expects {manifest.sample_rate} Hz audio; "
                f"the decoder gives {SAMPLE_RATE} Hz"
            )
        onnx_file = verify_onnx(manifest_path, manifest)
        runner = load_runner(onnx_file, settings.device, policy.intra_op_threads, settings.cuda_batch_sizes)
        if not on_cuda:  # the GPU path is untouched by TAGGRAM_PRECISION
            runner = select_runner(manifest.name, onnx_file, runner, settings.precision, policy)
        taxonomy = load_taxonomy(manifest.name, manifest.labels, settings.taxonomy_dir)
        models[manifest.name] = LoadedModel(manifest, runner, taxonomy, policy)
        metrics.MODEL_INFO.labels(manifest.name, manifest.version, manifest.onnx.sha256, runner.provider).set(1)
        metrics.MODEL_RUNTIME_INFO.labels(manifest.name, runner.runtime, runner.precision).set(1)
        log.info(
            "loaded model %s (%s, %s %s, %d inference workers) with taxonomy %s",
            manifest.name,
            manifest.version,
            runner.provider,
            runner.precision,
            policy.inference_workers,
            taxonomy.path,
        )
    if settings.default_model not in models:
        raise ModelFileError(
            f"default model {settings.default_model!r} is not among the loaded models {sorted(models)} "
            f"(looked in {settings.models_dir})"
        )
    return models
