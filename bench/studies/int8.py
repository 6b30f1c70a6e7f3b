"""INT8 measured, not assumed (issue #24 item 4; docs/precision.md "INT8"): a post-training statically quantized
graph vs fp32 ONNX Runtime on this CPU, in one run. A study: nothing here is used by the service.

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.studies.int8 --models msd-musicnn

Per model:
1. Quantize ``models/<model>.onnx`` with ``onnxruntime.quantization.quantize_static``: QDQ, per-channel int8
   weights, uint8 activations (x86's u8s8 VNNI path), MinMax calibration on real corpus patches; every node of the
   in-graph log-mel frontend (``model_export/frontend.py``: the nodes the graph's ``logmel`` output is computed
   from) is excluded, so the frontend stays float. The quantized file goes to a temporary folder, never into models/.
2. Raw throughput (patches/s) at batch 4 with one worker and ``usable_cpus`` workers of one thread each
   (bench.precision's shape), runtimes interleaved round by round: ONNX Runtime fp32, ONNX Runtime int8 (the QDQ
   graph) and OpenVINO running the same QDQ graph (it turns Q/DQ pairs into its own int8 FakeQuantize; no NNCF).
3. Accuracy against fp32 ONNX Runtime on held-out corpus tracks (none used for calibration): max per-patch tag
   difference, max per-track mean-tag difference, min per-patch embedding cosine; the service's parity guard
   (``parity_refusal``: 0.02 per tag, cosine 0.9995) on the export's reference patches; the mean-tag error against
   the TF graphs on the fixtures' real-music clips.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from bench import common
from bench.precision import corpus_tracks, guard_figures, tf_mean_tag_error, throughput, track_patches
from model_export.tagger import MODELS
from service.artefacts.manifest import load_manifest
from service.artefacts.parity_patches import load_parity_patches, parity_patches_path
from service.engine.precision import run_all, this_cpu_flags
from service.engine.run import load_runner, usable_cpus
from service.engine.run_openvino import OpenVinoRunner

RUNTIMES = ("onnxruntime fp32", "onnxruntime int8", "openvino int8")
DECIDING_FLAGS = ("amx_int8", "amx_tile", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512f", "avx2")
FRONTEND_OUTPUT = "logmel"  # the frontend's output is a graph output (model_export/tagger.py); node names are opaque
CALIBRATION_BATCH = 8
BATCH = 4  # bench.precision's batch


def frontend_nodes(graph: onnx.GraphProto) -> list[str]:
    """The log-mel frontend's node names (every node ``logmel`` depends on, back to the waveform): kept in float."""
    producer = {output: node for node in graph.node for output in node.output}
    found: dict[str, None] = {}
    pending = [FRONTEND_OUTPUT]
    while pending:
        node = producer.get(pending.pop())
        if node is not None and node.name not in found:
            found[node.name] = None
            pending.extend(node.input)
    return list(found)


class PatchReader(CalibrationDataReader):
    """Real corpus patches, ``CALIBRATION_BATCH`` at a time, as the graph's ``waveform`` input."""

    def __init__(self, patches: np.ndarray) -> None:
        self.batches = iter([patches[i : i + CALIBRATION_BATCH] for i in range(0, len(patches), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"waveform": batch}


def quantize(model: str, calibration: np.ndarray, folder: Path) -> tuple[Path, float, int, int]:
    """The QDQ int8 graph of ``model``; with the seconds it took, the frontend nodes kept float, nodes in all."""
    source = common.MODELS_DIR / f"{model}.onnx"
    graph = onnx.load(str(source)).graph
    excluded = frontend_nodes(graph)
    target = folder / f"{model}.int8.onnx"
    started = time.perf_counter()
    quantize_static(
        str(source),
        str(target),
        PatchReader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )
    return target, time.perf_counter() - started, len(excluded), len(graph.node)


def load(path: Path, runtime: str, workers: int):
    if runtime.startswith("onnxruntime"):
        return load_runner(path, "cpu", 1)
    return OpenVinoRunner(path, "fp32", workers, 1)  # f32 hint: the QDQ graph's int8 layers run int8 regardless


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def accuracy(reference, candidate, held_out: list[np.ndarray]) -> tuple[float, float, float]:
    """Max per-patch tag difference, max per-track mean-tag difference, min per-patch embedding cosine."""
    per_patch, per_track, cosine = 0.0, 0.0, 1.0
    for patches in held_out:
        a, b = run_all(reference, patches, BATCH), run_all(candidate, patches, BATCH)
        per_patch = max(per_patch, float(np.abs(a["tags"] - b["tags"]).max()))
        per_track = max(per_track, float(np.abs(a["tags"].mean(0) - b["tags"].mean(0)).max()))
        cosine = min(cosine, float(cosines(a["embedding"], b["embedding"]).min()))
    return per_patch, per_track, cosine


def per_model(model: str, speed: np.ndarray, calibration: np.ndarray, held_out: list, rounds: int, folder: Path):
    workers = usable_cpus()
    int8_path, quantize_s, kept, nodes = quantize(model, calibration, folder)
    paths = {"onnxruntime fp32": common.MODELS_DIR / f"{model}.onnx"}
    paths["onnxruntime int8"] = paths["openvino int8"] = int8_path
    runners = {runtime: load(paths[runtime], runtime, workers) for runtime in RUNTIMES}
    for runner in runners.values():  # one untimed batch each: first-run allocations are not the steady state
        runner.run(speed[:BATCH])
    speeds = {(r, w): [] for r in RUNTIMES for w in (1, workers)}
    for _ in range(rounds):
        for w in (1, workers):
            for runtime in RUNTIMES:
                speeds[(runtime, w)].append(throughput(runners[runtime], speed, w, BATCH))
    base = {w: np.median(speeds[("onnxruntime fp32", w)]) for w in (1, workers)}
    reference_patches = load_parity_patches(parity_patches_path(paths["onnxruntime fp32"]))
    fp32 = run_all(runners["onnxruntime fp32"], reference_patches, BATCH)
    rows = []
    for runtime in RUNTIMES:
        s1, sw = np.median(speeds[(runtime, 1)]), np.median(speeds[(runtime, workers)])
        if runtime == "onnxruntime fp32":
            figures = ["—", "—", "—", "—"]
        else:
            patch, track, cosine = accuracy(runners["onnxruntime fp32"], runners[runtime], held_out)
            guard = guard_figures(fp32, run_all(runners[runtime], reference_patches, BATCH))
            figures = [f"{patch:.4f}", f"{track:.4f}", f"{cosine:.6f}", guard]
        rows.append(
            [
                model,
                runtime,
                f"{s1:.1f} ({s1 / base[1]:.2f}×)",
                f"{sw:.1f} ({sw / base[workers]:.2f}×)",
                *figures,
                f"{tf_mean_tag_error(runners[runtime], model):.4f}",
            ]
        )
    print(
        f"[int8] {model}: quantized in {quantize_s:.1f} s, {kept} of {nodes} nodes kept float (the frontend), "
        f"{int8_path.stat().st_size / 1e6:.1f} MB vs {paths['onnxruntime fp32'].stat().st_size / 1e6:.1f} MB",
        file=sys.stderr,
        flush=True,
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--patches", type=int, default=48, help="real patches per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--calibration-tracks", type=int, default=16)
    parser.add_argument("--calibration-patches", type=int, default=8, help="patches per calibration track")
    parser.add_argument("--held-out-tracks", type=int, default=20)
    parser.add_argument("--held-out-patches", type=int, default=10, help="patches per held-out track")
    args = parser.parse_args(argv)

    flags = this_cpu_flags()
    tracks = corpus_tracks(80)  # spread over the corpus's packages (bench.precision's choice)
    geometry = load_manifest(common.MODELS_DIR / "msd-musicnn.json").geometry  # every model's patch is the same
    speed = np.concatenate([track_patches(p, geometry, 40) for p in tracks[:3]])[: args.patches]
    calibration_tracks = tracks[-args.calibration_tracks :]
    calibration = np.concatenate([track_patches(p, geometry, args.calibration_patches) for p in calibration_tracks])
    held_out = [track_patches(p, geometry, args.held_out_patches) for p in tracks[3 : 3 + args.held_out_tracks]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="taggram-int8-") as folder:
        for model in [m.strip() for m in args.models.split(",")]:
            rows += per_model(model, speed, calibration, held_out, args.rounds, Path(folder))
    workers = usable_cpus()
    header = [
        "model",
        "runtime",
        "1 worker patches/s",
        f"{workers} workers patches/s",
        "max tag diff per patch",
        "max mean-tag diff per track",
        "min embedding cosine",
        "guard: max tag diff / min cosine",
        "mean-tag error vs TF",
    ]
    print(
        "\n".join(
            [
                *common.environment_lines(["bench.studies.int8", *(argv if argv is not None else sys.argv[1:])]),
                f"- CPU flags that decide: {', '.join(f for f in DECIDING_FLAGS if f in flags) or 'none'}",
                "",
                f"Raw inference, {len(speed)} real patches of 3 corpus tracks, batch {BATCH}, median of {args.rounds} "
                f"interleaved rounds (× = over ONNX Runtime fp32 in the same column); calibration: "
                f"{len(calibration)} patches of {len(calibration_tracks)} other corpus tracks; accuracy vs fp32 on "
                f"{len(held_out)} held-out tracks ({args.held_out_patches} patches each); the guard on the 15 "
                "reference patches (budget 0.02 / 0.9995):",
                "",
                common.markdown_table(header, rows, "llrrrrrlr"),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
