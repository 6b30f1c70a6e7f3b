"""Test helper: a real HTTP server on its own loopback port that plays a catalog's audio CDN.

It answers every GET under ``/`` with one audio file (whatever the track id in the path), honours single byte
ranges (``Range: bytes=a-b``, 206) as a CDN does, so a browser can seek in it, and records every request's target
(path and query, still percent-encoded as sent).

    with media_server(Path("tone.wav")) as cdn:
        cdn.url                          # "http://127.0.0.1:PORT"
        cdn.requests                     # ["/audio/pkg%2Ftrack.wav", ...]
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class MediaServer:
    url: str
    requests: list[str] = field(default_factory=list)


def handler_for(body: bytes, media_type: str, server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # http.server's name for the GET handler
            server.requests.append(self.path)
            start, end = 0, len(body) - 1
            match = RANGE.match(self.headers.get("Range", ""))
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), end) if match.group(2) else end
                else:  # bytes=-N: the last N bytes
                    start = max(len(body) - int(match.group(2)), 0)
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            self.wfile.write(body[start : end + 1])  # a browser that has enough drops the connection: handle_error

        def log_message(self, format: str, *args) -> None:  # http.server's signature
            pass  # requests are recorded above; the test output stays clean

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A browser drops media connections whenever the source changes or it has read enough: expected, not
        printed; anything else is printed as http.server does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def media_server(audio: Path) -> Iterator[MediaServer]:
    media_type = mimetypes.guess_type(audio.name)[0] or "application/octet-stream"
    state = MediaServer(url="")
    httpd = QuietServer(("127.0.0.1", 0), handler_for(audio.read_bytes(), media_type, state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="media-server")
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
