"""The quickstart's downstream weather service: mock alerts on ``GET /alerts?city=…``.

A plain HTTP app on ``127.0.0.1:$APP_PORT``; only its sidecar can reach it from the mesh.
"""

from __future__ import annotations

import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ALERTS = {
    "chicago": "Severe thunderstorm warning until 6 PM CDT",
    "miami": "Heat advisory in effect until 8 PM EDT",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        print(
            f"{self.command} {self.path} from {self.headers.get('dapr-caller-app-id')}", flush=True
        )

    def do_GET(self) -> None:
        if not self._through_sidecar():
            self._reply(401, {"error": "this app is reached through its sidecar only"})
            return
        url = urlsplit(self.path)
        if url.path != "/alerts":
            self._reply(404, {"error": "not found"})
            return
        city = (parse_qs(url.query).get("city") or ["chicago"])[0].lower()
        self._reply(200, {"city": city, "alert": ALERTS.get(city, "No active alerts")})

    def _through_sidecar(self) -> bool:
        """With ``$APP_API_TOKEN`` set (by ``trustmesh run``), only requests carrying it as
        ``dapr-api-token`` (sent by our sidecar, as Dapr does) are served."""
        token = os.environ.get("APP_API_TOKEN")
        if not token:
            return True
        sent = self.headers.get_all("dapr-api-token") or []
        return len(sent) == 1 and hmac.compare_digest(sent[0].encode(), token.encode())

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("APP_PORT", "5002"))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(json.dumps({"event": "ready", "port": httpd.server_address[1]}), flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
