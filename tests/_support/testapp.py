"""A small HTTP/1.1 app for data-plane tests, run as its own process.

Routes: ``/echo`` (method, path, headers and body as JSON), ``/count`` (how many requests this
process has served, not counting /count and /sunk), ``/sink`` (reads the body in chunks, returns
its size and SHA-256), ``/sunk`` (how much of its body the last /sink read, finished or not),
``/chunked?n=K`` (K chunks), ``/sse-gated`` (one event, then waits for ``/release`` before the
second), ``/sse-held`` (its head and one event only after ``/release``), ``/big?mb=N`` (streams
N MiB). Prints one JSON ready line.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COUNT = 0
COUNT_LOCK = threading.Lock()
RELEASE = threading.Event()
SUNK = 0  # body bytes the last /sink has read so far, even if its caller never finished


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _body_chunks(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("content-length") or 0)
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _send_json(self, payload, status=200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _handle(self) -> None:
        global COUNT
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path not in ("/count", "/sunk"):
            with COUNT_LOCK:
                COUNT += 1
        if url.path == "/count":
            self._send_json({"count": COUNT})
        elif url.path == "/sink":
            global SUNK
            digest, size = hashlib.sha256(), 0
            SUNK = 0
            for chunk in self._body_chunks():
                digest.update(chunk)
                size += len(chunk)
                SUNK = size
            self._send_json({"size": size, "sha256": digest.hexdigest()})
        elif url.path == "/sunk":
            self._send_json({"size": SUNK})
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("n", ["3"])[0])):
                self._chunk(f"chunk-{i};".encode())
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/sse-gated":
            RELEASE.clear()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._chunk(b"data: first\n\n")
            RELEASE.wait(30)
            self._chunk(b"data: second\n\n")
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/sse-held":
            RELEASE.wait(30)  # clear in a fresh app (and after /sse-gated)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._chunk(b"data: held\n\n")
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/release":
            RELEASE.set()
            self._send_json({"released": True})
        elif url.path == "/forward":
            # Call another app through a sidecar: ?via=host:port&to=app-id&path=method
            import urllib.error
            import urllib.request

            via, to, path = query["via"][0], query["to"][0], query.get("path", ["echo"])[0]
            target = f"http://{via}/v1.0/invoke/{to}/method/{path}"
            try:
                with urllib.request.urlopen(target, data=b"{}", timeout=10) as reply:
                    self._send_json({"status": reply.status, "body": reply.read().decode()})
            except urllib.error.HTTPError as exc:
                self._send_json({"status": exc.code, "body": exc.read().decode()})
        elif url.path == "/big":
            mib = int(query.get("mb", ["1"])[0])
            self.send_response(200)
            self.send_header("content-length", str(mib << 20))
            self.end_headers()
            block = b"x" * (1 << 20)
            for _ in range(mib):
                self.wfile.write(block)
        else:
            body = b"".join(self._body_chunks())
            self._send_json(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body": body.decode("utf-8", "replace"),
                }
            )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


def main() -> None:
    server = ThreadingHTTPServer(
        ("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler
    )
    server.daemon_threads = True
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
