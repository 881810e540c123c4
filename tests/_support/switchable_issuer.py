"""An issuer web site on a real socket that can go dark, and that remembers when it was asked.

``jwks_site.Site`` holds the pages and counts hits; this serves it over HTTP in a thread like
``jwks_site.serve``, but honours ``site.down`` on the socket too (the connection is closed with
no answer, as a dead load balancer would), and records the wall-clock time of every request for
each path, so a test can wait for "one minute since the sidecar's last fetch" exactly.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests._support.jwks_site import Site


@dataclass
class IssuerSite(Site):
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def fetches(self, path: str = "/jwks.json") -> int:
        """Requests that reached a page (not counting those refused while down)."""
        with self.lock:
            return self.hits[path]

    def last_request_at(self, path: str = "/jwks.json") -> float | None:
        with self.lock:
            seen = self.times.get(path)
            return seen[-1] if seen else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        site = self.server.site
        path = urlsplit(self.path).path
        with site.lock:
            site.times[path].append(time.time())
        if site.down:
            self.close_connection = True
            self.connection.close()  # no status line: the fetch fails as a transport error
            return
        page = site.page(path)
        self.send_response(page.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(page.body)))
        for name, value in page.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(page.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: IssuerSite) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site


@contextmanager
def serve_issuer(site: IssuerSite) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1, a free port, in a thread; yields ``http://127.0.0.1:PORT``."""
    server = _Server(site)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
