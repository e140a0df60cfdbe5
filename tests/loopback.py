"""A file server on 127.0.0.1 for download tests: Range requests, a Hugging Face hub imitation, failure switches.

Plain files are served at ``/<path>``. Hub files registered with ``add_hub_file`` are served the way
``huggingface_hub`` expects them at ``/<repo>/resolve/<revision>/<path>`` (``X-Repo-Commit``, ``ETag`` =
sha256 of the content, ``X-Error-Code: EntryNotFound`` on 404) and listed at
``/api/models/<repo>/tree/<revision>``. Switches: ``missing`` (answer 404), ``corrupt`` (flip bytes),
``drop_at`` (close the connection when the file offset reaches it), ``ranges`` (honour Range or not).
Every request is logged with its Range header and the number of body bytes sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    sent: int = 0


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    hub: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, path) -> bytes
    missing: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    drop_at: int | None = None
    ranges: bool = True
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def add_hub_file(self, repo: str, path: str, data: bytes) -> None:
        self.hub[(repo, path)] = data

    def gets(self, suffix: str = "") -> list[Request]:
        """GET requests whose path ends with ``suffix``."""
        return [r for r in self.log if r.method == "GET" and r.path.endswith(suffix)]

    def stop(self) -> None:
        """Shut down and close the port: later connections are refused."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def body_for(self, path: str) -> tuple[bytes | None, dict[str, str]]:
        """(content or None for 404, extra headers) of a request path."""
        if path in self.missing:
            return None, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT} if "/resolve/" in path else {}
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if match and (match["repo"], match["file"]) in self.hub:
            data = self.hub[(match["repo"], match["file"])]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            return self._maybe_corrupt(path, data), headers
        if match:
            return None, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
        listing = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)", path)
        if listing:
            entries = [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                       for (repo, p), d in sorted(self.hub.items()) if repo == listing["repo"]]
            return json.dumps(entries).encode(), {"Content-Type": "application/json"}
        data = self.files.get(path.lstrip("/"))
        return (None, {}) if data is None else (self._maybe_corrupt(path, data), {})

    def _maybe_corrupt(self, path: str, data: bytes) -> bytes:
        if not any(path.endswith(c) for c in self.corrupt):
            return data
        return bytes(b ^ 0xFF for b in data[:64]) + data[64:]


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a stopped server is really gone

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            path = urlsplit(self.path).path
            entry = Request(self.command, path, self.headers.get("Range"))
            server.log.append(entry)
            data, extra = server.body_for(path)
            if data is None:
                self._reply(404, b"not found", extra, head)
                return
            start = 0
            status = 200
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and server.ranges:
                start = int(match.group(1))
                if start >= len(data):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}", **extra}, head)
                    return
                status = 206
                extra = {**extra, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            body = data[start:]
            if head or server.drop_at is None or server.drop_at >= len(data):
                entry.sent = 0 if head else len(body)
                self._reply(status, body, extra, head)
                return
            cut = max(0, server.drop_at - start)  # stop when the file offset reaches drop_at
            self._headers(status, len(body), extra)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            entry.sent = cut
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _reply(self, status: int, body: bytes, extra: dict[str, str], head: bool) -> None:
            self._headers(status, len(body), extra)
            if not head:
                self.wfile.write(body)

        def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()

    return Handler
