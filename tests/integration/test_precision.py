"""TAGGRAM_PRECISION with real runners: the parity guard refuses a runner whose outputs leave the budget (a real ONNX
graph with noise added to its outputs), a CPU without native bf16 keeps today's runner, and on this CPU the real
bf16 parity check runs where it has native bf16, or the refusal is asserted where it has not (the test id says
which): it never passes without checking one or the other."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from service.artefacts.parity_patches import load_parity_patches, parity_patches_path
from service.config import Precision, Settings
from service.engine.precision import (
    PARITY_BUDGET,
    PrecisionError,
    check_parity,
    native_bf16,
    parity_refusal,
    run_all,
    select_runner,
    this_cpu_flags,
)
from service.engine.run import batch_policy, load_runner
from service.engine.run_openvino import OpenVinoRunner, openvino_installed
from tests.support.live_server import live_server, server_settings

MODEL = "msd-musicnn"
MODELS = ("msd-musicnn", "mtt-musicnn", "msd-vgg", "mtt-vgg")
WITH_BF16 = frozenset({"avx2", "avx512_bf16"})
WITHOUT_BF16 = frozenset({"avx2", "fma"})
CPU_KIND = "native-bf16-cpu" if native_bf16(this_cpu_flags()) else "cpu-without-native-bf16"


def policy():
    return batch_policy(Settings(), on_cuda=False)


def fp32_runner(models_dir: Path, model: str = MODEL):
    return load_runner(models_dir / f"{model}.onnx", "cpu", policy().intra_op_threads)


def noisy_graph(models_dir: Path, dest: Path, scale: float) -> Path:
    """The exported graph with fixed noise of ``scale`` added to its tags and embedding outputs: a real runner
    whose answers differ from fp32's by a known amount."""
    model = onnx.load(models_dir / f"{MODEL}.onnx")
    rng = np.random.default_rng(24)
    for name, dim in (("tags", 50), ("embedding", 200)):
        for node in model.graph.node:
            node.output[:] = [f"{name}_clean" if out == name else out for out in node.output]
        noise = numpy_helper.from_array((scale * rng.choice([-1.0, 1.0], dim)).astype(np.float32), f"{name}_noise")
        model.graph.initializer.append(noise)
        model.graph.node.append(helper.make_node("Add", [f"{name}_clean", f"{name}_noise"], [name]))
    onnx.save(model, dest / f"{MODEL}.onnx")
    return dest / f"{MODEL}.onnx"


def perturbed_loader(path: Path):
    return lambda onnx_file, policy: load_runner(path, "cpu", policy.intra_op_threads)


def test_the_guard_refuses_a_runner_whose_tags_move_beyond_the_budget(models_dir, tmp_path, caplog):
    fp32 = fp32_runner(models_dir)
    noisy = perturbed_loader(noisy_graph(models_dir, tmp_path, scale=2.5 * PARITY_BUDGET.tags_max_abs))
    onnx_file = models_dir / f"{MODEL}.onnx"

    with caplog.at_level(logging.INFO, logger="service.engine.precision"):
        chosen = select_runner(MODEL, onnx_file, fp32, Precision.AUTO, policy(), WITH_BF16, noisy)
    assert chosen is fp32
    [line] = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(
        rf"model {MODEL} runs in fp32: bf16 refused: parity guard: max \|tag difference\| 0\.05\d+ "
        r"\(budget 0\.02\), min embedding cosine \S+ \(budget 0\.9995\)",
        line,
    ), line

    with pytest.raises(PrecisionError, match=rf"^model {MODEL}: TAGGRAM_PRECISION=bf16 is not possible: parity guard"):
        select_runner(MODEL, onnx_file, fp32, Precision.BF16, policy(), WITH_BF16, noisy)


def test_a_runner_inside_the_budget_passes_the_same_guard(models_dir, tmp_path):
    """Control: the guard above refused the noise, not the perturbed graph's mechanics."""
    fp32 = fp32_runner(models_dir)
    small = perturbed_loader(noisy_graph(models_dir, tmp_path, scale=0.1 * PARITY_BUDGET.tags_max_abs))
    onnx_file = models_dir / f"{MODEL}.onnx"
    chosen = select_runner(MODEL, onnx_file, fp32, Precision.BF16, policy(), WITH_BF16, small)
    assert chosen is not fp32
    patches = load_parity_patches(parity_patches_path(onnx_file))
    assert check_parity(fp32, chosen, patches, policy().max_batch_patches) is None


def test_without_native_bf16_auto_keeps_todays_runner_and_bf16_stops_the_start(models_dir, caplog):
    fp32 = fp32_runner(models_dir)
    onnx_file = models_dir / f"{MODEL}.onnx"
    with caplog.at_level(logging.INFO, logger="service.engine.precision"):
        assert select_runner(MODEL, onnx_file, fp32, Precision.AUTO, policy(), WITHOUT_BF16) is fp32
    assert [r.getMessage() for r in caplog.records] == [
        f"model {MODEL} runs in fp32: bf16 refused: "
        "this CPU has no native bf16 (amx_bf16 or avx512_bf16 in /proc/cpuinfo)"
    ]
    with pytest.raises(PrecisionError, match="TAGGRAM_PRECISION=bf16 is not possible: this CPU has no native bf16"):
        select_runner(MODEL, onnx_file, fp32, Precision.BF16, policy(), WITHOUT_BF16)


def test_a_model_exported_without_parity_patches_is_never_served_in_bf16(models_dir, tmp_path):
    for ext in (".onnx", ".json"):
        (tmp_path / f"{MODEL}{ext}").write_bytes((models_dir / f"{MODEL}{ext}").read_bytes())
    fp32 = fp32_runner(models_dir)
    with pytest.raises(PrecisionError, match="no parity patches"):
        select_runner(
            MODEL,
            tmp_path / f"{MODEL}.onnx",
            fp32,
            Precision.BF16,
            policy(),
            WITH_BF16,
            perturbed_loader(tmp_path / f"{MODEL}.onnx"),
        )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cpu", [CPU_KIND])
def test_bf16_on_this_cpu_serves_inside_the_budget_or_is_refused_with_the_reason(models_dir, cpu, model):
    """The real bf16 runner (OpenVINO) against fp32 on the export's reference patches: kept exactly where the
    figures computed here are inside the budget, refused with those figures otherwise. Without native bf16 on this
    CPU: the refusal says so."""
    fp32 = fp32_runner(models_dir, model)
    onnx_file = models_dir / f"{model}.onnx"
    if cpu == "cpu-without-native-bf16":
        with pytest.raises(PrecisionError, match="this CPU has no native bf16"):
            select_runner(model, onnx_file, fp32, Precision.BF16, policy())
        return
    assert openvino_installed(), "the test extra installs openvino (the cpu-bf16 extra)"
    bf16 = OpenVinoRunner(onnx_file, Precision.BF16, policy().inference_workers, policy().intra_op_threads)
    patches = load_parity_patches(parity_patches_path(onnx_file))
    reference, candidate = run_all(fp32, patches, 4), run_all(bf16, patches, 4)
    assert not np.array_equal(reference["tags"], candidate["tags"])  # bf16 really computed: not fp32 again
    verdict = parity_refusal(reference, candidate)
    try:
        chosen = select_runner(model, onnx_file, fp32, Precision.BF16, policy())
    except PrecisionError as error:
        assert verdict is not None and "parity guard" in str(error), (verdict, str(error))
    else:
        assert verdict is None and (chosen.runtime, chosen.precision) == ("openvino", "bf16")


@pytest.mark.parametrize("cpu", [CPU_KIND])
def test_models_and_metrics_show_each_models_runtime_and_precision(models_dir, cpu):
    for precision, expected in (("fp32", ("onnxruntime", "fp32")), ("bf16", ("openvino", "bf16"))):
        settings = server_settings(models_dir, precision=precision)
        if precision == "bf16" and cpu == "cpu-without-native-bf16":
            with pytest.raises(PrecisionError, match="no native bf16"), live_server(settings):
                pass
            continue
        with live_server(settings) as live, live.client() as http:
            [info] = http.get("/models").json()["models"]
            metrics = http.get("/metrics").text
        assert (info["runtime"], info["precision"]) == expected
        assert (
            f'taggram_model_runtime_info{{model="{MODEL}",precision="{expected[1]}",runtime="{expected[0]}"}} 1.0'
            in metrics
        ), metrics
