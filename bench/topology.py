"""The four paths under test, started on 127.0.0.1 and nothing else.

::

    direct         wrk ───────────────────────────────────────────────────────────► app
    trustmesh      wrk ─► sidecar(bench-client) ═ mTLS ═► sidecar(bench-server) ──► app
    trustmesh+mcp  wrk ─► sidecar(bench-mcp-client) ═ mTLS ═► sidecar(bench-mcp-server) ─► app
    nginx pair     wrk ─► nginx A ═══════════════ mTLS ═══► nginx B ───────────────► app

``trustmesh`` runs with no policy (every authenticated caller allowed); ``trustmesh+mcp`` with
the server registered as an MCP server and the bench's tool granted to its caller, so each
request is read whole, parsed, judged by tool, and its JSON response filtered.

The app is one nginx worker answering every POST with the same small JSON-RPC result, so the
three runs differ only in the proxy path. Both mTLS hops use certificates from a fresh trustmesh
CA (EC P-256, leaf + issuer chain, TLS 1.3) and keep their upstream connections alive. nginx A
verifies nginx B's chain *and* name (nginx always checks the name once it verifies), so nginx
B's certificate carries a DNS name beside its SPIFFE URI; the sidecars check the SPIFFE ID
instead. Each nginx runs ``worker_processes 1`` in the foreground with its own prefix, config,
pid and logs: one event loop per proxy, like one Python process per sidecar.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca import CertificateAuthority
from identity import AppIdentity, X509Svid, client_context, save_svid_dir

from .procs import BenchError, Managed, Processes, free_port

CLIENT_ID = "bench-client"
SERVER_ID = "bench-server"
MCP_CLIENT_ID = "bench-mcp-client"
MCP_SERVER_ID = "bench-mcp-server"
BENCH_TOOL = "get_forecast"  # the tool bench.load's request calls
NGINX_B_NAME = "bench-server.nginx.test"  # the DNS name nginx A verifies

# What the MCP server answers to every tools/call: ~150 bytes of JSON-RPC result.
APP_RESPONSE = (
    '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text",'
    '"text":"Lisbon: 21 C, clear sky, wind 12 km/h NW, humidity 54%"}],'
    '"isError":false}}'
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Pki:
    bundle: Path
    client_dir: Path  # svid.pem (leaf + issuer), svid.key, bundle.pem
    server_dir: Path
    nginx_b_cert: Path
    nginx_b_key: Path
    client_svid: X509Svid
    ca: CertificateAuthority
    svid_dirs: dict[str, Path]

    def client_context(self):
        """The TLS client context a sidecar would use as bench-client (for handshake timing)."""
        return client_context(self.client_svid, self.ca.bundle)


def _dns_server_cert(ca: CertificateAuthority, identity: AppIdentity, dns_name: str):
    """An SVID-shaped leaf with a DNS name too, for nginx's mandatory name check."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=15))
        .not_valid_after(now + dt.timedelta(hours=4))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(identity)), x509.DNSName(dns_name)]
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(ca.issuer_key, hashes.SHA256())
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca.issuer_cert))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return chain, key_pem


def make_pki(root: Path) -> Pki:
    ca = CertificateAuthority.create("public", now=_now())
    dirs = {}
    svids = {}
    for app_id in (CLIENT_ID, SERVER_ID, MCP_CLIENT_ID, MCP_SERVER_ID):
        identity = AppIdentity("public", "default", app_id)
        svids[app_id] = ca.issue(identity, now=_now(), ttl=dt.timedelta(hours=4))
        dirs[app_id] = root / "svids" / app_id
        save_svid_dir(dirs[app_id], svids[app_id], ca.bundle)
    chain, key = _dns_server_cert(ca, AppIdentity("public", "default", SERVER_ID), NGINX_B_NAME)
    nginx_dir = root / "svids" / "nginx-b"
    nginx_dir.mkdir(parents=True)
    (nginx_dir / "tls.crt").write_bytes(chain)
    (nginx_dir / "tls.key").write_bytes(key)
    (nginx_dir / "tls.key").chmod(0o600)
    return Pki(
        bundle=dirs[CLIENT_ID] / "bundle.pem",
        client_dir=dirs[CLIENT_ID],
        server_dir=dirs[SERVER_ID],
        nginx_b_cert=nginx_dir / "tls.crt",
        nginx_b_key=nginx_dir / "tls.key",
        client_svid=svids[CLIENT_ID],
        ca=ca,
        svid_dirs=dirs,
    )


# --- nginx ---------------------------------------------------------------------------------


def _nginx_conf(prefix: Path, http_body: str) -> str:
    tmp = prefix / "tmp"
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{http_body}
}}
"""


def app_conf(port: int, read_body: bool = True) -> str:
    """Reads the whole request body, then answers, as an MCP server does.

    ``return`` alone would answer as soon as the head arrives and discard the body later; a
    mirror with ``mirror_request_body on`` makes nginx read the body first (the mirror is an
    internal no-op), and the content phase then ends in the named location that answers.
    ``read_body=False`` keeps the bare ``return``: a legal server that answers first.
    """
    if not read_body:
        return f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{APP_RESPONSE}';
        }}
    }}"""
    return f"""
    open_file_cache max=16;
    open_file_cache_errors on;
    server {{
        listen 127.0.0.1:{port};
        root /nonexistent;  # outside the 0700 temp dir: ENOENT (404), never EACCES (403)
        location / {{
            mirror /_read_body;
            mirror_request_body on;
            error_page 404 =200 @answer;
        }}
        location = /_read_body {{
            internal;
            return 204;
        }}
        location @answer {{
            default_type application/json;
            return 200 '{APP_RESPONSE}';
        }}
    }}"""


def nginx_a_conf(port: int, b_port: int, pki: Pki) -> str:
    """Plain HTTP in, mTLS out: presents bench-client's SVID, verifies nginx B."""
    return f"""
    upstream nginx_b {{
        server 127.0.0.1:{b_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass https://nginx_b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {SERVER_ID};
            proxy_ssl_certificate {pki.client_dir}/svid.pem;
            proxy_ssl_certificate_key {pki.client_dir}/svid.key;
            proxy_ssl_trusted_certificate {pki.bundle};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 3;
            proxy_ssl_name {NGINX_B_NAME};
            proxy_ssl_server_name off;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }}
    }}"""


def nginx_b_conf(port: int, app_port: int, pki: Pki) -> str:
    """mTLS in (client certificate required, chained to the trust bundle), plain HTTP to the app."""
    return f"""
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.nginx_b_cert};
        ssl_certificate_key {pki.nginx_b_key};
        ssl_client_certificate {pki.bundle};
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Verify $ssl_client_verify;
            proxy_set_header X-Client-DN $ssl_client_s_dn;
        }}
    }}"""


def start_nginx(procs: Processes, nginx: str, name: str, port: int, http_body: str) -> Managed:
    prefix = procs.workdir / name
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, http_body))
    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/error.log"]
    proc = procs.start(name, argv)
    procs.wait_port(proc, port)
    return proc


# --- trustmesh -----------------------------------------------------------------------------


def start_sidecar(
    procs: Processes,
    app_id: str,
    home: Path,
    svid_dir: Path,
    app_port: int | None = None,
) -> Managed:
    argv = [sys.executable, "-m", "sidecar", "sidecar", "--app-id", app_id, "--home", str(home)]
    argv += ["--http-port", "0", "--svid-dir", str(svid_dir)]
    if app_port is not None:
        argv += ["--app-port", str(app_port)]
    proc = procs.start(f"sidecar-{app_id}", argv)
    procs.wait_ready_line(proc)
    return proc


# --- all of it -----------------------------------------------------------------------------


@dataclass
class Route:
    """One way to reach the app: the URL wrk loads and the proxy processes on the way."""

    name: str
    url: str
    proxies: tuple[Managed, ...]


@dataclass
class Topology:
    pki: Pki
    app: Managed
    direct: Route
    nginx: Route
    trustmesh: Route
    trustmesh_mcp: Route  # the same, with the app registered as an MCP server and a grant
    nginx_b_port: int
    client_sidecar: Managed
    server_sidecar: Managed

    @property
    def paths(self) -> tuple[Route, ...]:
        return (self.direct, self.nginx, self.trustmesh, self.trustmesh_mcp)


def apply_mcp_policy(home: Path) -> None:
    """Register the MCP pair's server as an MCP server and grant the bench's tool to its
    caller, before either sidecar starts (so they load it at start): every request is then
    inspected whole, judged by tool, and its JSON response run through the list backstop."""
    base = [sys.executable, "-m", "sidecar", "mcpserver"]
    for argv in (
        [*base, "create", MCP_SERVER_ID],
        [*base, "access", "grant", MCP_SERVER_ID, "--caller", MCP_CLIENT_ID,
         "--allow-tools", BENCH_TOOL],
    ):  # fmt: skip
        done = subprocess.run([*argv, "--home", str(home)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv[3:])} failed: {done.stderr.strip()[-500:]}")


def start_topology(procs: Processes, nginx: str, app_reads_body: bool = True) -> Topology:
    root = procs.workdir
    pki = make_pki(root)
    app_port, a_port, b_port = free_port(), free_port(), free_port()
    app = start_nginx(procs, nginx, "app", app_port, app_conf(app_port, app_reads_body))
    nginx_b = start_nginx(procs, nginx, "nginx-b", b_port, nginx_b_conf(b_port, app_port, pki))
    nginx_a = start_nginx(procs, nginx, "nginx-a", a_port, nginx_a_conf(a_port, b_port, pki))
    home = root / "home"
    server = start_sidecar(procs, SERVER_ID, home, pki.server_dir, app_port)
    client = start_sidecar(procs, CLIENT_ID, home, pki.client_dir)
    client_http = client.ready["http"]
    apply_mcp_policy(home)
    mcp_server = start_sidecar(procs, MCP_SERVER_ID, home, pki.svid_dirs[MCP_SERVER_ID], app_port)
    mcp_client = start_sidecar(procs, MCP_CLIENT_ID, home, pki.svid_dirs[MCP_CLIENT_ID])
    return Topology(
        pki=pki,
        app=app,
        direct=Route("direct", f"http://127.0.0.1:{app_port}/mcp", ()),
        nginx=Route("nginx pair", f"http://127.0.0.1:{a_port}/mcp", (nginx_a, nginx_b)),
        trustmesh=Route(
            "trustmesh",
            f"http://{client_http}/v1.0/invoke/{SERVER_ID}/method/mcp",
            (client, server),
        ),
        trustmesh_mcp=Route(
            "trustmesh+mcp",
            f"http://{mcp_client.ready['http']}/v1.0/invoke/{MCP_SERVER_ID}/method/mcp",
            (mcp_client, mcp_server),
        ),
        nginx_b_port=b_port,
        client_sidecar=client,
        server_sidecar=server,
    )
