"""Two real sidecar processes and a real app on 127.0.0.1: service invocation over mTLS."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading

import httpx
import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
def pair(mesh):
    app = mesh.procs.app("server-app")
    server = mesh.sidecar("server", app_port=app.ready["port"])
    client = mesh.sidecar("client")
    return mesh, app, server, client


def raw_request(
    address: tuple[str, int], request_line: str, headers: str = ""
) -> tuple[int, bytes]:
    """Send a request byte for byte (clients such as httpx resolve '..' before sending)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(
            f"{request_line}\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n{headers}"
            "connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _echo(client, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{client.url()}{path}", timeout=10, **kw)


def test_both_invocation_forms_reach_the_app_with_the_caller_identity(pair):
    _, _, _, client = pair
    by_url = _echo(client, "/v1.0/invoke/server/method/echo/a?x=1", content=b'{"hello":1}')
    by_header = _echo(client, "/echo/a?x=1", headers={"dapr-app-id": "server"}, content=b"hi")
    for response in (by_url, by_header):
        assert response.status_code == 200, response.text
        seen = response.json()
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert seen["path"] == "/echo/a?x=1"
        assert headers["dapr-caller-app-id"] == "client"
        assert headers["dapr-caller-namespace"] == "default"
        assert headers["dapr-callee-app-id"] == "server"
        assert headers["host"].startswith("127.0.0.1:")
        assert "dapr-app-id" not in headers
    assert by_url.json()["body"] == '{"hello":1}'
    assert by_header.json()["body"] == "hi"


def test_spoofed_caller_headers_in_any_case_never_reach_the_app(pair):
    _, _, _, client = pair
    spoof = [
        ("dapr-caller-app-id", "admin-agent"),
        ("DAPR-CALLER-APP-ID", "admin-agent"),
        ("Dapr-Caller-Namespace", "kube-system"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("Connection", "x-secret"),
        ("x-secret", "hop-by-hop, must not pass"),
    ]
    response = _echo(client, "/v1.0/invoke/server/method/echo", headers=spoof)
    assert response.status_code == 200
    pairs = [(k.lower(), v) for k, v in response.json()["headers"]]
    assert ("dapr-caller-app-id", "client") in pairs
    assert all(v != "admin-agent" for _, v in pairs)
    assert ("dapr-caller-namespace", "default") in pairs
    assert all(k != "x-secret" for k, _ in pairs)
    assert all("10.0.0.1" not in v for _, v in pairs)


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("/v1.0/invoke/server/method/admin/../echo", "/echo"),
        ("/v1.0/invoke/server/method/admin/%2e%2e/echo", "/echo"),
        ("/v1.0/invoke/server/method/admin%2F..%2Fecho", "/echo"),
        ("/v1.0/invoke/server/method/../../../echo", "/echo"),
        ("/v1.0/invoke/server/method/%2e%2e/%2E%2E/echo", "/echo"),
        ("/v1.0/invoke/server/method/x/./././echo/.", "/x/echo"),
        ("/v1.0/invoke/server/method//echo//x/", "/echo/x"),
        ("/v1.0/invoke/server/method/a%20b", "/a%20b"),
        ("/v1.0/invoke/server/method/a%25b", "/a%25b"),
    ],
)
def test_the_app_receives_exactly_the_normalised_path(pair, sent, forwarded):
    _, _, _, client = pair
    status, body = raw_request(client.address("http"), f"POST {sent} HTTP/1.1")
    assert status == 200, body
    assert json.loads(body)["path"] == forwarded


@pytest.mark.parametrize("path", ["a%3Fb", "a%23b", "a%00b", "a%0Ab", "a%zz", "a%ff"])
def test_forbidden_characters_are_refused_before_leaving_the_host(pair, path):
    _, app, _, client = pair
    before = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    response = _echo(client, f"/v1.0/invoke/server/method/{path}")
    assert response.status_code == 400
    assert response.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    after = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    assert after == before
    # and the legitimate neighbour passes
    assert _echo(client, "/v1.0/invoke/server/method/ab").status_code == 200


def test_errors_are_dapr_shaped_with_their_own_status(pair, mesh):
    _, _, _, client = pair
    unknown = _echo(client, "/v1.0/invoke/nobody/method/x")
    assert unknown.status_code == 404
    assert unknown.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert "nobody" in unknown.json()["message"]
    missing = _echo(client, "/no/target")
    assert missing.status_code == 404
    assert "dapr-app-id" in missing.json()["message"]
    # A registered app whose sidecar is gone: unreachable.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    peers = mesh.root / "peers.yaml"
    peers.write_text(f"ghost: 127.0.0.1:{dead_port}\n")
    lonely = mesh.procs.sidecar(
        "lonely", mesh.home, svid_dir=mesh.svid_dir("lonely"), extra=["--peers", str(peers)]
    )
    unreachable = _echo(lonely, "/v1.0/invoke/ghost/method/x")
    assert unreachable.status_code == 503
    assert "ghost" in unreachable.json()["message"]


def test_outbound_refuses_a_server_holding_another_identity(pair, mesh):
    """A sidecar with a valid SVID for 'impostor', listed under the name 'server', is refused."""
    _, app, _, _ = pair
    impostor = mesh.sidecar("impostor", app_port=app.ready["port"])
    peers = mesh.root / "peers.yaml"
    peers.write_text(f"server: {impostor.ready['inbound']}\n")
    fooled = mesh.procs.sidecar(
        "victim", mesh.home, svid_dir=mesh.svid_dir("victim"), extra=["--peers", str(peers)]
    )
    count_before = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    response = _echo(fooled, "/v1.0/invoke/server/method/echo")
    assert response.status_code == 502
    assert "identity mismatch" in response.json()["message"]
    assert "spiffe://public/ns/default/impostor" in response.json()["message"]
    count_after = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    assert count_after == count_before
    # The same sidecar reaches the real server through the registry.
    honest = mesh.procs.sidecar("honest", mesh.home, svid_dir=mesh.svid_dir("honest"))
    assert _echo(honest, "/v1.0/invoke/server/method/echo").status_code == 200


def test_outbound_port_refuses_foreign_hosts_and_origins(pair):
    _, _, _, client = pair
    url = f"{client.url()}/v1.0/invoke/server/method/echo"
    rebinding = httpx.post(url, headers={"host": "attacker.example:3500"})
    assert rebinding.status_code == 403
    browser = httpx.post(url, headers={"origin": "https://evil.example"})
    assert browser.status_code == 403
    null_origin = httpx.post(url, headers={"origin": "null"})
    assert null_origin.status_code == 403
    local = httpx.post(url, headers={"origin": "http://localhost:8080", "host": "localhost"})
    assert local.status_code == 200


def test_api_token_guards_the_outbound_port(mesh):
    app = mesh.procs.app()
    mesh.sidecar("server", app_port=app.ready["port"])
    token_file = mesh.root / "api-token"
    token_file.write_text("s3cret-token\n")
    client = mesh.sidecar("client", extra=["--api-token-file", str(token_file)])
    url = f"{client.url()}/v1.0/invoke/server/method/echo"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"dapr-api-token": "wrong"}).status_code == 401
    # CVE-2023-37918: /healthz anywhere else in the URL is not an exemption
    assert httpx.post(f"{url}/healthz").status_code == 401
    assert httpx.get(f"{client.url()}/v1.0/healthz").status_code == 204
    ok = httpx.post(url, headers={"dapr-api-token": "s3cret-token"})
    assert ok.status_code == 200
    sent = {k.lower() for k, _ in ok.json()["headers"]}
    assert "dapr-api-token" not in sent  # the token never leaves the host


def test_chunked_responses_and_request_bodies_stream_through(pair):
    _, _, _, client = pair
    response = httpx.get(f"{client.url()}/v1.0/invoke/server/method/chunked?n=50", timeout=10)
    assert response.text == "".join(f"chunk-{i};" for i in range(50))

    def gen():
        for i in range(100):
            yield f"part-{i}\n".encode()

    sink = httpx.post(f"{client.url()}/v1.0/invoke/server/method/sink", content=gen(), timeout=10)
    expected = b"".join(f"part-{i}\n".encode() for i in range(100))
    import hashlib

    assert sink.json() == {"size": len(expected), "sha256": hashlib.sha256(expected).hexdigest()}


def test_first_sse_event_arrives_before_the_stream_ends(pair):
    _, app, _, client = pair
    url = f"{client.url()}/v1.0/invoke/server/method/sse-gated"
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        # The app has not sent the second event yet: it waits for /release.
        httpx.post(f"http://127.0.0.1:{app.ready['port']}/release")
        rest = [line for line in lines if line]
        assert rest == ["data: second"]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_100_mb_body_streams_with_flat_sidecar_memory(pair):
    _, _, server, client = pair
    before = {p.name: _rss_kib(p.pid) for p in (server, client)}
    block = b"y" * (1 << 20)

    def gen():
        for _ in range(100):
            yield block

    up = httpx.post(f"{client.url()}/v1.0/invoke/server/method/sink", content=gen(), timeout=60)
    assert up.json()["size"] == 100 << 20
    with httpx.stream(
        "GET", f"{client.url()}/v1.0/invoke/server/method/big?mb=100", timeout=60
    ) as r:
        received = sum(len(chunk) for chunk in r.iter_raw())
    assert received == 100 << 20
    for proc in (server, client):
        grown_mib = (_rss_kib(proc.pid) - before[proc.name]) / 1024
        assert grown_mib < 40, f"{proc.name} peak RSS grew {grown_mib:.1f} MiB for 200 MiB moved"


def test_keep_alive_reuses_one_mtls_connection(pair):
    _, _, _, client = pair
    with httpx.Client(timeout=10) as http:
        for _ in range(20):
            assert http.post(f"{client.url()}/v1.0/invoke/server/method/echo").status_code == 200
        metrics = http.get(f"http://{client.ready['admin']}/metrics").text
    handshakes = [
        line for line in metrics.splitlines() if line.startswith("trustmesh_tls_handshakes_total")
    ]
    assert handshakes == ['trustmesh_tls_handshakes_total{result="ok"} 1.0']


def test_concurrent_callers_are_served(pair):
    _, _, _, client = pair
    results: list[int] = []

    def call():
        with httpx.Client(timeout=20) as http:
            for _ in range(10):
                results.append(
                    http.post(f"{client.url()}/v1.0/invoke/server/method/echo").status_code
                )

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 80


def test_admin_endpoints_report_health_readiness_metrics_and_status(pair):
    mesh, _, server, client = pair
    admin = f"http://{server.ready['admin']}"
    assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{admin}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    _echo(client, "/v1.0/invoke/server/method/echo")
    status = httpx.get(f"{admin}/v1/status").json()
    assert status["spiffe_id"] == "spiffe://public/ns/default/server"
    assert status["svid"]["not_after"]
    # The mesh's own deadline: when the bundle's first CA expires (the CA outlives every SVID).
    trust_ends = dt.datetime.fromisoformat(status["trust_bundle"]["not_after"])
    assert trust_ends == mesh.ca.not_after
    assert trust_ends >= dt.datetime.fromisoformat(status["svid"]["not_after"])
    metrics = httpx.get(f"{admin}/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    samples = [
        sample.labels
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "trustmesh_requests_total"
    ]
    assert any(
        (s["direction"], s["caller"], s["callee"]) == ("inbound", "client", "server")
        for s in samples
    )
    assert "trustmesh_svid_expiry_seconds" in metrics
    assert "trustmesh_trust_bundle_expiry_seconds" in metrics
    assert "trustmesh_request_duration_seconds_bucket" in metrics
    assert httpx.post(f"{admin}/healthz").status_code == 405


def test_readyz_is_503_while_the_app_is_down(mesh):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    server = mesh.sidecar("server", app_port=port)
    ready = httpx.get(f"http://{server.ready['admin']}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["app"] is False


def test_sigterm_removes_the_registry_record(pair, mesh):
    _, _, server, _ = pair
    record = mesh.home / "registry" / "default" / "server.json"
    assert json.loads(record.read_text())["pid"] == server.pid
    assert server.stop() == 0
    assert not record.exists()


def test_every_inbound_decision_is_audited_in_a_hash_chain(pair, mesh):
    from sidecar.audit import verify_chain

    _, _, server, client = pair
    for _ in range(3):
        _echo(client, "/v1.0/invoke/server/method/echo")
    server.stop()
    log = mesh.home / "audit" / "default.server.jsonl"
    assert verify_chain(log) == 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in records if r["kind"] == "decision"]  # checkpoints sign the head
    assert {r["caller"] for r in records} == {"spiffe://public/ns/default/client"}
    assert {r["decision"] for r in records} == {"allow"}
    lines = log.read_text().splitlines()
    tampered = log.with_name("tampered.jsonl")
    tampered.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        verify_chain(tampered)
