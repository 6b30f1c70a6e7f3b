"""Every error the service can refuse or fail with: one hierarchy, one table of stable codes.

Each error carries a stable ``code`` (what clients and the ``taggram_rejections_total`` metric key on), the HTTP
status it is answered with, and a ``detail`` for people. The HTTP layer renders any of them as an RFC 9457
problem in one place (``service.api.problems``); nothing below knows about HTTP frameworks, so the engine, the
decoders, the artefact loaders and the offline commands raise them too.

    TaggramError                      base: code, status, detail, headers
    ├── BadUpload                     the request body is not an acceptable upload
    │   ├── ClientDisconnected        client_disconnected      400
    │   ├── BodyTooLarge              body_too_large           413
    │   ├── UnsupportedMediaType      unsupported_media_type   415
    │   ├── EmptyBody                 empty_body               422
    │   ├── InvalidMultipart          invalid_multipart        422
    │   ├── MissingFile               missing_file             422
    │   └── MultipleFiles             multiple_files           422
    ├── DecodeError                   the upload cannot be turned into audio to tag (one code per reason, its
    │   │                             constructors in service.decode.errors): undecodable_audio 415, ...
    │   └── AudioTooShort             audio_too_short          422
    ├── InvalidRequest                a well-formed request naming something that is not there
    │   ├── InvalidParameter          invalid_parameter        422
    │   ├── UnknownModel              unknown_model            422
    │   ├── UnknownTaxonomy           unknown_taxonomy         422   (also ?head= naming no head)
    │   ├── UnknownTrack              unknown_track            404
    │   └── UnknownArtist             unknown_artist           404
    ├── Unauthorized                  unauthorized             401   (WWW-Authenticate: Bearer)
    ├── NotFound                      not_found                404
    ├── MethodNotAllowed              method_not_allowed       405
    ├── HttpError                     http_error               (the framework's status)
    ├── NoIndex                       no_index                 503
    ├── NoCatalogMap                  no_map                   503
    ├── Overloaded                    overloaded               503   (Retry-After)
    ├── DeadlineExceeded              deadline_exceeded        504
    ├── InternalError                 internal_error           500
    ├── ModelFileError                model_file_invalid       start-up only: stops the start (exit 2)
    │   └── IndexFileError            index_file_invalid       start-up only (and a refused index reload)
    ├── PrecisionError                precision_unavailable    start-up only: TAGGRAM_PRECISION=bf16 cannot run
    └── DeviceUnavailable             device_unavailable       start-up only: TAGGRAM_DEVICE=cuda without a GPU

``PROBLEM_CODES`` (at the end of this module) is the table: code → status, class, meaning. A code's status is
written there once; ``DecodeError``'s constructors are checked against it. docs/api.md's error table is checked
against it by tests/unit/test_error_vocabulary.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


class TaggramError(Exception):
    """Base of every domain error: ``code`` is stable, ``status`` comes from ``PROBLEM_CODES``."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.status: int | None = PROBLEM_CODES[self.code].status


# ---- the upload ---------------------------------------------------------------------------------------------------


class BadUpload(TaggramError):
    """The request body is not an acceptable upload (its size, type or multipart shape)."""


class ClientDisconnected(BadUpload):
    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client closed the connection before the body was complete")


class BodyTooLarge(BadUpload):
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")


class UnsupportedMediaType(BadUpload):
    code = "unsupported_media_type"

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Content-Type {content_type!r} is not accepted: send the audio as multipart/form-data in a "
            "field named 'file', or as the raw body with an audio/* or application/octet-stream type"
        )


class EmptyBody(BadUpload):
    code = "empty_body"

    def __init__(self) -> None:
        super().__init__("the request carried no audio bytes")


class InvalidMultipart(BadUpload):
    code = "invalid_multipart"


class MissingFile(BadUpload):
    code = "missing_file"


class MultipleFiles(BadUpload):
    code = "multiple_files"


# ---- the audio ----------------------------------------------------------------------------------------------------


class DecodeError(TaggramError):
    """The upload cannot be turned into audio to tag; one code per reason (constructors: service.decode.errors)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        # (status, code, detail), checked against the table: a call in another order, or a status that disagrees
        # with the code's, would otherwise only show when the error is rendered.
        if not isinstance(status, int) or not isinstance(code, str):
            raise TypeError(f"DecodeError(status: int, code: str, detail), got ({status!r}, {code!r}, ...)")
        entry = PROBLEM_CODES.get(code)
        if entry is None or entry.status != status or not issubclass(entry.error, DecodeError):
            raise TypeError(f"DecodeError({status}, {code!r}) is not a decode code of service.errors.PROBLEM_CODES")
        self.code = code  # per instance: one class, many reasons
        super().__init__(detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class AudioTooShort(DecodeError):
    """The decoded track is shorter than the shortest accepted (a limit on the decoded audio, like its length cap)."""

    code = "audio_too_short"

    def __init__(self, num_samples: int, sample_rate: int, min_seconds: float) -> None:
        super().__init__(
            422,
            "audio_too_short",
            f"the audio lasts {num_samples / sample_rate:.3f} s; at least {min_seconds:g} s is needed",
        )


# ---- the request's parameters -------------------------------------------------------------------------------------


class InvalidRequest(TaggramError):
    """A well-formed request that names something the service does not have, or an invalid combination."""


class InvalidParameter(InvalidRequest):
    code = "invalid_parameter"


class UnknownModel(InvalidRequest):
    code = "unknown_model"

    def __init__(self, name: str | None, loaded: list[str]) -> None:
        super().__init__(f"model {name!r} is not loaded; choose one of {loaded}")


class UnknownTaxonomy(InvalidRequest):
    code = "unknown_taxonomy"


class UnknownTrack(InvalidRequest):
    code = "unknown_track"

    def __init__(self, track_id: str, model: str) -> None:
        super().__init__(f"track {track_id!r} is not in the {model} index")


class UnknownArtist(InvalidRequest):
    code = "unknown_artist"

    def __init__(self, artist_id: str, model: str) -> None:
        super().__init__(f"artist {artist_id!r} has no track in the {model} index")


# ---- access and routing -------------------------------------------------------------------------------------------


class Unauthorized(TaggramError):
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__("a valid 'Authorization: Bearer <key>' header is required", {"WWW-Authenticate": "Bearer"})


class NotFound(TaggramError):
    code = "not_found"


class MethodNotAllowed(TaggramError):
    code = "method_not_allowed"


class HttpError(TaggramError):
    """Any other HTTP error the framework raises: answered with its own status."""

    code = "http_error"

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers)
        self.status = status


# ---- capacity and time --------------------------------------------------------------------------------------------


class NoIndex(TaggramError):
    code = "no_index"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"no similarity index is loaded for model {model!r} "
            "(TAGGRAM_INDEX_DIR; build one with `taggram index build`)"
        )


class NoCatalogMap(TaggramError):
    code = "no_map"

    def __init__(self, model: str) -> None:
        super().__init__(f"the {model} index was built without a catalog map: rebuild it with `taggram index build`")


class Overloaded(TaggramError):
    """A queue or the concurrent-analyses limit is full: the caller should retry after ``retry_after_seconds``."""

    code = "overloaded"

    def __init__(self, detail: str, retry_after_seconds: int | None = None) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after_seconds)} if retry_after_seconds is not None else None)


class DeadlineExceeded(TaggramError):
    """The request's deadline passed before its analysis was done."""

    code = "deadline_exceeded"


class InternalError(TaggramError):
    """A server fault: never blamed on the request, never cached."""

    code = "internal_error"

    def __init__(self) -> None:
        super().__init__("an unexpected error occurred")


# ---- served artefacts (start-up) ----------------------------------------------------------------------------------


class ModelFileError(TaggramError, RuntimeError):
    """A model, taxonomy, calibration, head or setting that names them is missing or invalid: the start stops with
    one log line naming the file (exit 2). Never an HTTP answer."""

    code = "model_file_invalid"


class IndexFileError(ModelFileError):
    """A similarity index (manifest, vectors, track table) is missing, corrupt or for another model's graph."""

    code = "index_file_invalid"


class PrecisionError(TaggramError, RuntimeError):
    """``TAGGRAM_PRECISION=bf16`` (or the backfill's ``--precision bf16``) cannot be honoured for a model here (no
    native bf16, no openvino, no parity patches, or the parity guard refused it): the start stops with this one
    line (exit 2). Never an HTTP answer (docs/precision.md)."""

    code = "precision_unavailable"


class DeviceUnavailable(TaggramError, RuntimeError):
    """``TAGGRAM_DEVICE=cuda`` on a machine whose NVIDIA driver gives no usable GPU, or whose CUDA provider could
    not start on it (service/engine/device.py): the start stops with this one line (exit 2). Never an HTTP answer."""

    code = "device_unavailable"


# ---- the table ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemCode:
    status: int | None  # the HTTP status; None: the status of the framework error it wraps
    error: type[TaggramError]
    meaning: str
    served: bool = True  # False: a start-up failure, never an HTTP answer (so not in docs/api.md's table)


PROBLEM_CODES: dict[str, ProblemCode] = {
    "client_disconnected": ProblemCode(400, ClientDisconnected, "the client closed the connection mid-body"),
    "unauthorized": ProblemCode(401, Unauthorized, "TAGGRAM_API_KEY is set and the bearer key is missing or wrong"),
    "not_found": ProblemCode(404, NotFound, "no such route"),
    "method_not_allowed": ProblemCode(405, MethodNotAllowed, "no such method on the route"),
    "http_error": ProblemCode(None, HttpError, "any other HTTP error of the framework (none is known to occur)"),
    "body_too_large": ProblemCode(413, BodyTooLarge, "the body passed TAGGRAM_MAX_UPLOAD_BYTES"),
    "unsupported_media_type": ProblemCode(415, UnsupportedMediaType, "neither multipart, audio/* nor octet-stream"),
    "undecodable_audio": ProblemCode(415, DecodeError, "not audio, no audio stream, or nothing decodes"),
    "empty_body": ProblemCode(422, EmptyBody, "no bytes, or an empty file part"),
    "missing_file": ProblemCode(422, MissingFile, "a multipart body without a 'file' field"),
    "multiple_files": ProblemCode(422, MultipleFiles, "a multipart body with several 'file' fields"),
    "invalid_multipart": ProblemCode(422, InvalidMultipart, "a malformed multipart body"),
    "audio_too_short": ProblemCode(422, AudioTooShort, "shorter than TAGGRAM_MIN_AUDIO_SECONDS"),
    "audio_too_long": ProblemCode(422, DecodeError, "longer than TAGGRAM_MAX_AUDIO_SECONDS"),
    "empty_audio": ProblemCode(422, DecodeError, "an audio stream that decodes to no samples"),
    "damaged_audio": ProblemCode(422, DecodeError, "damaged or truncated, with TAGGRAM_DAMAGED_AUDIO=refuse"),
    "non_finite_audio": ProblemCode(422, DecodeError, "NaN or infinite samples"),
    "audio_out_of_range": ProblemCode(422, DecodeError, "finite samples beyond ±10⁶"),
    "unsupported_sample_rate": ProblemCode(422, DecodeError, "a source rate outside 4–384 kHz"),
    "too_many_channels": ProblemCode(422, DecodeError, "more than 64 channels"),
    "unknown_model": ProblemCode(422, UnknownModel, "?model= names no loaded model"),
    "invalid_parameter": ProblemCode(422, InvalidParameter, "a parameter out of range, or an invalid combination"),
    "unknown_taxonomy": ProblemCode(422, UnknownTaxonomy, "?taxonomy= or ?head= names nothing the model has"),
    "unknown_track": ProblemCode(404, UnknownTrack, "the track id is not in the model's index"),
    "unknown_artist": ProblemCode(404, UnknownArtist, "the artist has no track in the model's index"),
    "no_index": ProblemCode(503, NoIndex, "no similarity index is loaded for the model"),
    "no_map": ProblemCode(503, NoCatalogMap, "the model's index was built before catalog maps"),
    "overloaded": ProblemCode(503, Overloaded, "a queue or the concurrent-analyses limit is full"),
    "deadline_exceeded": ProblemCode(504, DeadlineExceeded, "TAGGRAM_REQUEST_TIMEOUT_SECONDS passed"),
    "internal_error": ProblemCode(500, InternalError, "a server fault"),
    "model_file_invalid": ProblemCode(500, ModelFileError, "a served artefact is invalid: the start stops", False),
    "index_file_invalid": ProblemCode(500, IndexFileError, "a similarity index is invalid: the start stops", False),
    "precision_unavailable": ProblemCode(
        500, PrecisionError, "TAGGRAM_PRECISION=bf16 cannot be honoured here: the start stops", False
    ),
    "device_unavailable": ProblemCode(
        500, DeviceUnavailable, "TAGGRAM_DEVICE=cuda but no usable GPU here: the start stops", False
    ),
}
