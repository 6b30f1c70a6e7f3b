"""fp32 (ONNX Runtime, today) vs OpenVINO fp32 vs OpenVINO bf16 on this CPU, in one run (issue #24; docs/precision.md).

    flock /tmp/taggram-bench.lock .venv/bin/python -m bench.precision

1. The CPU: its model name and the flags that decide (native bf16: amx_bf16 / avx512_bf16; amx_int8, avx512_vnni).
2. Per model, in this process: compile time of each runtime; raw throughput (patches/s) on real corpus patches at
   batch 4, one worker and ``usable_cpus`` workers of one thread each (batch_policy's shape), runtimes interleaved
   round by round; the parity guard's figures on the export's reference patches; the mean-tag error against the TF
   reference on the fixtures' real-music clips (the bars' budget is 0.02).
3. The corpus (msd-musicnn by default): track embeddings (mean over segments) in fp32 and bf16; their cosines,
   top-10 neighbour agreement and duplicate-pair agreement at the index's calibrated threshold, after the index's
   own normalisation (service/artefacts/similar/artefact.py).
4. End to end, ``taggram serve`` with TAGGRAM_PRECISION=fp32 vs bf16 (one model): start time, sign-up latency
   (POST /suggest-subgenres of a 30 s clip, one at a time), throughput with concurrent uploads, peak RSS (VmHWM).
   Where bf16 is not possible here the service refuses to start and the row says why.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import csv
import io
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench import common
from model_export.export import FIXTURES_DIR
from model_export.parity import load_clip, patch_windows
from model_export.tagger import MODELS
from service.artefacts.manifest import load_manifest
from service.artefacts.parity_patches import load_parity_patches, parity_patches_path
from service.artefacts.similar.artefact import normalise_catalog
from service.config import Settings
from service.decode import decode
from service.engine.patch import patch_track
from service.engine.precision import NATIVE_BF16_FLAGS, native_bf16, parity_refusal, run_all, this_cpu_flags
from service.engine.run import batch_policy, load_runner, usable_cpus
from service.engine.run_openvino import OpenVinoRunner
from service.offline.index_build import CALIBRATED_DUPLICATE_THRESHOLDS

SECTION = "precision"
RUNTIMES = ("onnxruntime fp32", "openvino fp32", "openvino bf16")
DECIDING_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx512f", "avx2")
REAL_MUSIC_CLIPS = ("architectural_contemplations", "city_blues_padded_end", "lincity_electronic")
CORPUS_CSV = Path("/work/corpus/corpus.csv")
NEIGHBOURS = 10


def load(model: str, runtime: str, workers: int):
    path = common.MODELS_DIR / f"{model}.onnx"
    started = time.perf_counter()
    if runtime == "onnxruntime fp32":
        runner = load_runner(path, "cpu", 1)
    else:
        runner = OpenVinoRunner(path, runtime.split()[1], workers, 1)
    return runner, time.perf_counter() - started


def throughput(runner, patches: np.ndarray, workers: int, batch: int) -> float:
    """patches/s with ``workers`` threads each taking the next batch of ``batch`` patches."""
    batches = [patches[i : i + batch] for i in range(0, len(patches), batch)]
    lock, position = threading.Lock(), [0]

    def work() -> None:
        while True:
            with lock:
                if position[0] >= len(batches):
                    return
                chunk = batches[position[0]]
                position[0] += 1
            runner.run(chunk)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(patches) / (time.perf_counter() - started)


def corpus_tracks(limit: int) -> list[Path]:
    with CORPUS_CSV.open() as f:
        rows = [r for r in csv.DictReader(f) if r["path"] and float(r["duration_seconds"] or 0) >= 30]
    step = max(1, len(rows) // limit)  # spread over the packages, not the first album only
    return [Path(r["path"]) for r in rows[::step][:limit]]


def track_patches(path: Path, geometry, max_patches: int) -> np.ndarray:
    samples = decode(io.BytesIO(path.read_bytes()), max_seconds=1200.0).samples
    return np.ascontiguousarray(patch_track(samples, geometry, geometry.hop_frames(None))[:max_patches])


def tf_mean_tag_error(runner, model: str) -> float:
    """Largest |mean tag over a clip − the TF graph's| over the fixtures' real-music clips."""
    worst = 0.0
    for name in REAL_MUSIC_CLIPS:
        audio, reference = load_clip(FIXTURES_DIR / f"{name}.npz")
        expected = reference[f"{MODELS[model].folder}.tags"]
        tags = runner.run(patch_windows(audio, len(expected)))["tags"]
        worst = max(worst, float(np.abs(tags.mean(axis=0) - expected.mean(axis=0)).max()))
    return worst


def guard_figures(reference: dict, candidate: dict) -> str:
    tags = float(np.abs(candidate["tags"] - reference["tags"]).max())
    a, b = reference["embedding"].astype(np.float64), candidate["embedding"].astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    verdict = "pass" if parity_refusal(reference, candidate) is None else "**refused**"
    return f"{tags:.4f} / {cos.min():.6f} ({verdict})"


def per_model(models: list[str], patches: np.ndarray, rounds: int) -> tuple[str, dict]:
    workers = usable_cpus()
    rows, verdicts = [], {}
    for model in models:
        runners, compile_s = {}, {}
        for runtime in RUNTIMES:
            runners[runtime], compile_s[runtime] = load(model, runtime, workers)
        speeds = {(r, w): [] for r in RUNTIMES for w in (1, workers)}
        for runtime in RUNTIMES:  # one untimed batch each: first-run allocations are not the steady state
            runners[runtime].run(patches[:4])
        for _ in range(rounds):
            for w in (1, workers):
                for runtime in RUNTIMES:
                    speeds[(runtime, w)].append(throughput(runners[runtime], patches, w, 4))
        reference_patches = load_parity_patches(parity_patches_path(common.MODELS_DIR / f"{model}.onnx"))
        fp32 = run_all(runners["onnxruntime fp32"], reference_patches, 4)
        base = {w: np.median(speeds[("onnxruntime fp32", w)]) for w in (1, workers)}
        for runtime in RUNTIMES:
            s1, sw = np.median(speeds[(runtime, 1)]), np.median(speeds[(runtime, workers)])
            guard = (
                "—"
                if runtime == "onnxruntime fp32"
                else guard_figures(fp32, run_all(runners[runtime], reference_patches, 4))
            )
            if runtime == "openvino bf16":
                verdicts[model] = guard
            rows.append(
                [
                    model,
                    runtime,
                    f"{compile_s[runtime]:.2f}",
                    f"{s1:.1f} ({s1 / base[1]:.2f}×)",
                    f"{sw:.1f} ({sw / base[workers]:.2f}×)",
                    guard,
                    f"{tf_mean_tag_error(runners[runtime], model):.4f}",
                ]
            )
        print(f"[precision] {model} done", file=sys.stderr, flush=True)
    header = [
        "model",
        "runtime",
        "compile s",
        "1 worker patches/s",
        f"{workers} workers patches/s",
        "guard: max tag diff / min cosine vs fp32",
        "mean-tag error vs TF",
    ]
    return common.markdown_table(header, rows, "llrrrlr"), verdicts


def corpus_agreement(model: str, tracks: list[Path], max_patches: int) -> str:
    manifest = load_manifest(common.MODELS_DIR / f"{model}.json")
    fp32, _ = load(model, "onnxruntime fp32", 1)
    bf16, _ = load(model, "openvino bf16", usable_cpus())
    embeddings = {"fp32": [], "bf16": []}
    tag_error = 0.0
    for path in tracks:
        patches = track_patches(path, manifest.geometry, max_patches)
        a, b = run_all(fp32, patches, 4), run_all(bf16, patches, 4)
        embeddings["fp32"].append(a["embedding"].mean(axis=0))
        embeddings["bf16"].append(b["embedding"].mean(axis=0))
        tag_error = max(tag_error, float(np.abs(a["tags"].mean(0) - b["tags"].mean(0)).max()))
    raw = {k: np.stack(v) for k, v in embeddings.items()}
    cos = (raw["fp32"] * raw["bf16"]).sum(1) / (
        np.linalg.norm(raw["fp32"], axis=1) * np.linalg.norm(raw["bf16"], axis=1)
    )
    normalised = {k: normalise_catalog(v)[0] for k, v in raw.items()}
    sims = {k: v @ v.T for k, v in normalised.items()}
    for s in sims.values():
        np.fill_diagonal(s, -np.inf)
    top = {k: np.argsort(-s, axis=1)[:, :NEIGHBOURS] for k, s in sims.items()}
    overlap = np.mean([len(set(top["fp32"][i]) & set(top["bf16"][i])) / NEIGHBOURS for i in range(len(tracks))])
    threshold = CALIBRATED_DUPLICATE_THRESHOLDS[model]
    pairs = {k: {tuple(p) for p in np.argwhere(np.triu(s >= threshold, 1))} for k, s in sims.items()}
    union = pairs["fp32"] | pairs["bf16"]
    agree = len(pairs["fp32"] & pairs["bf16"]) / len(union) if union else 1.0
    return "\n".join(
        [
            f"{model}, {len(tracks)} corpus tracks (first {max_patches} patches each, default hop), "
            "fp32 ONNX Runtime vs OpenVINO bf16:",
            f"- track embedding cosine: min {cos.min():.6f}, median {np.median(cos):.6f}",
            f"- mean-tag difference per track: max {tag_error:.4f}",
            f"- top-{NEIGHBOURS} neighbours shared (index normalisation): {overlap:.1%}",
            f"- duplicate pairs at the calibrated threshold {threshold}: fp32 {len(pairs['fp32'])}, bf16 "
            f"{len(pairs['bf16'])}, shared {len(pairs['fp32'] & pairs['bf16'])} (Jaccard {agree:.2f})",
        ]
    )


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def end_to_end(model: str, clips: list[bytes], concurrency: int) -> str:
    rows = []
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        try:
            with common.running_service(model=model, precision=precision, memory_cache_bytes=0) as service:
                ready_s = time.perf_counter() - started
                info = httpx.get(f"{service.url}/models").json()["models"][0]
                latencies = []
                for clip in clips[:8]:
                    t = time.perf_counter()
                    httpx.post(
                        f"{service.url}/suggest-subgenres",
                        content=clip,
                        headers={"content-type": "audio/ogg"},
                        timeout=120,
                    ).raise_for_status()
                    latencies.append(time.perf_counter() - t)
                t = time.perf_counter()
                with futures.ThreadPoolExecutor(concurrency) as pool:
                    list(
                        pool.map(
                            lambda c: httpx.post(
                                f"{service.url}/taggram", content=c, timeout=300, headers={"content-type": "audio/ogg"}
                            ).raise_for_status(),
                            clips,
                        )
                    )
                rate = len(clips) / (time.perf_counter() - t)
                rows.append(
                    [
                        precision,
                        f"{info['runtime']} {info['precision']}",
                        f"{ready_s:.1f}",
                        f"{np.median(latencies) * 1000:.0f}",
                        f"{rate:.2f}",
                        f"{vm_hwm_mib(service.process.pid):.0f}",
                    ]
                )
        except RuntimeError as error:
            last = [line for line in str(error).splitlines() if "ERROR" in line]
            rows.append(
                [precision, f"refused: {last[-1].split('cannot start: ')[-1] if last else error}", "—", "—", "—", "—"]
            )
    header = [
        "TAGGRAM_PRECISION",
        "serves with",
        "start to ready s",
        "sign-up median ms (30 s clip)",
        f"30 s clips/s ({concurrency} concurrent)",
        "peak RSS MiB",
    ]
    return common.markdown_table(header, rows, "llrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="models for the per-model table")
    parser.add_argument("--patches", type=int, default=120, help="real patches per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--corpus-model", default="msd-musicnn")
    parser.add_argument("--corpus-tracks", type=int, default=80)
    parser.add_argument("--corpus-patches", type=int, default=10, help="patches per corpus track")
    parser.add_argument("--clips", type=int, default=16, help="30 s clips for the end-to-end part")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)

    from corpus.music import cut_clip

    flags = this_cpu_flags()
    tracks = corpus_tracks(max(args.corpus_tracks, args.clips))
    geometry = load_manifest(common.MODELS_DIR / "msd-musicnn.json").geometry
    patches = np.concatenate([track_patches(p, geometry, 40) for p in tracks[:3]])[: args.patches]
    table, _verdicts = per_model([m.strip() for m in args.models.split(",")], patches, args.rounds)
    agreement = corpus_agreement(args.corpus_model, tracks[: args.corpus_tracks], args.corpus_patches)
    clips = [cut_clip(p, 0.0, 30.0) for p in tracks[: args.clips]]
    e2e = end_to_end(args.corpus_model, clips, concurrency=usable_cpus() * 2)
    body = "\n".join(
        [
            f"## Precision: fp32 vs bf16 ({SECTION})",
            "",
            *common.environment_lines(["bench.precision", *(argv if argv is not None else sys.argv[1:])]),
            f"- CPU flags that decide: {', '.join(f for f in DECIDING_FLAGS if f in flags) or 'none'}; native bf16 "
            f"({' or '.join(sorted(NATIVE_BF16_FLAGS))}): {'yes' if native_bf16(flags) else 'no'}",
            f"- batch policy here: {batch_policy(Settings(), on_cuda=False)}",
            "",
            f"Raw inference, {len(patches)} real patches of 3 corpus tracks, batch 4, median of {args.rounds} "
            "interleaved rounds (× = over ONNX Runtime fp32 in the same column); the guard on the 15 reference "
            "patches (budget 0.02 / 0.9995); the mean-tag error against the TF graphs on the fixtures' 3 real-music "
            "clips:",
            "",
            table,
            "",
            agreement,
            "",
            f"End to end ({args.corpus_model} only, cache off, {len(clips)} clips):",
            "",
            e2e,
        ]
    )
    print(body)
    if not args.no_write:
        common.update_report(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
