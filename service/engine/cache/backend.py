"""What every backend shares: ``get``/``set`` that never raise; failures counted, logged once, and a miss."""

from __future__ import annotations

import logging

from service.engine.analysis import Analysis
from service.engine.cache.value import decode_analysis, encode_analysis
from service.metrics import CACHE_ERRORS

log = logging.getLogger("service.engine.cache")


class _CircuitOpen(ConnectionError):
    """Raised instead of contacting Redis while the post-failure cooldown runs."""


class Cache:
    """One async interface over the backends. ``get``/``set`` never raise (except on cancellation): failures are
    counted in CACHE_ERRORS, logged once, and behave as a miss / a skipped store."""

    name: str = "abstract"

    async def get(self, key: str) -> Analysis | None:
        try:
            raw = await self._read(key)
            return None if raw is None else decode_analysis(raw)
        except Exception as exc:  # noqa: BLE001 - anything the backend or decoder throws means "miss"
            self._failed("get", exc)
            return None

    async def set(self, key: str, analysis: Analysis) -> None:
        try:
            await self._write(key, encode_analysis(analysis))
        except Exception as exc:  # noqa: BLE001 - a failed store costs a future recompute, never this request
            self._failed("set", exc)

    async def ping(self) -> bool:
        """Is the backend usable right now? For readiness/health reporting; never raises."""
        return True

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def _read(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def _failed(self, op: str, exc: Exception) -> None:
        CACHE_ERRORS.labels(backend=self.name, op=op).inc()
        if isinstance(exc, _CircuitOpen):
            return  # already logged when the circuit opened; one line per outage window, not per request
        # Neither the key nor the value is logged: the error type and message say what broke.
        log.warning("%s cache %s failed, serving without cache: %s: %s", self.name, op, type(exc).__name__, exc)
