"""Lingering close of a connection whose request body was not read: see ``CloseUnreadBodyMiddleware``."""

from __future__ import annotations

import asyncio


class CloseUnreadBodyMiddleware:
    """A response sent before the request body was fully read (413, 401, 503, 415, ...) closes the connection,
    after a bounded lingering close.

    Without this, uvicorn keeps such a connection alive and goes on receiving and discarding the rest of the body,
    so a client could stream an endless upload through one refused request. Closing at once is no better: a socket
    closed with unread bytes sends a TCP reset, which destroys the answer on its way (the client sees a read error
    instead of its 503). So, like nginx's lingering close: the answer goes out with ``Connection: close``, the rest
    of the body is read and discarded for at most ``LINGER_SECONDS``, then the connection is closed. A client that
    has finished sending gets its answer; one still sending after that is cut off.
    """

    LINGER_SECONDS = 2.0

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        state = {
            "pending": b"transfer-encoding" in headers
            or headers.get(b"content-length", b"0").strip() not in (b"0", b""),
            # A client that sent "Expect: 100-continue" sends no body until the app first reads it: nothing to drain
            # then (and reading would make uvicorn send a late "100 Continue").
            "body_requested": b"expect" not in headers,
            "early": False,
        }

        async def receive_tracking():
            state["body_requested"] = True
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["pending"] = False
            return message

        async def send_lingering(message) -> None:
            if message["type"] == "http.response.start" and state["pending"]:
                state["early"] = True
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body" and state["early"] and not message.get("more_body", False):
                await send({**message, "more_body": True})  # the whole answer is out; the connection stays open
                await self._drain(receive_tracking, state)
                message = {"type": "http.response.body", "body": b"", "more_body": False}  # now uvicorn closes
            await send(message)

        await self.app(scope, receive_tracking, send_lingering)

    async def _drain(self, receive, state: dict) -> None:
        if not state["body_requested"]:
            return
        try:
            async with asyncio.timeout(self.LINGER_SECONDS):
                while state["pending"]:
                    await receive()
        except TimeoutError:
            pass
