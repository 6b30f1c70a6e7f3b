"""Which precision each model runs in on CPU: fp32 ONNX Runtime (the path before this existed) or bf16 OpenVINO.

``TAGGRAM_PRECISION`` (``Precision``): ``fp32`` is today's path, untouched; ``bf16`` runs every model in bf16 or
stops the start with one line saying why not; ``auto`` (the default) keeps bf16 for a model only where

1. the CPU has native bf16 arithmetic (``NATIVE_BF16_FLAGS``; without it bf16 is emulated and slower),
2. the ``cpu-bf16`` extra (openvino) is installed and the model ships its parity patches,
3. the parity guard passes: the export's reference patches through both runners stay inside ``PARITY_BUDGET``,
4. bf16 measured over the warm-up batches is at least ``BF16_MIN_SPEEDUP`` times faster than fp32,

and otherwise serves fp32 with one log line. The GPU path never comes here. Measured figures: docs/precision.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artefacts.parity_patches import load_parity_patches, parity_patches_path
from service.config import Precision
from service.engine.run import BatchPolicy, Runner
from service.engine.run_openvino import OPENVINO_EXTRA, OpenVinoRunner, openvino_installed
from service.errors import PrecisionError

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
# Instructions that compute bf16 dot products in hardware: AMX tiles (Intel Sapphire Rapids on) or AVX-512 BF16
# (Intel Cooper Lake on, AMD Zen 4 on). Without either, OpenVINO's bf16 is converted in software.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# bf16 changes every answer a little and costs memory, so it must pay clearly: the Xeon with AMX measured 2.2×, a
# runtime change alone (OpenVINO fp32) 0.8-1.13×; why 1.3 and what it chose here: docs/precision.md.
BF16_MIN_SPEEDUP = 1.3
SPEED_TRIAL_BATCHES = 3  # timed warm-up batches per runner, interleaved, after one untimed batch each


@dataclass(frozen=True)
class ParityBudget:
    """How far bf16 may move a model's outputs on the reference patches (the bars' tag budget is 0.02)."""

    tags_max_abs: float = 0.02  # per tag, per patch: below what the page's bars or a top-k ordering would show
    embedding_min_cosine: float = 0.9995  # per patch: near-duplicate thresholds are set on cosines near 0.99


PARITY_BUDGET = ParityBudget()


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo's text (empty where there are none: not x86 Linux)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def this_cpu_flags() -> frozenset[str]:
    try:
        return cpu_flags(CPUINFO.read_text())
    except OSError:
        return frozenset()


def native_bf16(flags: frozenset[str]) -> bool:
    return bool(flags & NATIVE_BF16_FLAGS)


def bf16_unavailable(flags: frozenset[str], runtime_installed: bool, has_parity_patches: bool) -> str | None:
    """Why bf16 cannot even be tried on this machine for this model, or None where it can."""
    if not native_bf16(flags):
        return f"this CPU has no native bf16 ({' or '.join(sorted(NATIVE_BF16_FLAGS))} in /proc/cpuinfo)"
    if not runtime_installed:
        return f"openvino is not installed (pip install 'taggram[{OPENVINO_EXTRA}]')"
    if not has_parity_patches:
        return "the model has no parity patches (<name>.parity.npz next to the .onnx): re-export it with `make models`"
    return None


def parity_refusal(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], budget: ParityBudget = PARITY_BUDGET
) -> str | None:
    """Why ``candidate``'s outputs are outside ``budget`` of ``reference``'s on the same patches, or None."""
    tags = float(np.abs(candidate["tags"] - reference["tags"]).max())
    a, b = reference["embedding"].astype(np.float64), candidate["embedding"].astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), np.finfo(np.float64).tiny)
    cosine = float(((a * b).sum(axis=1) / norms).min())
    if tags <= budget.tags_max_abs and cosine >= budget.embedding_min_cosine:
        return None
    return (
        f"parity guard: max |tag difference| {tags:.4f} (budget {budget.tags_max_abs}), "
        f"min embedding cosine {cosine:.6f} (budget {budget.embedding_min_cosine})"
    )


@dataclass(frozen=True)
class Choice:
    """``precision``: what the model runs in; None = not decided yet (measure the next fact). ``fatal``: stop the
    start with ``reason``. ``reason``: the one log line explaining the choice."""

    precision: Precision | None
    reason: str
    fatal: bool = False


def choose(
    requested: Precision,
    unavailable: str | None,
    parity: str | None = None,
    parity_checked: bool = False,
    speedup: float | None = None,
) -> Choice:
    """The decision from the facts known so far, in the order they are gathered (each costs more than the last):
    what the machine offers (``unavailable``: why bf16 cannot run here), the parity guard (``parity``: why it failed,
    once ``parity_checked``), then the measured ``speedup`` (bf16 over fp32; only ``auto`` needs it)."""
    if requested == Precision.FP32:
        return Choice(Precision.FP32, "fp32 (TAGGRAM_PRECISION=fp32)")
    refused = unavailable or parity
    if refused:
        if requested == Precision.BF16:
            return Choice(None, f"TAGGRAM_PRECISION=bf16 is not possible: {refused}", fatal=True)
        return Choice(Precision.FP32, f"fp32: bf16 refused: {refused}")
    if not parity_checked:
        return Choice(None, "bf16 possible: checking parity")
    if requested == Precision.BF16:
        return Choice(Precision.BF16, "bf16 (TAGGRAM_PRECISION=bf16), inside the parity budget")
    if speedup is None:
        return Choice(None, "bf16 inside the parity budget: measuring its speed")
    if speedup >= BF16_MIN_SPEEDUP:
        return Choice(
            Precision.BF16,
            f"bf16: {speedup:.2f}× fp32 on the warm-up (≥ {BF16_MIN_SPEEDUP}×), inside the parity budget",
        )
    return Choice(Precision.FP32, f"fp32: bf16 only {speedup:.2f}× fp32 on the warm-up (< {BF16_MIN_SPEEDUP}×)")


def run_all(runner, patches: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    outputs = [runner.run(patches[i : i + batch]) for i in range(0, len(patches), batch)]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def measure_speedup(fp32: Runner, bf16, patches: np.ndarray, batch: int, trials: int = SPEED_TRIAL_BATCHES) -> float:
    """fp32 time ÷ bf16 time per batch of ``batch`` patches: the fastest of ``trials`` interleaved batches each (the
    fastest is the least disturbed by other processes), after one untimed batch each."""
    chunk = patches[:batch]
    best = {id(fp32): float("inf"), id(bf16): float("inf")}
    for trial in range(trials + 1):
        for runner in (fp32, bf16):
            start = time.perf_counter()
            runner.run(chunk)
            if trial:
                best[id(runner)] = min(best[id(runner)], time.perf_counter() - start)
    return best[id(fp32)] / best[id(bf16)]


def check_parity(fp32: Runner, candidate, patches: np.ndarray, batch: int) -> str | None:
    """The parity guard: ``patches`` through both runners, in batches of ``batch``; why ``candidate`` is refused,
    or None."""
    return parity_refusal(run_all(fp32, patches, batch), run_all(candidate, patches, batch))


def load_openvino_bf16(onnx_file: Path, policy: BatchPolicy) -> OpenVinoRunner:
    return OpenVinoRunner(onnx_file, Precision.BF16, policy.inference_workers, policy.intra_op_threads)


def select_runner(
    name: str,
    onnx_file: Path,
    fp32: Runner,
    requested: Precision,
    policy: BatchPolicy,
    flags: frozenset[str] | None = None,
    load_candidate: Callable | None = None,
):
    """The runner ``name`` serves with on CPU: ``fp32`` or the bf16 runner (PrecisionError: the start stops).

    ``flags``: the CPU's (default: this one's); ``load_candidate(onnx_file, policy)``: the bf16 runner (default:
    OpenVINO's, when installed; tests pass a real graph with its outputs perturbed)."""
    if requested == Precision.FP32:
        log.info("model %s runs in %s", name, choose(requested, None).reason)
        return fp32
    patches = load_parity_patches(parity_patches_path(onnx_file))
    installed = load_candidate is not None or openvino_installed()
    unavailable = bf16_unavailable(this_cpu_flags() if flags is None else flags, installed, patches is not None)
    choice, candidate = choose(requested, unavailable), None
    if choice.precision is None and not choice.fatal:
        candidate = (load_candidate or load_openvino_bf16)(onnx_file, policy)
        refusal = check_parity(fp32, candidate, patches, policy.max_batch_patches)
        choice = choose(requested, None, refusal, parity_checked=True)
    if choice.precision is None and not choice.fatal:
        speedup = measure_speedup(fp32, candidate, patches, policy.max_batch_patches)
        choice = choose(requested, None, None, parity_checked=True, speedup=speedup)
    if choice.fatal:
        raise PrecisionError(f"model {name}: {choice.reason}")
    log.info("model %s runs in %s", name, choice.reason)
    return candidate if choice.precision == Precision.BF16 else fp32
