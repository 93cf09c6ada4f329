"""A loopback Hugging Face file server: what `huggingface_hub` asks of the Hub to
download one file (HEAD for its metadata, GET with optional Range for its bytes).

    GET|HEAD /{org}/{repo}/resolve/{revision}/{filename}

answers with `X-Repo-Commit`, `X-Linked-Etag` (the file's SHA-256, as the Hub gives for
LFS files) and `X-Linked-Size`; a GET honours `Range: bytes=N-` with 206. `cut_after`
makes the next GET send that many bytes of a full-length answer and drop the connection,
as a broken network does.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_PATH = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<name>.+)$")


@dataclass
class HubFiles:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, name) -> bytes
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    cut_after: int | None = None  # the next GET sends this many bytes, then drops


class _Handler(BaseHTTPRequestHandler):
    hub: HubFiles
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        self.hub.requests.append((self.command, self.path, self.headers.get("Range")))
        found = _PATH.match(self.path)
        data = self.hub.files.get((found["repo"], found["name"])) if found else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        ranged = self.headers.get("Range")
        if body and ranged and (m := re.fullmatch(r"bytes=(\d+)-", ranged)):
            start = int(m[1])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        rest = data[start:]
        cut, self.hub.cut_after = self.hub.cut_after, None
        if cut is not None:
            self.wfile.write(rest[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(rest)


class HubServer:
    def __init__(self) -> None:
        self.hub = HubFiles()
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
