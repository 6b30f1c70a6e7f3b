"""Read TensorFlow "V2" checkpoints (``.index`` + ``.data-*``) without TensorFlow.

The ``.index`` file is an SSTable in LevelDB's table format, written uncompressed, mapping each tensor name to
a ``BundleEntryProto`` (dtype, shape, shard, offset, size). Tensors lie raw and little-endian in the data
shard. Integrity is guaranteed upstream by pinned sha256 digests of both files, so the per-tensor crc32c is
not re-checked here.

References: leveldb/doc/table_format.md; tensorflow/core/protobuf/tensor_bundle.proto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # 1 byte compression type + 4 bytes crc
NO_COMPRESSION = 0

# tensorflow/core/framework/types.proto
TF_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    9: np.dtype("<i8"),
    10: np.dtype("bool"),
}


class CheckpointError(ValueError):
    """The checkpoint is not a well-formed, uncompressed, single-shard TF V2 checkpoint."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int]) -> list[tuple[bytes, bytes]]:
    """Decode one table block into its (key, value) pairs, undoing LevelDB's key prefix compression."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_BYTES > len(table):
        raise CheckpointError("block runs past the end of the index file")
    if table[offset + size] != NO_COMPRESSION:
        raise CheckpointError("compressed index blocks are not supported")
    block = table[offset : offset + size]
    if size < 4:
        raise CheckpointError("index block shorter than its restart count")
    (num_restarts,) = struct.unpack_from("<I", block, size - 4)
    entries_end = size - 4 - 4 * num_restarts
    if entries_end < 0:
        raise CheckpointError("index block restart array runs past the block")
    entries, key, pos = [], b"", 0
    while pos < entries_end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
        if pos > entries_end or shared > len(key):
            raise CheckpointError("index block entry runs past the block")
    return entries


def read_table(table: bytes) -> dict[bytes, bytes]:
    """Every (key, value) of an uncompressed LevelDB-format table."""
    if len(table) < FOOTER_BYTES:
        raise CheckpointError("index file shorter than a table footer")
    footer = table[-FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)
    if magic != TABLE_MAGIC:
        raise CheckpointError("not a LevelDB-format table (bad magic)")
    _, pos = _block_handle(footer, 0)  # metaindex: unused by TF bundles
    index_handle, _ = _block_handle(footer, pos)
    items: dict[bytes, bytes] = {}
    for _, handle_bytes in _read_block(table, index_handle):
        data_handle, _ = _block_handle(handle_bytes, 0)
        items.update(_read_block(table, data_handle))
    return items


def _fields(message: bytes):
    """Yield (field number, wire type, value) of a protobuf message; enough for BundleEntryProto."""
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _varint(message, pos)
        elif wire_type == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire_type == 5:
            value, pos = message[pos : pos + 4], pos + 4
        elif wire_type == 1:
            value, pos = message[pos : pos + 8], pos + 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(message):
            raise CheckpointError("protobuf field runs past the end of its message")
        yield number, wire_type, value


def _expect(wire_type: int, expected: int, field: str) -> None:
    if wire_type != expected:
        raise CheckpointError(f"{field}: protobuf wire type {wire_type}, expected {expected}")


def _shape(message: bytes) -> tuple[int, ...]:
    dims = []
    for number, wire_type, dim in _fields(message):
        if number == 2:  # TensorShapeProto.dim
            _expect(wire_type, 2, "TensorShapeProto.dim")
            size = 0
            for n, w, v in _fields(dim):
                if n == 1:
                    _expect(w, 0, "TensorShapeProto.Dim.size")
                    size = v
            dims.append(size)
    return tuple(dims)


def parse_entry(message: bytes) -> TensorEntry:
    """Decode a BundleEntryProto (tensor_bundle.proto)."""
    dtype_code, shape, shard, offset, size = 1, (), 0, 0, 0
    varint_fields = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size"}
    for number, wire_type, value in _fields(message):
        if number in varint_fields:
            _expect(wire_type, 0, f"BundleEntryProto.{varint_fields[number]}")
        if number == 1:
            dtype_code = value
        elif number == 2:
            _expect(wire_type, 2, "BundleEntryProto.shape")
            shape = _shape(value)
        elif number == 3:
            shard = value
        elif number == 4:
            offset = value
        elif number == 5:
            size = value
        elif number == 7:
            raise CheckpointError("partitioned (sliced) tensors are not supported")
    if dtype_code not in TF_DTYPES:
        raise CheckpointError(f"unsupported TF dtype code {dtype_code}")
    return TensorEntry(TF_DTYPES[dtype_code], shape, shard, offset, size)


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at ``prefix`` (``prefix.index``, ``prefix.data-00000-of-00001``)."""
    prefix = str(prefix)
    table = read_table(Path(prefix + ".index").read_bytes())
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    tensors = {}
    for key, value in table.items():
        if key == b"":  # BundleHeaderProto: shard count and endianness, checked through the entries
            continue
        entry = parse_entry(value)
        if entry.shard != 0:
            raise CheckpointError("multi-shard checkpoints are not supported")
        expected = int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize
        if entry.size != expected or entry.offset + entry.size > len(data):
            raise CheckpointError(f"tensor {key!r}: size {entry.size} does not match shape {entry.shape}")
        raw = data[entry.offset : entry.offset + entry.size]
        tensors[key.decode()] = np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()
    return tensors
