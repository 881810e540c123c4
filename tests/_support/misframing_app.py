"""An HTTP/1.1 app that frames some responses wrongly on purpose, run as its own process.

The shapes are those that desynchronise a shared keep-alive connection: the answer to a HEAD
carries the GET body (``do_HEAD = do_GET``, a common ``BaseHTTPRequestHandler`` pattern), a 204
carries a body, a ``Content-Length`` shorter than the body, and stray bytes after a correctly
framed body. In every case the extra bytes are whatever the caller put in ``?body=`` — an
attacker plants a whole forged response there. ``/echo?msg=`` is the well-framed route a victim
calls; ``POST /stall`` takes none of its body (an app that stops reading). Every request is
appended to ``$APP_REQUEST_LOG`` (method, path, client port) before it is answered, so a test
can prove what reached the app and over which connection.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _log(self) -> None:
        path = os.environ.get("APP_REQUEST_LOG")
        if not path:
            return
        entry = {"method": self.command, "path": self.path, "port": self.client_address[1]}
        with LOG_LOCK, open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def _answer(self, status: int, length: int, body: bytes) -> None:
        """Status, a Content-Length of ``length`` and ``body``, head and body in one write."""
        head = (
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)

    def do_GET(self) -> None:
        self._log()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        planted = query.get("body", [""])[0].encode("latin-1")
        if url.path == "/echo":
            body = json.dumps({"echo": query.get("msg", [""])[0]}).encode()
            self._answer(200, len(body), body)
        elif url.path == "/big":
            size = int(query.get("size", ["0"])[0])
            self._answer(200, size, b"")
            for start in range(0, size, 1 << 20):
                self.wfile.write(b"x" * min(1 << 20, size - start))
        elif url.path == "/raw":
            # Well framed for GET; for HEAD (do_HEAD = do_GET) the body is written anyway.
            self._answer(200, len(planted), planted)
        elif url.path == "/no-content":
            self._answer(204, 0, planted)  # a 204 never has a body; this one does
        elif url.path == "/short":
            self._answer(200, 2, b"{}" + planted)  # Content-Length covers only "{}"
        elif url.path == "/trailing":
            body = b'{"ok": true}'
            self._answer(200, len(body), body + planted)  # bytes after the end
        else:
            self._answer(404, 2, b"{}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """Read the body by its framing (and drop it), then answer as for GET. ``/stall``
        reads none of it and never answers (the connection is dropped after a minute)."""
        if urlsplit(self.path).path == "/stall":
            self._log()
            threading.Event().wait(60)
            self.close_connection = True
            return
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                self.rfile.read(size + 2)
            self.rfile.readline()
        else:
            self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
