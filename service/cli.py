"""`taggram serve` (the API under uvicorn) and `taggram backfill` (the offline catalog run)."""

from __future__ import annotations

import argparse
import logging
import sys

from service.config import Settings
from service.manifest import ModelFileError


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def serve(settings: Settings) -> int:
    import uvicorn

    from service.app import create_app

    try:
        app = create_app(settings)
    except ModelFileError as error:
        logging.getLogger("taggram").error("cannot start: %s", error)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        proxy_headers=True,
        access_log=False,  # request counts and latencies are in /metrics; access logs would only repeat them
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taggram", description="Music tagging service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP API (configuration: TAGGRAM_* environment variables)")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "serve":
        return serve(settings)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
