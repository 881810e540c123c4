"""A fake issuer web site for the JWKS fetcher: documents by path, a hit counter, an off switch.

The same ``Site`` is served two ways: over a real socket by a threaded ``http.server`` (for the
real HTTP client, in real time), or in memory through ``Site.fetch`` (for tests on
``autojump_clock``, where a socket wait would let the clock jump past every timeout).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from sidecar.bearer import FetchError, FetchResult, cache_control_max_age


@dataclass
class Page:
    body: bytes
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Site:
    pages: dict[str, Page] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, path: str, body: bytes | dict, *, status: int = 200, **headers: str) -> None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        named = tuple((name.replace("_", "-"), value) for name, value in headers.items())
        with self.lock:
            self.pages[path] = Page(body, status, named)

    def page(self, path: str) -> Page:
        with self.lock:
            self.hits[path] += 1
            return self.pages.get(path, Page(b'{"error": "not found"}', 404))

    async def fetch(self, url: str) -> FetchResult:
        """The in-memory transport, with ``HttpsGetter``'s contract: 200 or ``FetchError``."""
        if self.down:
            raise FetchError(f"GET {url} failed: [Errno 111] Connection refused")
        page = self.page(urlsplit(url).path)
        if page.status != 200:
            raise FetchError(f"GET {url}: HTTP {page.status}, expected 200")
        raw = [(k.lower().encode(), v.encode()) for k, v in page.headers]
        return FetchResult(page.body, cache_control_max_age(raw))


class _Handler(BaseHTTPRequestHandler):
    server: _SiteServer

    def do_GET(self) -> None:
        page = self.server.site.page(urlsplit(self.path).path)
        self.send_response(page.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(page.body)))
        for name, value in page.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(page.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Site) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site


@contextmanager
def serve(site: Site, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 (port 0) in a thread; yields ``http://127.0.0.1:PORT``.

    With a server ``tls`` context it yields ``https://localhost:PORT`` instead.
    """
    server = _SiteServer(site)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = server.server_address[1]
    try:
        yield f"https://localhost:{port}" if tls is not None else f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers: a hung issuer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
