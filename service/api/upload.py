"""Receive the uploaded audio: stream the body, enforce the size limit while reading, hash as it arrives.

Accepted: ``multipart/form-data`` with exactly one file field named ``file``, or the raw body with an
``audio/*`` or ``application/octet-stream`` type (or none). The bytes go to a spooled temporary file (memory up
to SPOOL_MEMORY_BYTES, then disk) and are hashed with sha256 on the way, for the cache key.
"""

from __future__ import annotations

import hashlib
import tempfile

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.engine.analysis_service import SPOOL_MEMORY_BYTES, Upload
from service.errors import (
    BodyTooLarge,
    ClientDisconnected,
    EmptyBody,
    InvalidMultipart,
    MissingFile,
    MultipleFiles,
    UnsupportedMediaType,
)

MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and small extra fields around the file
FILE_FIELD = "file"
RAW_TYPES = ("application/octet-stream",)


class _HashingSink:
    """Writes file bytes to a spooled file, hashing and counting them against the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise BodyTooLarge(self.limit)
        self.digest.update(data)
        self.file.write(data)

    def finish(self) -> Upload:
        self.file.seek(0)
        return Upload(self.file, self.size, self.digest.hexdigest())


def body_kind(content_type: str | None) -> str:
    """'raw' or 'multipart'; anything else is refused with 415."""
    if not content_type:
        return "raw"
    media_type, _ = parse_options_header(content_type)
    media = media_type.decode("latin-1").lower()
    if media == "multipart/form-data":
        return "multipart"
    if media.startswith("audio/") or media in RAW_TYPES:
        return "raw"
    raise UnsupportedMediaType(content_type)


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once when Content-Length already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)


class _MultipartFile:
    """python-multipart callbacks that route the one 'file' part's data into a sink."""

    def __init__(self, sink: _HashingSink) -> None:
        self.sink = sink
        self.files = 0
        self._header_field = b""
        self._header_value = b""
        self._in_file = False
        self._disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._append("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    def _append(self, attribute: str, data: bytes) -> None:
        setattr(self, attribute, getattr(self, attribute) + data)

    def _part_begin(self) -> None:
        self._disposition, self._in_file = b"", False

    def _header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        if params.get(b"name") == FILE_FIELD.encode():
            self.files += 1
            if self.files > 1:
                raise MultipleFiles(f"send exactly one '{FILE_FIELD}' field, not several")
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.sink.write(data[start:end])


async def read_upload(request: Request, max_bytes: int) -> Upload:
    kind = body_kind(request.headers.get("content-type"))
    body_limit = max_bytes + (MULTIPART_OVERHEAD_BYTES if kind == "multipart" else 0)
    check_declared_length(request, body_limit)
    sink = _HashingSink(max_bytes)
    try:
        if kind == "raw":
            async for chunk in request.stream():
                sink.write(chunk)
        else:
            await _read_multipart(request, sink, body_limit)
        if sink.size == 0:
            raise EmptyBody()
    except BaseException as error:
        sink.file.close()
        if isinstance(error, ClientDisconnect):
            raise ClientDisconnected() from None
        raise
    return sink.finish()


async def _read_multipart(request: Request, sink: _HashingSink, body_limit: int) -> None:
    _, params = parse_options_header(request.headers["content-type"])
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidMultipart("multipart/form-data without a boundary parameter")
    target = _MultipartFile(sink)
    parser = MultipartParser(boundary, target.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise BodyTooLarge(sink.limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise InvalidMultipart(f"the multipart body is malformed: {error}") from None
    if target.files == 0:
        raise MissingFile(f"the multipart body has no '{FILE_FIELD}' field")
