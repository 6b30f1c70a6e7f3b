"""Specification of model_export: the exported ONNX graphs ARE musicnn's TF graphs, fed a float32 log-mel computed
inside the graph, and the build that makes them is pinned, complete, idempotent and deterministic.

References are the committed outputs of the original TF1 graphs (tests/fixtures/reference, written by
model_export/reference.py) and librosa's mel spectrogram. The contract's numbers are written out below rather
than imported from model_export, so that changing the code cannot silently change the specification.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_export import export, source
from model_export.checkpoint import read_checkpoint
from model_export.tagger import MODELS, build_tagger, inference_weight_names

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "reference"
FIXTURE_MANIFEST = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
CACHE_DIR = REPO_ROOT / ".cache" / "musicnn"

MODEL_NAMES = list(MODELS)
MUSICNN_MODELS = [name for name in MODEL_NAMES if MODELS[name].architecture == "musicnn"]
CLIPS = sorted(path.stem for path in FIXTURES.glob("*.npz"))

# --- the contract ---
SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + N_FFT  # 48128
N_LABELS = 50
TAGS_MAX_ABS_ERROR = 1e-4  # per patch, vs the TF graph
EMBEDDING_MAX_REL_ERROR = 1e-3  # per patch: max|ours − TF| / max|TF|
LOGMEL_MAX_ABS_ERROR = 1e-4  # per patch, vs librosa + log10(1 + 10000·mel) in float32
BATCH_INDEPENDENCE = 1e-5  # absolute for values of order 1; scaled by the row's magnitude above 1 (see the test)
# Graph outputs by architecture: output name -> (last dim, the TF reference it reproduces or None).
OUTPUTS = {
    "musicnn": {"tags": (50, "tags"), "embedding": (200, "penultimate"), "mean_pool": (753, "mean_pool"),
                "max_pool": (753, "max_pool"), "logmel": (N_MELS, None)},
    "vgg": {"tags": (50, "tags"), "embedding": (256, "pool5"), "logmel": (N_MELS, None)},
}  # fmt: skip
# Ops that would compute the spectrogram with ONNX's signal ops, which lack kernels on common execution providers.
SIGNAL_OPS = {"STFT", "DFT", "MelWeightMatrix", "HannWindow", "HammingWindow", "BlackmanWindow"}
FLOAT16_MAX = 65_504.0


# --- helpers: an independent implementation of the patching and of musicnn's (float32) log-mel ---


@cache
def load_clip(clip: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(float32 mono 16 kHz audio, the TF reference arrays) of one fixture clip."""
    with np.load(FIXTURES / f"{clip}.npz") as data:
        arrays = {key: data[key] for key in data.files}
    assert int(arrays.pop("sample_rate")) == SAMPLE_RATE
    return arrays.pop("audio_int16").astype(np.float32) / np.float32(32768), arrays


def full_patches(n_samples: int) -> int:
    """Full 187-frame patches of a centred STFT (1 + n // hop frames)."""
    return (1 + n_samples // HOP) // PATCH_FRAMES


def patch_windows(audio: np.ndarray) -> np.ndarray:
    """[P, 48128]: patch i = samples [187·256·i, 187·256·i + 48128) of the audio left-padded with 256 zeros
    (and zero-padded at the end, like librosa's centred STFT)."""
    padded = np.concatenate([np.zeros(N_FFT // 2, np.float32), audio, np.zeros(PATCH_SAMPLES, np.float32)])
    step = PATCH_FRAMES * HOP
    return np.stack([padded[i * step : i * step + PATCH_SAMPLES] for i in range(full_patches(len(audio)))])


@cache
def librosa_logmel(clip: str) -> np.ndarray:
    """[P, 187, 96]: librosa's power mel (its defaults: Slaney, centred zero-padded STFT), then
    log10(1 + 10000·mel) in float32."""
    import librosa

    audio, _ = load_clip(clip)
    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    assert mel.dtype == np.float32
    logmel = np.log10(np.float32(1) + np.float32(10_000) * mel).T
    patches = full_patches(len(audio))
    return logmel[: patches * PATCH_FRAMES].reshape(patches, PATCH_FRAMES, N_MELS)


def relative_error_per_patch(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """max|actual − expected| / max|expected|, one figure per patch (row)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.maximum(np.abs(expected).max(axis=1), np.finfo(np.float32).tiny)
    return np.abs(actual - expected).max(axis=1) / scale


def abs_error_per_patch(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return np.abs(actual - expected).reshape(len(actual), -1).max(axis=1)


def manifest_of(models_dir: Path, name: str) -> dict:
    return json.loads((models_dir / f"{name}.json").read_text(encoding="utf-8"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def session(models_dir):
    """name -> an onnxruntime CPU session on models/<name>.onnx (one per model)."""
    sessions: dict[str, ort.InferenceSession] = {}

    def get(name: str) -> ort.InferenceSession:
        if name not in sessions:
            sessions[name] = ort.InferenceSession(str(models_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        return sessions[name]

    return get


def run(sess: ort.InferenceSession, waveform: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"waveform": waveform})))


@pytest.fixture(scope="module")
def clip_outputs(session):
    """(name, clip) -> the graph's outputs for all the clip's patches in one batch (computed once)."""
    results: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def get(name: str, clip: str) -> dict[str, np.ndarray]:
        if (name, clip) not in results:
            audio, _ = load_clip(clip)
            results[name, clip] = run(session(name), patch_windows(audio))
        return results[name, clip]

    return get


@cache
def checkpoint_tensors(folder: str) -> dict[str, np.ndarray]:
    """A model's checkpoint, fetched and verified against the pinned digests, read without TensorFlow."""
    wheel = source.download_wheel(CACHE_DIR)
    return read_checkpoint(source.extract_checkpoint(wheel, folder, CACHE_DIR).prefix)


def reference(name: str, clip: str, output: str) -> np.ndarray:
    _, arrays = load_clip(clip)
    key = OUTPUTS[MODELS[name].architecture][output][1]
    return arrays[f"{MODELS[name].folder}.{key}"]


# --- the fixtures exercise what they must ---


def test_fixtures_hold_every_model_and_cover_loud_audio_and_the_padded_end():
    assert len(CLIPS) >= 8
    for clip in CLIPS:
        audio, arrays = load_clip(clip)
        patches = full_patches(len(audio))
        assert patches >= 1
        for name in MODEL_NAMES:
            for output, (dim, key) in OUTPUTS[MODELS[name].architecture].items():
                if key is not None:
                    assert arrays[f"{MODELS[name].folder}.{key}"].shape == (patches, dim), (clip, name, output)
    records = FIXTURE_MANIFEST["clips"]
    assert set(records) == set(CLIPS)
    # loud clips: musicnn's float16 extractor would have produced inf for them; ours must not
    assert any(r["float16_extractor_overflows"] for r in records.values())
    # a last patch that reads into the centred STFT's zero padding at the end of the audio
    assert any(r["last_patch_touches_padded_end"] for r in records.values())
    assert max(full_patches(len(load_clip(clip)[0])) for clip in CLIPS) >= 3  # a middle patch, not only first/last


# --- parity with the TF graphs and with librosa ---


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tags_match_tensorflow_within_1e_4_absolute_on_every_patch(clip_outputs, name, clip):
    errors = abs_error_per_patch(clip_outputs(name, clip)["tags"], reference(name, clip, "tags"))
    assert errors.max() <= TAGS_MAX_ABS_ERROR, f"max |tags − TF| per patch: {errors}"


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_embedding_matches_tensorflow_within_1e_3_relative_on_every_patch(clip_outputs, name, clip):
    errors = relative_error_per_patch(clip_outputs(name, clip)["embedding"], reference(name, clip, "embedding"))
    assert errors.max() <= EMBEDDING_MAX_REL_ERROR, f"relative embedding error per patch: {errors}"


@pytest.mark.parametrize("pool", ["mean_pool", "max_pool"])
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", MUSICNN_MODELS)
def test_musicnn_pools_match_tensorflow_within_1e_3_relative_on_every_patch(clip_outputs, name, clip, pool):
    errors = relative_error_per_patch(clip_outputs(name, clip)[pool], reference(name, clip, pool))
    assert errors.max() <= EMBEDDING_MAX_REL_ERROR, f"relative {pool} error per patch: {errors}"


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_in_graph_logmel_matches_librosa_within_1e_4_on_every_patch_first_and_last_included(clip_outputs, name, clip):
    expected = librosa_logmel(clip)
    actual = clip_outputs(name, clip)["logmel"]
    assert actual.shape == expected.shape == (full_patches(len(load_clip(clip)[0])), PATCH_FRAMES, N_MELS)
    errors = abs_error_per_patch(actual, expected)
    assert errors.max() <= LOGMEL_MAX_ABS_ERROR, f"max |logmel − librosa| per patch (first .. last): {errors}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loud_audio_gives_finite_outputs_where_musicnn_float16_extractor_overflowed(clip_outputs, name):
    loud = [clip for clip, record in FIXTURE_MANIFEST["clips"].items() if record["float16_extractor_overflows"]]
    assert loud
    for clip in loud:
        outputs = clip_outputs(name, clip)
        # 10000·mel beyond float16's range: log10(1 + 10000·mel) > log10(65505) and still finite
        assert outputs["logmel"].max() > np.log10(1 + FLOAT16_MAX), clip
        for output, values in outputs.items():
            assert np.isfinite(values).all(), (clip, output)


# --- the graph contract ---


def dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_inputs_and_outputs_match_the_manifest_with_a_dynamic_batch_axis(models_dir, session, name):
    model = onnx.load(models_dir / f"{name}.onnx")
    manifest = manifest_of(models_dir, name)
    float32 = onnx.TensorProto.FLOAT

    (graph_input,) = model.graph.input
    assert graph_input.name == manifest["input"]["name"] == "waveform"
    assert graph_input.type.tensor_type.elem_type == float32 and manifest["input"]["dtype"] == "float32"
    assert dims(graph_input) == manifest["input"]["shape"] == ["batch", PATCH_SAMPLES]

    expected = OUTPUTS[MODELS[name].architecture]
    graph_outputs = {o.name: o for o in model.graph.output}
    assert set(graph_outputs) == set(manifest["outputs"]) == set(expected)
    for output, (dim, _) in expected.items():
        declared = manifest["outputs"][output]
        shape = ["batch", PATCH_FRAMES, dim] if output == "logmel" else ["batch", dim]
        assert graph_outputs[output].type.tensor_type.elem_type == float32 and declared["dtype"] == "float32", output
        assert dims(graph_outputs[output]) == declared["shape"] == shape, output
        assert declared["dim"] == dim, output

    # onnxruntime sees the same names and shapes
    sess = session(name)
    inputs = [(i.name, i.shape, i.type) for i in sess.get_inputs()]
    assert inputs == [("waveform", ["batch", PATCH_SAMPLES], "tensor(float)")]
    assert {o.name: o.shape for o in sess.get_outputs()} == {k: v["shape"] for k, v in manifest["outputs"].items()}


def test_op_allow_list_excludes_the_signal_ops():
    assert not export.ALLOWED_OPS & SIGNAL_OPS
    assert not export.ALLOWED_OPS & {"If", "Loop", "Scan"}  # no control flow either


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_uses_only_allow_listed_standard_ops(models_dir, name):
    model = onnx.load(models_dir / f"{name}.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert ops <= export.ALLOWED_OPS, f"outside the allow-list: {sorted(ops - export.ALLOWED_OPS)}"
    assert not ops & SIGNAL_OPS
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}, "custom-domain ops"
    assert not model.functions, "local functions hide ops from the allow-list"
    assert not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for node in model.graph.node for a in node.attribute), "subgraphs"  # fmt: skip
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == manifest_of(models_dir, name)["onnx"]["opset"] == export.OPSET


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_passes_the_full_onnx_checker(models_dir, name):
    onnx.checker.check_model(onnx.load(models_dir / f"{name}.onnx"), full_check=True)


@pytest.fixture(scope="module")
def patch_pool() -> np.ndarray:
    """All fixture patches (music, synthetic, silence): 15 distinct [48128] windows."""
    return np.concatenate([patch_windows(load_clip(clip)[0]) for clip in CLIPS])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_graph_runs_with_batch_1_and_7_and_each_row_is_independent_of_the_rest_of_the_batch(session, patch_pool, name):
    sess = session(name)
    assert len(patch_pool) >= 14
    alone = [run(sess, patch_pool[i : i + 1]) for i in range(7)]
    batch = run(sess, patch_pool[:7])
    # the same first patch surrounded by other patches, at another position
    mixed = run(sess, np.concatenate([patch_pool[8:11], patch_pool[:1], patch_pool[11:14]]))
    outputs = OUTPUTS[MODELS[name].architecture]
    for output, (dim, _) in outputs.items():
        tail = (PATCH_FRAMES, dim) if output == "logmel" else (dim,)
        assert all(a[output].shape == (1, *tail) for a in alone), output
        assert batch[output].shape == mixed[output].shape == (7, *tail), output
        for i in range(7):
            single = alone[i][output][0]
            # 1e-5 absolute for outputs of order 1 (tags, embedding, logmel); relative to the row's magnitude for
            # large ones (max_pool reaches ~100, where float32 spacing is already 7.6e-6)
            tolerance = BATCH_INDEPENDENCE * max(1.0, float(np.abs(single).max()))
            assert np.abs(batch[output][i] - single).max() <= tolerance, (output, i)
        tolerance = BATCH_INDEPENDENCE * max(1.0, float(np.abs(alone[0][output]).max()))
        assert np.abs(mixed[output][3] - alone[0][output][0]).max() <= tolerance, output
    # and rows really differ from one another: the comparisons above can fail
    assert np.abs(batch["tags"][0] - batch["tags"][1]).max() > 1e-3


# --- the manifest ---


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_manifest_names_the_model_and_its_pinned_source(models_dir, name):
    manifest = manifest_of(models_dir, name)
    spec = MODELS[name]
    assert manifest["name"] == name
    assert isinstance(manifest["version"], str) and "0.1.0" in manifest["version"]
    assert manifest["architecture"] == spec.architecture
    src = manifest["source"]
    assert (src["package"], src["version"], src["checkpoint"]) == ("musicnn", "0.1.0", spec.folder)
    assert src["files_sha256"] == FIXTURE_MANIFEST["musicnn_checkpoint_sha256"][spec.folder]  # what TF was run on
    assert set(src["files_sha256"]) == {".index", ".data-00000-of-00001"}
    assert src["wheel_sha256"] == source.WHEEL_SHA256


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_manifest_onnx_sha256_is_the_actual_digest_of_the_graph_file(models_dir, name):
    manifest = manifest_of(models_dir, name)
    assert manifest["onnx"]["file"] == f"{name}.onnx"
    assert manifest["onnx"]["sha256"] == file_sha256(models_dir / f"{name}.onnx")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_manifest_declares_labels_patching_and_frontend(models_dir, name):
    manifest = manifest_of(models_dir, name)
    labels = manifest["labels"]
    assert len(labels) == N_LABELS == len(set(labels)) and all(isinstance(x, str) and x for x in labels)
    assert labels == MODELS[name].labels
    assert (labels[0], labels[-1]) == (("rock", "happy") if name.startswith("msd") else ("guitar", "choral"))
    assert manifest["sample_rate"] == SAMPLE_RATE
    assert manifest["patch_samples"] == PATCH_SAMPLES
    assert manifest["patch_frames"] == PATCH_FRAMES
    assert manifest["frame_hop"] == HOP
    assert manifest["default_patch_hop_frames"] == PATCH_FRAMES
    assert manifest["frontend"] == {
        "n_fft": N_FFT, "hop_length": HOP, "window": "hann (periodic)", "power": 2.0, "n_mels": N_MELS,
        "fmin": 0.0, "fmax": SAMPLE_RATE / 2, "mel_scale": "slaney", "mel_norm": "slaney",
        "compression": "log10(1 + 10000·mel), float32", "center_padding_samples": N_FFT // 2,
        "center_pad_mode": "constant (zeros)",
    }  # fmt: skip
    for output, declared in manifest["outputs"].items():
        assert isinstance(declared["meaning"], str) and declared["meaning"].strip(), output


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_manifest_parity_figures_meet_the_targets_and_are_what_the_graph_measures(clip_outputs, models_dir, name):
    figures = manifest_of(models_dir, name)["parity"]
    assert figures["clips"] == len(CLIPS)
    assert figures["patches"] == sum(full_patches(len(load_clip(clip)[0])) for clip in CLIPS)
    assert figures["tags_max_abs_error"] <= TAGS_MAX_ABS_ERROR
    assert figures["embedding_max_rel_error"] <= EMBEDDING_MAX_REL_ERROR
    assert figures["logmel_max_abs_error_vs_librosa"] <= LOGMEL_MAX_ABS_ERROR
    measured = {
        "tags_max_abs_error": max(
            abs_error_per_patch(clip_outputs(name, c)["tags"], reference(name, c, "tags")).max() for c in CLIPS),
        "embedding_max_rel_error": max(
            relative_error_per_patch(clip_outputs(name, c)["embedding"], reference(name, c, "embedding")).max()
            for c in CLIPS),
        "logmel_max_abs_error_vs_librosa": max(
            abs_error_per_patch(clip_outputs(name, c)["logmel"], librosa_logmel(c)).max() for c in CLIPS),
    }  # fmt: skip
    for key, value in measured.items():
        assert figures[key] == pytest.approx(float(value), rel=0.1, abs=1e-7), key


# --- the build: idempotent, deterministic ---


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_second_build_all_builds_nothing_and_leaves_every_file_untouched(models_dir):
    before = snapshot(models_dir)
    assert {f"{n}{ext}" for n in MODEL_NAMES for ext in (".onnx", ".json")} <= set(before)
    assert export.build_all(MODEL_NAMES, models_dir, cache_dir=CACHE_DIR) == []
    assert snapshot(models_dir) == before


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_parity_patches_shipped_next_to_the_graph_are_the_fixtures_patches_exactly(models_dir, name):
    """What the service's bf16 parity guard runs (docs/precision.md): the patches the export's parity is measured on."""
    from model_export.parity import reference_windows
    from service.artefacts.parity_patches import load_parity_patches, parity_patches_path

    shipped = load_parity_patches(parity_patches_path(models_dir / f"{name}.onnx"))
    expected = reference_windows(MODELS[name], export.FIXTURES_DIR)
    assert shipped.dtype == np.float32 and shipped.shape == (15, 48128)
    assert np.array_equal(shipped, expected)


def test_built_files_are_readable_by_other_users(models_dir):
    """The Docker image exports as root and serves as an unprivileged user (`COPY --from` keeps file modes)."""
    for name in MODEL_NAMES:
        for path in (models_dir / f"{name}.onnx", models_dir / f"{name}.json", models_dir / f"{name}.parity.npz"):
            mode = path.stat().st_mode & 0o777
            assert mode & 0o044 == 0o044, f"{path.name} is {oct(mode)}: group/others cannot read it"


def test_a_modified_graph_or_a_manifest_from_another_build_is_not_up_to_date(models_dir, tmp_path):
    spec = MODELS["msd-vgg"]
    onnx_path, manifest_path = tmp_path / f"{spec.name}.onnx", tmp_path / f"{spec.name}.json"
    shutil.copyfile(models_dir / onnx_path.name, onnx_path)
    shutil.copyfile(models_dir / manifest_path.name, manifest_path)
    key = export.build_key(spec)
    assert not export.is_up_to_date(onnx_path, manifest_path, key)  # without its parity patches (docs/precision.md)
    shutil.copyfile(models_dir / f"{spec.name}.parity.npz", tmp_path / f"{spec.name}.parity.npz")
    assert export.is_up_to_date(onnx_path, manifest_path, key)

    flip_byte(onnx_path, onnx_path.stat().st_size // 2)
    assert not export.is_up_to_date(onnx_path, manifest_path, key)
    flip_byte(onnx_path, onnx_path.stat().st_size // 2)
    assert export.is_up_to_date(onnx_path, manifest_path, key)

    assert not export.is_up_to_date(onnx_path, manifest_path, "0" * 64)  # other code, weights or versions
    manifest_path.unlink()
    assert not export.is_up_to_date(onnx_path, manifest_path, key)


def test_exporting_a_model_again_gives_the_same_bytes_as_the_build(models_dir):
    """The build exported it once (in its own process); exporting it again here must give identical bytes."""
    spec = MODELS["msd-vgg"]
    again = export.export_onnx(spec, checkpoint_tensors(spec.folder))
    assert hashlib.sha256(again).hexdigest() == file_sha256(models_dir / f"{spec.name}.onnx")
    assert again == (models_dir / f"{spec.name}.onnx").read_bytes()


# --- the weights: pinned, and every inference weight used ---


def test_a_tampered_wheel_is_rejected_before_anything_is_built(tmp_path):
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "models"
    cache_dir.mkdir()
    wheel = cache_dir / source.WHEEL_NAME
    shutil.copyfile(source.download_wheel(CACHE_DIR), wheel)
    flip_byte(wheel, wheel.stat().st_size // 2)
    with pytest.raises(source.SourceError, match="sha256"):
        export.build_all(["msd-vgg"], out_dir, cache_dir=cache_dir)
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("suffix", source.CHECKPOINT_SUFFIXES)
def test_a_checkpoint_file_that_does_not_match_its_pinned_digest_is_rejected(tmp_path, suffix):
    """A wheel (here a hand-made one, since the real wheel's own digest is checked first) whose checkpoint file
    differs from the pinned digest by one byte."""
    folder = "MSD_vgg"
    fake_wheel = tmp_path / "tampered.whl"
    with zipfile.ZipFile(source.download_wheel(CACHE_DIR)) as real, zipfile.ZipFile(fake_wheel, "w") as fake:
        for member in source.CHECKPOINT_SUFFIXES:
            data = bytearray(real.read(f"musicnn/{folder}/{member}"))
            if member == suffix:
                data[len(data) // 2] ^= 0x01
            fake.writestr(f"musicnn/{folder}/{member}", bytes(data))
    with pytest.raises(source.SourceError, match="pinned"):
        source.extract_checkpoint(fake_wheel, folder, tmp_path / "cache")


def test_a_tampered_cached_checkpoint_file_is_replaced_from_the_verified_wheel(tmp_path):
    folder = "MSD_vgg"
    wheel = source.download_wheel(CACHE_DIR)
    checkpoint = source.extract_checkpoint(wheel, folder, tmp_path)
    data_file = Path(checkpoint.prefix + ".data-00000-of-00001")
    flip_byte(data_file, 1000)
    assert file_sha256(data_file) != source.CHECKPOINT_SHA256[folder][".data-00000-of-00001"]
    source.extract_checkpoint(wheel, folder, tmp_path)
    assert file_sha256(data_file) == source.CHECKPOINT_SHA256[folder][".data-00000-of-00001"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inference_weights_are_exactly_the_tf_graph_variables(name):
    tensors = checkpoint_tensors(MODELS[name].folder)
    restore = FIXTURE_MANIFEST["sanity"]["checkpoint_restore"][MODELS[name].folder]  # counted by TF itself
    weights = inference_weight_names(tensors)
    assert len(weights) == restore["graph_variables"]  # 64 musicnn, 36 vgg
    assert len(tensors) - len(weights) == restore["unused_checkpoint_entries_optimizer"]  # Adam slots, beta powers
    assert not {w for w in weights if "Adam" in w or w.endswith("_power")}
    build_tagger(MODELS[name], tensors)  # uses them all


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_building_fails_naming_the_weight_when_any_inference_weight_is_missing(name):
    tensors = checkpoint_tensors(MODELS[name].folder)
    built_anyway = []
    for weight in sorted(inference_weight_names(tensors)):
        reduced = {k: v for k, v in tensors.items() if k != weight}
        try:
            build_tagger(MODELS[name], reduced)
        except KeyError as error:
            assert weight in str(error)
        else:
            built_anyway.append(weight)
    assert not built_anyway, f"built without {built_anyway}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_an_unknown_extra_weight_is_reported_but_extra_optimizer_state_is_ignored(name):
    tensors = checkpoint_tensors(MODELS[name].folder)
    extra = np.zeros((200, 50), np.float32)
    with pytest.raises(ValueError, match="dense_9/kernel"):
        build_tagger(MODELS[name], {**tensors, "dense_9/kernel": extra})
    build_tagger(MODELS[name], {**tensors, "dense_9/kernel/Adam": extra, "dense_9/kernel/Adam_1": extra})


@pytest.mark.parametrize("name", list(MODELS))
def test_built_graphs_do_not_depend_on_where_the_repo_is_checked_out(models_dir, name):
    data = (models_dir / f"{name}.onnx").read_bytes()
    assert str(REPO_ROOT).encode() not in data and b"stack_trace" not in data
    assert all(not node.metadata_props for node in onnx.load_from_string(data).graph.node)
