"""Specification of model_export/checkpoint.py: a TensorFlow V2 checkpoint reader that needs no TensorFlow.

On the real musicnn checkpoints it returns every tensor, bit-exact (TF's own per-tensor crc32c agrees), with the
shapes musicnn's models.py implies; on tables written here in the LevelDB format it round-trips; malformed input
raises CheckpointError.
"""

from __future__ import annotations

import itertools
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_export import source
from model_export.checkpoint import CheckpointError, parse_entry, read_checkpoint, read_table

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "musicnn"
DATA_SUFFIX = ".data-00000-of-00001"
FOLDERS = ["MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg"]

# Shapes implied by musicnn 0.1.0 models.py (TF layouts: conv HWIO = (time, freq, in, out), dense (in, out)).
MUSICNN_SHAPES = {
    "batch_normalization/gamma": (1,),  # on the input log-mel
    "conv2d/kernel": (7, 38, 1, 204),  # timbral, 0.4·96 mel bands
    "conv2d_1/kernel": (7, 67, 1, 204),  # timbral, 0.7·96
    "conv2d_2/kernel": (128, 1, 1, 51),  # temporal
    "conv2d_3/kernel": (64, 1, 1, 51),
    "conv2d_4/kernel": (32, 1, 1, 51),
    "conv2d_5/kernel": (7, 561, 1, 64),  # mid-end over the 2·204 + 3·51 front-end features
    "conv2d_6/kernel": (7, 64, 1, 64),
    "conv2d_7/kernel": (7, 64, 1, 64),
    "conv2d_7/bias": (64,),
    "batch_normalization_9/moving_variance": (1506,),  # (max, mean) pooled 753 features
    "dense/kernel": (1506, 200),
    "dense_1/kernel": (200, 50),
    "dense_1/bias": (50,),
}
VGG_SHAPES = {
    "batch_normalization/gamma": (1,),
    "1CNN/kernel": (3, 3, 1, 128),
    **{f"{i}CNN/kernel": (3, 3, 128, 128) for i in range(2, 6)},
    "batch_normalization_5/moving_mean": (128,),
    "dense/kernel": (256, 50),  # flattened pool5: 2 (time) × 1 (freq) × 128
    "dense/bias": (50,),
}
INFERENCE_TENSORS = {"musicnn": 64, "vgg": 36}  # 8 conv + 2 dense (kernel, bias), 11 batch norms × 4; 5 + 1, 6 × 4

# --- independent encoders: varints, protobuf fields, LevelDB blocks and tables, TF bundle entries ---

TABLE_MAGIC = 0xDB4775248B80FB57
DT_CODES = {np.dtype("<f4"): 1, np.dtype("<f8"): 2, np.dtype("<i4"): 3, np.dtype("<i8"): 9, np.dtype("bool"): 10}


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


@cache
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def masked_crc32c(data: bytes) -> int:
    """LevelDB's / TF's masked CRC-32C."""
    table, crc = _crc32c_table(), 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def pb_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def pb_bytes(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def pb_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def bundle_entry(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int = 0, shard: int = 0,
                 extra: bytes = b"") -> bytes:  # fmt: skip
    """A BundleEntryProto (tensor_bundle.proto), zero-valued fields omitted as proto3 does."""
    dims = b"".join(pb_bytes(2, pb_varint(1, d) if d else b"") for d in shape)  # TensorShapeProto.dim.size
    message = pb_varint(1, dtype) + pb_bytes(2, dims)
    message += pb_varint(3, shard) if shard else b""
    message += pb_varint(4, offset) if offset else b""
    message += pb_varint(5, size) if size else b""
    return message + pb_fixed32(6, crc) + extra


BUNDLE_HEADER = pb_varint(1, 1) + pb_bytes(3, pb_varint(1, 1))  # num_shards 1, little-endian, version {producer 1}


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    """A LevelDB block: prefix-compressed keys, restart points every restart_interval entries."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def table(items: dict[bytes, bytes], entries_per_block: int = 4) -> bytes:
    """A LevelDB table (leveldb/doc/table_format.md), uncompressed: data blocks, metaindex, index, footer."""
    out = bytearray()

    def append_block(contents: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + b"\x00" + struct.pack("<I", masked_crc32c(contents + b"\x00")))
        return handle

    ordered = sorted(items.items())
    index = []
    for start in range(0, len(ordered), entries_per_block):
        chunk = ordered[start : start + entries_per_block]
        index.append((chunk[-1][0], append_block(block(chunk))))
    metaindex_handle = append_block(block([]))
    index_handle = append_block(block(index, restart_interval=1))
    return bytes(out) + (metaindex_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC)


def write_checkpoint(prefix: Path, tensors: dict[str, np.ndarray], entries_per_block: int = 4) -> None:
    """A single-shard TF V2 checkpoint: tensors laid out back to back in the data file, in key order."""
    data, items = bytearray(), {b"": BUNDLE_HEADER}
    for name in sorted(tensors):
        array = tensors[name].astype(tensors[name].dtype.newbyteorder("<"), order="C")  # keeps 0-d arrays 0-d
        raw = array.tobytes()
        crc = masked_crc32c(raw) if len(raw) <= 64_000 else 0  # unchecked by the reader; pure-Python CRC is slow
        items[name.encode()] = bundle_entry(DT_CODES[array.dtype], array.shape, len(data), len(raw), crc)
        data += raw
    Path(f"{prefix}.index").write_bytes(table(items, entries_per_block))
    Path(f"{prefix}{DATA_SUFFIX}").write_bytes(bytes(data))


def footer_handles(index: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """(metaindex handle, index handle) from a table's 48-byte footer."""
    footer = index[-48:]
    meta_offset, pos = read_varint(footer, 0)
    meta_size, pos = read_varint(footer, pos)
    index_offset, pos = read_varint(footer, pos)
    index_size, _ = read_varint(footer, pos)
    return (meta_offset, meta_size), (index_offset, index_size)


# --- the real checkpoints ---


@cache
def real_prefix(folder: str) -> str:
    """The pinned checkpoint of one musicnn model folder, fetched and verified."""
    return source.extract_checkpoint(source.download_wheel(CACHE_DIR), folder, CACHE_DIR).prefix


@cache
def real_tensors(folder: str) -> dict[str, np.ndarray]:
    return read_checkpoint(real_prefix(folder))


@pytest.mark.parametrize("folder", FOLDERS)
def test_real_checkpoint_has_the_layer_shapes_musicnn_models_py_implies(folder):
    tensors = real_tensors(folder)
    expected = MUSICNN_SHAPES if folder.endswith("musicnn") else VGG_SHAPES
    assert {name: tensors[name].shape for name in expected} == expected


@pytest.mark.parametrize("folder", FOLDERS)
def test_real_checkpoint_values_are_finite_float32_and_variances_positive(folder):
    tensors = real_tensors(folder)
    for name, array in tensors.items():
        assert array.dtype == np.float32, name
        assert np.isfinite(array).all(), name
        if name.endswith("moving_variance"):
            assert (array > 0).all(), name
    assert any(np.abs(array).max() > 0.1 for array in tensors.values())  # not all zeros


@pytest.mark.parametrize("folder", FOLDERS)
def test_real_checkpoint_holds_inference_weights_plus_adam_slots_of_the_trainable_ones(folder):
    tensors = real_tensors(folder)
    optimizer = {n for n in tensors if "/Adam" in n} | {"beta1_power", "beta2_power"}
    weights = set(tensors) - optimizer
    assert len(weights) == INFERENCE_TENSORS["musicnn" if folder.endswith("musicnn") else "vgg"]
    trainable = {n for n in weights if "moving_" not in n}
    assert {n for n in tensors if "/Adam" in n} == {f"{w}/Adam{s}" for w in trainable for s in ("", "_1")}
    for name in trainable:
        assert tensors[f"{name}/Adam"].shape == tensors[f"{name}/Adam_1"].shape == tensors[name].shape, name
    assert tensors["beta1_power"].shape == tensors["beta2_power"].shape == ()


@pytest.mark.parametrize("folder", FOLDERS)
def test_real_checkpoint_entries_tile_the_data_file_and_match_tf_crc32c(folder):
    prefix = real_prefix(folder)
    items = read_table(Path(f"{prefix}.index").read_bytes())
    assert b"" in items  # the bundle header
    entries = {key.decode(): parse_entry(value) for key, value in items.items() if key}
    spans = sorted((e.offset, e.offset + e.size) for e in entries.values())
    assert spans[0][0] == 0 and spans[-1][1] == Path(f"{prefix}{DATA_SUFFIX}").stat().st_size
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans)), "gaps or overlaps"
    # TF stored a masked crc32c of each tensor's bytes (BundleEntryProto field 6); the reader does not check it,
    # so checking it here proves the reader returns TF's bytes. Small tensors only: pure-Python CRC is slow.
    tensors = real_tensors(folder)
    checked = 0
    for name, value in items.items():
        if value and name and tensors[name.decode()].nbytes <= 64_000:
            stored = next(v for n, w, v in _pb_fields(value) if n == 6)
            assert masked_crc32c(tensors[name.decode()].tobytes()) == struct.unpack("<I", stored)[0], name
            checked += 1
    assert checked >= 40


def _pb_fields(message: bytes):
    pos = 0
    while pos < len(message):
        tag, pos = read_varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(message, pos)
        elif wire == 2:
            length, pos = read_varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = message[pos : pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, wire, value


# --- round trip through tables written here ---


def test_a_real_checkpoint_rewritten_by_this_encoder_reads_back_identically(tmp_path):
    original = real_tensors("MSD_vgg")
    write_checkpoint(tmp_path / "copy", original, entries_per_block=7)
    copy = read_checkpoint(f"{tmp_path / 'copy'}")
    assert set(copy) == set(original)
    for name, array in original.items():
        assert copy[name].dtype == array.dtype and copy[name].shape == array.shape, name
        assert copy[name].tobytes() == array.tobytes(), name


names = st.text(alphabet="ab/_0", min_size=1, max_size=10)
arrays = st.sampled_from(list(DT_CODES)).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=st.dictionaries(names, arrays, max_size=12), entries_per_block=st.integers(1, 5))
def test_any_tensors_written_as_a_checkpoint_read_back_bit_exact(tmp_path, tensors, entries_per_block):
    write_checkpoint(tmp_path / "ckpt", tensors, entries_per_block)
    result = read_checkpoint(f"{tmp_path / 'ckpt'}")
    assert set(result) == set(tensors)
    for name, array in tensors.items():
        assert result[name].dtype == array.dtype and result[name].shape == array.shape, name
        assert result[name].tobytes() == array.tobytes(), name


# --- malformed input raises CheckpointError ---


@pytest.fixture
def real_copy(tmp_path) -> Path:
    """A copy of the MSD_vgg checkpoint in tmp_path: the prefix ``tmp_path / "ckpt"``."""
    prefix = real_prefix("MSD_vgg")
    target = tmp_path / "ckpt"
    Path(f"{target}.index").write_bytes(Path(f"{prefix}.index").read_bytes())
    Path(f"{target}{DATA_SUFFIX}").write_bytes(Path(f"{prefix}{DATA_SUFFIX}").read_bytes())
    assert len(read_checkpoint(target)) == 86  # intact, the copy reads
    return target


def rewrite_index(prefix: Path, change) -> None:
    path = Path(f"{prefix}.index")
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(data)))


def test_bad_magic_raises(real_copy):
    rewrite_index(real_copy, lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="magic"):
        read_checkpoint(real_copy)


@pytest.mark.parametrize("keep", [0, 20, 47, 1000], ids=lambda k: f"first_{k}_bytes")
def test_truncated_index_raises(real_copy, keep):
    rewrite_index(real_copy, lambda d: d[:keep])
    with pytest.raises(CheckpointError):
        read_checkpoint(real_copy)


def test_index_truncated_before_an_intact_footer_raises(real_copy):
    rewrite_index(real_copy, lambda d: d[:200] + d[-48:])
    with pytest.raises(CheckpointError, match="past the end"):
        read_checkpoint(real_copy)


@pytest.mark.parametrize("which", ["index_block", "first_data_block"])
def test_a_compressed_block_flag_raises(real_copy, which):
    def set_snappy_flag(data: bytearray) -> bytearray:
        _, (index_offset, index_size) = footer_handles(bytes(data))
        if which == "index_block":
            data[index_offset + index_size] = 1
        else:  # the first data block starts at 0; its size is in the first index entry's handle
            _, pos = read_varint(data, index_offset)  # shared key bytes (0)
            non_shared, pos = read_varint(data, pos)
            _, pos = read_varint(data, pos)  # value length
            _, pos = read_varint(data, pos + non_shared)  # data block offset (0)
            size, _ = read_varint(data, pos)
            data[size] = 1
        return data

    rewrite_index(real_copy, set_snappy_flag)
    with pytest.raises(CheckpointError, match="compressed"):
        read_checkpoint(real_copy)


def test_truncated_data_file_raises(real_copy):
    path = Path(f"{real_copy}{DATA_SUFFIX}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        read_checkpoint(real_copy)


def test_an_entry_whose_size_does_not_match_its_shape_raises(real_copy):
    items = read_table(Path(f"{real_copy}.index").read_bytes())
    entry = parse_entry(items[b"dense/kernel"])
    items[b"dense/kernel"] = bundle_entry(1, entry.shape, entry.offset, entry.size - 4)
    Path(f"{real_copy}.index").write_bytes(table(items))
    with pytest.raises(CheckpointError, match="size"):
        read_checkpoint(real_copy)


@pytest.mark.parametrize(
    "entry",
    [
        bundle_entry(19, (2,), 0, 4),  # DT_HALF: not a dtype the reader knows
        bundle_entry(1, (2,), 0, 8, shard=1),  # another shard
        bundle_entry(1, (2,), 0, 8, extra=pb_bytes(7, b"")),  # sliced (partitioned) tensor
        bundle_entry(1, (2,), 4, 8),  # runs past the end of the data file
        bundle_entry(1, (2,), 0, 8, extra=varint(8 << 3 | 3)),  # protobuf group (wire type 3)
    ],
    ids=["unknown_dtype", "other_shard", "sliced", "past_end_of_data", "bad_wire_type"],
)
def test_unsupported_or_inconsistent_entries_raise(tmp_path, entry):
    prefix = tmp_path / "ckpt"
    Path(f"{prefix}.index").write_bytes(table({b"": BUNDLE_HEADER, b"t": entry}))
    Path(f"{prefix}{DATA_SUFFIX}").write_bytes(bytes(8))
    with pytest.raises(CheckpointError):
        read_checkpoint(prefix)
