"""Redis for tests: the shared local server (fixture ``redis_url``) and private, killable servers (``RedisServer``).

Import the fixtures into a test module (``from redis_support import redis_url, private_redis  # noqa: F401``).

Unavailability policy, the same for every fixture here: when what a test needs is missing (server unreachable,
``redis-server`` or ``openssl`` not installed) the test is skipped on a developer machine and FAILS when the
environment variable ``CI`` is ``"true"``, so CI can never go green by skipping the Redis tests.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

# A dedicated database on the shared local server; it is flushed before and after every test using it, so it must
# never hold anything else. Override with TAGGRAM_TEST_REDIS_URL (database 0 is refused).
TEST_REDIS_URL = os.environ.get("TAGGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

PROBE_TIMEOUT_SECONDS = 1.0  # reachability probe of the shared server
START_TIMEOUT_SECONDS = 10.0  # a private server normally answers PING within ~50 ms; be generous on a loaded box
STOP_TIMEOUT_SECONDS = 5.0
PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI (``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: Redis tests must not be skipped)")
    pytest.skip(reason)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of a dedicated, empty database on the shared local Redis; the database is flushed again afterwards."""
    client = redis.Redis.from_url(
        TEST_REDIS_URL, socket_timeout=PROBE_TIMEOUT_SECONDS, socket_connect_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        if client.connection_pool.connection_kwargs.get("db", 0) == 0:
            pytest.fail(f"refusing to flush database 0 of {TEST_REDIS_URL}: point the tests at a dedicated database")
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            unavailable(f"Redis at {TEST_REDIS_URL} unreachable: {exc}")
        client.flushdb()
        yield TEST_REDIS_URL
        client.flushdb()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------------------
# Private servers, for fault injection (kill, freeze, restart) without disturbing anything else.
# ---------------------------------------------------------------------------------------------------------------

_LIVE: set[RedisServer] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Fixture teardown normally stops every server; this covers an interpreter exiting some other way.
    for server in list(_LIVE):
        server.close()


def free_port() -> int:
    """A TCP port nothing listens on right now (it may be taken later; callers that bind retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1, with nothing persisted.

    ``kill()`` simulates a crash (connections refused), ``pause()`` a hung server or black-holed network
    (connections accepted, replies never come), ``restart()`` brings it back on the same port, empty.
    """

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.tls = tls  # (certificate, private key); the certificate doubles as the CA clients trust
        self.extra_args = extra_args
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.paused = False
        self.log_path = self.directory / "redis.log"

    # -- addressing ----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """URL for clients, with the password (URL-quoted) and, for TLS, the CA to trust."""
        assert self.port is not None, "server never started"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls[0]))}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        """A plain synchronous client for inspecting the server directly."""
        kwargs.setdefault("socket_timeout", PROBE_TIMEOUT_SECONDS)
        kwargs.setdefault("socket_connect_timeout", PROBE_TIMEOUT_SECONDS)
        return redis.Redis.from_url(self.url, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> RedisServer:
        """Start on a fresh free port (first time) or the previous one (restart); return once PING answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server binary not found")
        if self.port is not None:
            self._spawn(binary, self.port)
            return self
        last_error: RuntimeError | None = None
        for _ in range(PORT_ATTEMPTS):
            try:
                self._spawn(binary, free_port())
                return self
            except RuntimeError as exc:  # most likely lost the race for the port; try another
                last_error = exc
                self.port = None
        raise RuntimeError(f"could not start redis-server in {PORT_ATTEMPTS} attempts") from last_error

    def _spawn(self, binary: str, port: int) -> None:
        assert self.process is None, "already running"
        self.port = port
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        args += ["--logfile", str(self.log_path), "--loglevel", "notice", "--daemonize", "no"]
        if self.tls:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(port)]
        if self.password:
            args += ["--requirepass", self.password]
        args += list(self.extra_args)
        # Own session: a Ctrl-C in the terminal reaches pytest, which then tears the server down itself.
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        _LIVE.add(self)
        self.paused = False
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        probe = self.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self._log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_SECONDS} s")
                time.sleep(0.02)
        finally:
            probe.close()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Crash it (SIGKILL): open connections drop, new ones are refused."""
        self._terminate()

    def stop(self) -> None:
        """Clean shutdown (SIGTERM), falling back to SIGKILL."""
        self._terminate(graceful=True)

    def restart(self) -> None:
        """Kill and start again on the same port; the new server is empty."""
        self._terminate()
        self.start()

    def pause(self) -> None:
        """Freeze it (SIGSTOP): the kernel still accepts connections, but nothing is ever answered."""
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def _terminate(self, graceful: bool = False) -> None:
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None:
            return
        if process.poll() is None:
            if self.paused:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.paused = False

    def close(self) -> None:
        """Teardown: idempotent, never raises."""
        with contextlib.suppress(Exception):  # teardown must not mask the test's own failure
            self._terminate()


def make_tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (EC P-256: generated in milliseconds) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl binary not found")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def private_redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``factory(password=None, tls=False, extra_args=())`` starts a private server; all are killed at teardown."""
    servers: list[RedisServer] = []

    def factory(*, password: str | None = None, tls: bool = False, extra_args: tuple[str, ...] = ()) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        tls_files = make_tls_files(directory / "tls") if tls else None
        server = RedisServer(directory, password=password, tls=tls_files, extra_args=extra_args)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def private_redis(private_redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A running private plain-TCP server, killed at teardown."""
    return private_redis_factory()
