"""#10.6 (sidecar side): the local doors are not open to every local process.

* Outbound port: with ``DAPR_API_TOKEN`` set, a request without the app's token in
  ``dapr-api-token`` — or with a wrong one — is refused 401 with JSON naming the header, and
  never reaches the target app (its request counter proves it); the twin with the token arrives.
* App port: with ``APP_API_TOKEN`` set, the sidecar presents it to the app as
  ``dapr-api-token``, and a caller's own ``dapr-api-token`` (a guess at the app's token, sent
  through the mesh) never reaches the app.

Real processes: two sidecars over mTLS and the test app behind the server's.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from identity import AppIdentity, client_context
from tests._support.pki import utcnow
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

CLIENT_TOKEN = "client-outbound-token-5f1c2e"
APP_TOKEN = "server-app-token-9b7d41"


@pytest.fixture(scope="module")
def doors(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("local-doors"), mesh_ca)
    try:
        app = mesh.procs.app("server-app")
        no_tokens = {"APP_API_TOKEN": "", "DAPR_API_TOKEN": ""}
        server = mesh.sidecar("server", app_port=app.ready["port"], env=no_tokens)
        guarded = mesh.sidecar("client", env={"DAPR_API_TOKEN": CLIENT_TOKEN})
        with_app_token = mesh.sidecar(
            "server2",
            app_port=app.ready["port"],
            env={"APP_API_TOKEN": APP_TOKEN, "DAPR_API_TOKEN": ""},
        )
        yield mesh, app, server, guarded, with_app_token
    finally:
        killed = mesh.procs.stop_all()
        assert not killed, f"processes outlived SIGTERM: {killed}"


def served(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count", timeout=10).json()["count"]


@pytest.mark.parametrize(
    "token", [None, "", "wrong", CLIENT_TOKEN[:-1], CLIENT_TOKEN.upper(), CLIENT_TOKEN + "x"]
)
def test_outbound_call_without_the_apps_token_is_refused_and_never_arrives(doors, token):
    _, app, _, guarded, _ = doors
    before = served(app)
    headers = {} if token is None else {"dapr-api-token": token}
    response = httpx.get(
        f"{guarded.url()}/v1.0/invoke/server/method/echo", headers=headers, timeout=10
    )
    assert response.status_code == 401, response.text
    error = response.json()
    assert error["errorCode"] == "ERR_API_TOKEN"
    assert "dapr-api-token" in error["message"]
    assert served(app) == before


def test_outbound_call_with_the_apps_token_arrives_without_the_token(doors):
    _, app, _, guarded, _ = doors
    before = served(app)
    response = httpx.get(
        f"{guarded.url()}/v1.0/invoke/server/method/echo",
        headers={"dapr-api-token": CLIENT_TOKEN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert served(app) == before + 1
    seen = [k.lower() for k, _ in response.json()["headers"]]
    assert "dapr-api-token" not in seen  # the client's token stays on the client's host


def test_the_app_receives_its_app_token_and_never_a_callers_guess(doors):
    _, _, _, guarded, _ = doors
    response = httpx.get(
        f"{guarded.url()}/v1.0/invoke/server2/method/echo",
        headers={"dapr-api-token": CLIENT_TOKEN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    seen = [(k.lower(), v) for k, v in response.json()["headers"]]
    assert [v for k, v in seen if k == "dapr-api-token"] == [APP_TOKEN]


def test_without_an_app_token_the_app_sees_no_dapr_api_token_at_all(doors):
    _, _, _, guarded, _ = doors
    response = httpx.get(
        f"{guarded.url()}/v1.0/invoke/server/method/echo",
        headers={"dapr-api-token": CLIENT_TOKEN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    seen = [k.lower() for k, _ in response.json()["headers"]]
    assert "dapr-api-token" not in seen


def _direct_mtls_echo(mesh, sidecar, headers: dict[str, str]) -> list[tuple[str, str]]:
    """What the app saw of a request sent straight to ``sidecar``'s inbound port by a mesh
    peer holding a real certificate (no outbound sidecar to strip anything on the way)."""
    ca = mesh.ca
    svid = ca.issue(AppIdentity(ca.trust_domain, "default", "intruder"), now=utcnow())
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    plain = socket.create_connection(sidecar.address("inbound"), timeout=15)
    with client_context(svid, ca.bundle).wrap_socket(plain) as sock:
        sock.sendall(f"GET /echo HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return [(k.lower(), v) for k, v in json.loads(body)["headers"]]


@pytest.mark.parametrize("spelling", ["dapr-api-token", "Dapr-Api-Token", "dapr_api_token"])
def test_a_peers_own_dapr_api_token_never_reaches_the_app(doors, spelling):
    mesh, _, server, _, with_app_token = doors
    guess = {spelling: "guessed-app-token"}
    seen = _direct_mtls_echo(mesh, server, guess)
    assert not [k for k, _ in seen if k.replace("_", "-") == "dapr-api-token"]
    seen = _direct_mtls_echo(mesh, with_app_token, guess)
    tokens = [v for k, v in seen if k.replace("_", "-") == "dapr-api-token"]
    assert tokens == [APP_TOKEN]
