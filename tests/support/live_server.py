"""Run the real app under a real uvicorn server on a free loopback port, in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from service.api.app import State, create_app
from service.config import Settings

START_TIMEOUT_SECONDS = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    server: uvicorn.Server

    @property
    def state(self) -> State:
        return self.app.state.taggram

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def async_client(self, timeout: float = 120.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout)


def server_settings(models_dir: Path, **overrides) -> Settings:
    """Settings for tests: one model unless asked otherwise, in-process cache unless a Redis URL is given."""
    values = {"models_dir": models_dir, "models": "msd-musicnn", "redis_url": None} | overrides
    return Settings(**values)


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
