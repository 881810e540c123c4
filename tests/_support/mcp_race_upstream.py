"""A controllable MCP upstream that answers a ``ping`` with a racing ``tools/list``'s result.

The race the review found (#10.2), made deterministic: a server that keys its pending requests
by ``str(id)`` confuses ``tools/list`` id ``77`` with ``ping`` id ``"77"`` and delivers the tool
list on the ping's response. Here each of the two requests waits (up to 10 s) for its partner —
the other method with an id of the same spelling — and then each is answered with the *other's*
response. ``?shape=`` picks how the ping's (misdelivered) answer is framed:

* ``json``: one JSON object (``application/json``);
* ``batch``: a JSON array holding it (2025-03-26 batch response);
* ``sse``: one event on a ``text/event-stream`` body.

A request whose id starts with ``solo`` has no partner and is answered at once, as is any other
request: ``tools/list`` with the full list (``add``, ``echo``,
``get_weather_alert``), ``ping`` with ``{}``. Every request body is appended to
``$MCP_REQUEST_LOG`` (base64, as ``mcp_logging_server`` does) before it is answered.
Prints ``{"event": "ready", "port": N}`` once listening on 127.0.0.1 (port from the OS).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOOLS = [
    {"name": "add", "inputSchema": {"type": "object"}},
    {"name": "echo", "inputSchema": {"type": "object"}},
    {"name": "get_weather_alert", "inputSchema": {"type": "object"}},
]
RACING = ("tools/list", "ping")
PARTNER_WAIT = 10.0

_lock = threading.Condition()
_waiting: dict[tuple[str, str], dict] = {}  # (method, str(id)) → its own response, once arrived
_taken: dict[tuple[str, str], dict] = {}  # what a partner left for (method, str(id))


def own_response(message: dict) -> dict:
    result = {"tools": TOOLS} if message["method"] == "tools/list" else {}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def crossed(message: dict) -> dict:
    """Wait for the partner and swap responses with it (or answer own after the wait)."""
    method, key = message["method"], str(message["id"])
    other = RACING[1 - RACING.index(method)]
    with _lock:
        _waiting[(method, key)] = own_response(message)
        _lock.notify_all()
        arrived = _lock.wait_for(
            lambda: (other, key) in _waiting or (method, key) in _taken, PARTNER_WAIT
        )
        if not arrived:
            return _waiting.pop((method, key))
        if (method, key) in _taken:
            return _taken.pop((method, key))
        mine = _waiting.pop((method, key))
        theirs = _waiting.pop((other, key))
        _taken[(other, key)] = mine
        _lock.notify_all()
        return theirs


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with open(os.environ["MCP_REQUEST_LOG"], "a", encoding="utf-8") as out:
            out.write(json.dumps({"body_b64": base64.b64encode(body).decode()}) + "\n")
        shape = parse_qs(urlsplit(self.path).query).get("shape", ["json"])[0]
        message = json.loads(body)
        if "id" not in message:
            self._send("application/json", b"", 202)
            return
        if message.get("method") in RACING:
            solo = str(message["id"]).startswith("solo")
            answer = own_response(message) if solo else crossed(message)
        else:
            answer = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
        data = json.dumps(answer).encode()
        if shape == "sse":
            self._send("text/event-stream", b"event: message\ndata: " + data + b"\n\n")
        elif shape == "batch":
            self._send("application/json", b"[" + data + b"]")
        else:
            self._send("application/json", data)

    def _send(self, content_type: str, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
