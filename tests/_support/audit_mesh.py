"""A small mesh that produces every kind of decision, for the audit suites.

Apps and what each caller may do:
* ``mcp-server``: the request-logging MCP server; ``client`` may call ``add`` and ``echo``;
* ``api``: the echo app behind an ACL (``defaultAction: deny``, only ``client`` allowed);
* ``secure``: the same echo app behind a bearer component (tokens from a local issuer);
* ``client`` and ``intruder``: outbound-only callers.

:func:`drive_traffic` sends one of each decision through the real sidecars and returns what it
sent, so a test can look for exactly those records. Sidecars checkpoint every few records, so a
short run still has signed checkpoints to verify and forge.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests._support.jose_mint import jwks, rsa_key
from tests._support.mcp_mesh import TRUSTMESH, McpMesh, RequestLog
from tests._support.procs import REPO, Proc

MCP_SERVER = "mcp-server"
CHECKPOINT_EVERY = 4
ACCEPT = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
META_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class AuditMesh:
    mcp: McpMesh
    sidecars: dict[str, Proc]
    app: Proc
    mcp_log: RequestLog
    sent: list[dict] = field(default_factory=list)
    responses: dict[str, httpx.Response] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.mcp.home

    def log_path(self, app_id: str) -> Path:
        return self.home / "audit" / f"default.{app_id}.jsonl"

    def bundle(self) -> Path:
        return self.mcp.mesh.root / "svids" / "default.client" / "bundle.pem"

    def url(self, caller: str, app_id: str, path: str) -> str:
        return f"{self.sidecars[caller].url()}/v1.0/invoke/{app_id}/method/{path}"

    def status(self, app_id: str) -> dict:
        return httpx.get(f"http://{self.sidecars[app_id].ready['admin']}/v1/status").json()

    def records(self, app_id: str, kind: str = "decision") -> list[dict]:
        lines = self.log_path(app_id).read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == kind]

    def wait_flushed(self, *app_ids: str, timeout: float = 10.0) -> None:
        """Until each sidecar has written everything it recorded (head = last appended)."""
        deadline = time.monotonic() + timeout
        for app_id in app_ids:
            while True:
                audit = self.status(app_id)["audit"]
                if audit["buffered"] == 0 and audit["head"]["seq"] > 0:
                    break
                assert time.monotonic() < deadline, f"{app_id} never flushed: {audit}"
                time.sleep(0.05)

    def tm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*TRUSTMESH, *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    def mcp_call(self, caller: str, name: str, arguments: dict, **headers: str) -> httpx.Response:
        body = {
            "jsonrpc": "2.0",
            "id": len(self.sent) + 1,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        meta = headers.pop("meta_traceparent", None)
        if meta:
            body["params"]["_meta"] = {"traceparent": meta}
        response = httpx.post(
            self.url(caller, MCP_SERVER, "mcp"),
            content=json.dumps(body).encode(),
            headers={**ACCEPT, **headers},
            timeout=15,
        )
        self.sent.append({"tool": name, "keys": sorted(arguments), "status": response.status_code})
        return response


def _documents(issuer: str) -> list[dict]:
    bearer = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bearer-audit"},
        "spec": {
            "type": "middleware.http.bearer",
            "version": "v1",
            "metadata": [
                {"name": "issuer", "value": issuer},
                {"name": "audience", "value": "audit-api"},
            ],
        },
    }
    acl = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "acl-only"},
        "spec": {
            "accessControl": {
                "defaultAction": "deny",
                "trustDomain": "public",
                "policies": [
                    {
                        "appId": "client",
                        "defaultAction": "allow",
                        "trustDomain": "public",
                        "namespace": "default",
                    }
                ],
            }
        },
    }
    protected = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "bearer-only"},
        "spec": {
            "httpPipeline": {
                "handlers": [{"name": "bearer-audit", "type": "middleware.http.bearer"}]
            }
        },
    }
    return [bearer, acl, protected]


def build(mcp: McpMesh, site, issuer: str) -> AuditMesh:
    """Apply the policies, then start every process (sidecars load policy as they start)."""
    site.put(
        "/.well-known/openid-configuration", {"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"}
    )
    site.put("/jwks.json", jwks(rsa_key("k1")))
    path = mcp.root / "audit-documents.yaml"
    path.write_text(yaml.safe_dump_all(_documents(issuer), sort_keys=False))
    mcp.tm("apply", "-f", str(path))
    mcp.tm("appid", "update", "api", "--app-config", "acl-only")
    mcp.tm("appid", "update", "secure", "--app-config", "bearer-only")
    mcp.tm("mcpserver", "create", MCP_SERVER)
    mcp.grant(MCP_SERVER, "client", "add,echo")
    extra = ["--audit-checkpoint-every", str(CHECKPOINT_EVERY)]
    server, log = mcp.logging_server("audit-mcp-app", mode="json", stateless=True)
    app = mcp.procs.app("audit-echo-app")
    sidecars = {
        MCP_SERVER: mcp.mesh.sidecar(MCP_SERVER, app_port=server.ready["port"], extra=extra),
        "api": mcp.mesh.sidecar("api", app_port=app.ready["port"], extra=extra),
        "secure": mcp.mesh.sidecar("secure", app_port=app.ready["port"], extra=extra),
        "client": mcp.mesh.sidecar("client", extra=extra),
        "intruder": mcp.mesh.sidecar("intruder", extra=extra),
    }
    return AuditMesh(mcp, sidecars, app, log)


def drive_traffic(world: AuditMesh) -> dict[str, httpx.Response]:
    """One request of each kind; returns the responses by name."""
    out: dict[str, httpx.Response] = {}
    out["mcp_allowed"] = world.mcp_call(
        "client", "add", {"a": 2, "b": 3}, traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    )
    out["mcp_denied"] = world.mcp_call(
        "client", "get_weather_alert", {"city": "secret-city"}, meta_traceparent=(
            f"00-{META_TRACE_ID}-b7ad6b7169203331-01"
        )
    )  # fmt: skip
    out["mcp_denied_again"] = world.mcp_call("client", "get_weather_alert", {"city": "x"})
    out["mcp_denied_other_tool"] = world.mcp_call("client", "fail", {"reason": "r"})
    out["mcp_allowed_echo"] = world.mcp_call("client", "echo", {"message": "hi"})
    out["plain_allowed"] = httpx.post(world.url("client", "api", "echo"), timeout=15)
    out["plain_denied"] = httpx.post(world.url("intruder", "api", "echo"), timeout=15)
    deadline = time.monotonic() + 15
    while True:  # the bearer keys are fetched in the background: 503 until then
        bearer = httpx.get(
            world.url("client", "secure", "echo"),
            headers={"authorization": "Bearer not.a-valid.token"},
            timeout=15,
        )
        if bearer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    out["bearer_denied"] = bearer
    out["unknown_app"] = httpx.get(world.url("client", "nowhere", "echo"), timeout=15)
    return out


@contextmanager
def audit_world(root: Path, ca) -> Iterator[AuditMesh]:
    """The mesh with its traffic sent and flushed; every process stopped on exit (before the
    issuer, which the sidecars would otherwise log as unreachable)."""
    from tests._support.switchable_issuer import IssuerSite, serve_issuer
    from tests.integration.conftest import Mesh

    mcp = McpMesh(Mesh(root, ca))
    site = IssuerSite()
    with ExitStack() as stack:
        issuer = stack.enter_context(serve_issuer(site))
        stack.callback(_stop_all, mcp)
        world = build(mcp, site, issuer)
        world.responses = drive_traffic(world)
        world.wait_flushed(*world.sidecars)
        yield world


def _stop_all(mcp: McpMesh) -> None:
    killed = mcp.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"
