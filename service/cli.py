"""`taggram serve` (the API under uvicorn) and the commands in ``SUBCOMMANDS`` (backfill, check-catalog, train-head,
index)."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.config import Settings
from service.errors import DeviceUnavailable, ModelFileError, PrecisionError
from service.logs import configure_logging
from service.offline.codes import EXIT_OK, EXIT_USAGE

log = logging.getLogger("taggram")
# Exit codes: the offline commands' (bad settings, a bad model: EXIT_USAGE), and this one of `serve` alone.
EXIT_NOT_STARTED = 3  # uvicorn could not start (port taken, application startup failed)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the shutdown an orchestrator expects (docs/reliability.md, "SIGTERM under load").

    On SIGTERM or SIGINT, at once: ``on_stop()`` (the app's readiness turns false, so /readyz answers 503).
    On SIGTERM only, the server then keeps accepting and serving for ``drain_seconds`` while load balancers
    notice the failing readiness and stop routing here. Then uvicorn's graceful shutdown: the listening socket
    closes (new connections are refused), in-flight requests get up to ``timeout_graceful_shutdown`` to finish,
    the app shuts down. A second signal cuts the drain short; a second SIGINT forces the exit (uvicorn's rule).

    Unlike plain uvicorn, the signal is not re-raised after the shutdown: a requested, completed shutdown exits 0.
    """

    def __init__(self, config: uvicorn.Config, *, on_stop: Callable[[], None], drain_seconds: float) -> None:
        super().__init__(config)
        self.on_stop = on_stop
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None  # monotonic time at which the drain ends

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only flag-setting here, the main loop's tick (every 0.1 s) acts on it.
        self.on_stop()
        if sig == signal.SIGTERM and self.drain_seconds > 0 and self.drain_until is None and not self.should_exit:
            self.drain_until = time.monotonic() + self.drain_seconds
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings) -> int:
    from service.api.app import create_app

    try:
        app = create_app(settings)
    except (ModelFileError, PrecisionError, DeviceUnavailable) as error:
        log.error("cannot start: %s", error)
        return EXIT_USAGE
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        proxy_headers=True,
        access_log=False,  # request counts and latencies are in /metrics; access logs would only repeat them
    )
    state = app.state.taggram

    def on_stop() -> None:
        state.ready = False

    server = DrainingServer(config, on_stop=on_stop, drain_seconds=settings.shutdown_drain_seconds)
    server.run()
    if not server.started:  # uvicorn could not start (port taken, application startup failed); it logged why
        return EXIT_NOT_STARTED
    return EXIT_OK


# Commands that parse their own arguments (everything after the word goes to them, -h included): the module whose
# ``main(argv)`` runs each, imported only when asked for. train-head lives outside service/ (optional extra `train`).
SUBCOMMANDS = {
    "backfill": ("service.offline.backfill", "tag a catalog offline into Parquet (taggram backfill -h)"),
    "check-catalog": (
        "service.offline.catalog_check",
        "decode a catalog without the model: what would be analysed or refused, and why",
    ),
    "train-head": (
        "head_training.train",
        "train a classification head on backfill embeddings (needs the `train` extra; taggram train-head -h)",
    ),
    "index": ("service.offline.index_build", "build a similar-tracks index (taggram index build -h)"),
}
# Commands that need an optional extra: the top-level modules that only the extra installs. The service images
# install neither (nor head_training/), so there the command says what to install instead of a traceback.
EXTRA_MODULES = {"train-head": ("train", frozenset({"head_training", "sklearn", "threadpoolctl", "onnx"}))}


def run_subcommand(command: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(SUBCOMMANDS[command][0])
    except ModuleNotFoundError as error:
        extra, modules = EXTRA_MODULES.get(command, ("", frozenset()))
        if (error.name or "").split(".")[0] not in modules:
            raise
        log.error(
            "taggram %s is not installed here (no module %r): it needs the `%s` extra, from a checkout: "
            "pip install -c constraints.txt '.[%s]'",
            command,
            error.name,
            extra,
            extra,
        )
        return EXIT_USAGE
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taggram", description="Music tagging service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API (configuration: TAGGRAM_* environment variables)")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, add_help=False, help=help_text)
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in SUBCOMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = Settings()
    except ValidationError as error:
        configure_logging("info")
        problems = "; ".join(f"TAGGRAM_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        log.error("cannot start: invalid settings: %s", problems)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    return run_subcommand(args.command, rest)


if __name__ == "__main__":
    raise SystemExit(main())
