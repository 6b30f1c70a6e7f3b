"""TAGGRAM_PRECISION's choice per model: the CPU's capabilities, the parity guard and the measured speed in, the
precision out (service/engine/precision.py). The real runners are exercised in tests/integration/test_precision.py."""

from __future__ import annotations

import numpy as np
import pytest

from service.config import Precision, Settings
from service.engine.cache import cache_key
from service.engine.precision import (
    BF16_MIN_SPEEDUP,
    PARITY_BUDGET,
    Choice,
    bf16_unavailable,
    choose,
    cpu_flags,
    native_bf16,
    parity_refusal,
)

ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})  # AMD EPYC 9004 (this project's machine)
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"})
AMX_ONLY = frozenset({"avx2", "amx_bf16", "amx_tile"})
ZEN3 = frozenset({"avx2", "fma", "f16c"})  # AVX2 only: bf16 would be converted in software


def test_cpu_flags_are_read_from_the_first_processor_of_proc_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags("processor : 0\nFeatures : fp asimd\n") == frozenset()  # arm64: no "flags" line


@pytest.mark.parametrize(
    "flags, native", [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (AMX_ONLY, True), (ZEN3, False), (frozenset(), False)]
)
def test_native_bf16_means_amx_bf16_or_avx512_bf16(flags, native):
    assert native_bf16(flags) is native


def test_what_is_missing_for_bf16_is_named_in_the_order_it_is_checked():
    assert "no native bf16" in bf16_unavailable(ZEN3, runtime_installed=True, has_parity_patches=True)
    assert "taggram[cpu-bf16]" in bf16_unavailable(ZEN4, runtime_installed=False, has_parity_patches=True)
    assert "parity patches" in bf16_unavailable(ZEN4, runtime_installed=True, has_parity_patches=False)
    assert bf16_unavailable(ZEN4, runtime_installed=True, has_parity_patches=True) is None


def test_fp32_is_todays_path_whatever_the_machine_offers():
    assert choose(Precision.FP32, None, None, parity_checked=True, speedup=3.0).precision == Precision.FP32


def test_auto_serves_fp32_with_a_reason_where_bf16_cannot_run():
    choice = choose(Precision.AUTO, "this CPU has no native bf16")
    assert choice == Choice(Precision.FP32, "fp32: bf16 refused: this CPU has no native bf16")


def test_bf16_requested_where_it_cannot_run_stops_the_start_with_the_reason():
    choice = choose(Precision.BF16, "openvino is not installed (pip install 'taggram[cpu-bf16]')")
    assert choice.fatal and choice.precision is None
    assert (
        choice.reason
        == "TAGGRAM_PRECISION=bf16 is not possible: openvino is not installed (pip install 'taggram[cpu-bf16]')"
    )


def test_parity_is_checked_before_anything_is_kept_and_a_failed_guard_refuses_bf16():
    assert choose(Precision.AUTO, None).precision is None  # possible: the guard must run first
    assert choose(Precision.BF16, None).precision is None
    refused = choose(Precision.AUTO, None, "parity guard: max |tag difference| 0.0285", parity_checked=True)
    assert refused.precision == Precision.FP32 and "0.0285" in refused.reason
    assert choose(Precision.BF16, None, "parity guard: …", parity_checked=True).fatal


def test_bf16_requested_and_inside_parity_is_kept_without_a_speed_trial():
    assert choose(Precision.BF16, None, None, parity_checked=True).precision == Precision.BF16


@pytest.mark.parametrize(
    "speedup, kept",
    [
        (2.20, Precision.BF16),  # the Xeon's AMX figure (issue #24)
        (BF16_MIN_SPEEDUP, Precision.BF16),
        (1.27, Precision.FP32),  # msd-musicnn on this Zen 4 (docs/precision.md): not clearly faster
        (1.0, Precision.FP32),
        (0.6, Precision.FP32),  # OpenVINO on an AVX2-only EPYC (field notes)
    ],
)
def test_auto_keeps_bf16_only_where_it_measured_clearly_faster(speedup, kept):
    assert choose(Precision.AUTO, None, None, parity_checked=True).precision is None  # the speed is measured next
    choice = choose(Precision.AUTO, None, None, parity_checked=True, speedup=speedup)
    assert choice.precision == kept and f"{speedup:.2f}×" in choice.reason


def outputs(tags: np.ndarray, embedding: np.ndarray) -> dict[str, np.ndarray]:
    return {"tags": tags.astype(np.float32), "embedding": embedding.astype(np.float32)}


def test_the_parity_guard_accepts_differences_inside_the_budget_and_names_what_broke_it():
    rng = np.random.default_rng(24)
    tags, embedding = rng.uniform(0, 1, (15, 50)), rng.normal(0, 1, (15, 200))
    reference = outputs(tags, embedding)
    assert parity_refusal(reference, reference) is None
    assert parity_refusal(reference, outputs(tags + PARITY_BUDGET.tags_max_abs * 0.9, embedding)) is None

    tags_off = parity_refusal(reference, outputs(tags + PARITY_BUDGET.tags_max_abs * 1.5, embedding))
    assert tags_off.startswith("parity guard: max |tag difference| 0.0300 (budget 0.02)")
    turned = embedding.copy()
    turned[3] = rng.normal(0, 1, 200)  # one patch's embedding points elsewhere
    assert "min embedding cosine" in parity_refusal(reference, outputs(tags, turned))
    assert parity_refusal(reference, outputs(tags, turned)) != parity_refusal(reference, reference)


def test_the_setting_takes_the_three_values_and_nothing_else():
    assert Settings.model_fields["precision"].default == Precision.AUTO
    assert [Settings(precision=value).precision for value in ("auto", "fp32", "bf16")] == list(Precision)
    with pytest.raises(ValueError):
        Settings(precision="int8")


AUDIO, ONNX = "ab" * 32, "cd" * 32


def test_cache_keys_are_separated_by_precision_and_never_by_the_auto_setting():
    fp32 = cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision=Precision.FP32)
    bf16 = cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision=Precision.BF16)
    assert fp32 == f"taggram:v2:msd-musicnn:{ONNX[:16]}:fp32:47872:{AUDIO}"
    assert bf16 == f"taggram:v2:msd-musicnn:{ONNX[:16]}:bf16:47872:{AUDIO}"
    with pytest.raises(ValueError, match="precision"):
        cache_key(AUDIO, "msd-musicnn", ONNX, 47872, precision="auto")  # a setting, not what a runner computes in


def test_a_backfill_output_records_its_precision_and_one_written_before_reads_as_fp32():
    from service.offline.backfill import identity_precision
    from service.offline.backfill.output import RunIdentity

    identity = RunIdentity(
        model="msd-musicnn",
        onnx_sha256=ONNX,
        labels=("rock",),
        embedding_dim=200,
        hop_samples=47872,
        top_k=5,
        taggram=False,
        taxonomy_name="msd-musicnn",
        taxonomy_sha256=AUDIO,
        max_seconds=1200.0,
        min_seconds=1.0,
        max_bytes=1,
        damaged_audio="warn",
    )
    bf16 = RunIdentity(**{**identity.__dict__, "precision": "bf16"})
    assert identity_precision(bf16.as_json()) == "bf16"
    assert "precision" not in identity.as_json() and identity_precision(identity.as_json()) == "fp32"
    assert bf16.as_json() != identity.as_json()  # so a resume in the other precision is refused


def test_the_backfill_takes_the_precision_as_the_service_does(tmp_path):
    from service.offline.backfill.cli import parse_options

    def parsed(*extra: str):
        return parse_options([str(tmp_path), "--out", str(tmp_path / "out"), *extra]).settings.precision

    assert parsed() == Settings().precision  # TAGGRAM_PRECISION (fp32 under the suite: tests/conftest.py)
    assert parsed("--precision", "bf16") == Precision.BF16
    with pytest.raises(SystemExit):
        parsed("--precision", "int8")
