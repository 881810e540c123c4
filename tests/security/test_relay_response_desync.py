"""#15.1: an app that mis-frames a response must not hand one caller's planted bytes to another.

Two callers (each with its own sidecar) call one app through the app's sidecar, whose pool of
keep-alive connections to the app is shared by every caller. The app (``misframing_app``) writes
bytes its framing does not cover — a body after HEAD, a body on a 204, a body longer than its
Content-Length, stray bytes after a well-framed body — and the attacker makes those bytes a
complete forged response. If the connection went back to the pool, the victim's next call would
read the forged response as its own. Each attack is followed by the victim's call, several
rounds, and the victim must always get the answer the app gave to *its* request; the app's own
log shows both requests arrived. The legitimate twin: well-framed answers still share one
kept-alive app connection, so the fix is not "never reuse".
"""

from __future__ import annotations

import httpx
import pytest

from tests._support.relay_mesh import start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

ROUNDS = 4
FORGED_BODY = b'{"echo": "FORGED-BY-ATTACKER"}'
FORGED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-forged: yes\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(FORGED_BODY), FORGED_BODY)
)


@pytest.fixture(scope="module")
def desync(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("desync"), mesh_ca)
    log = start_relay_mesh(mesh).log
    attacker = mesh.sidecar("attacker")
    victim = mesh.sidecar("victim")
    yield attacker, victim, log
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _url(sidecar, path: str) -> str:
    return f"{sidecar.url()}/v1.0/invoke/server/method/{path}"


def _victim_call(victim, http: httpx.Client, msg: str) -> httpx.Response:
    return http.get(_url(victim, "echo"), params={"msg": msg})


@pytest.mark.parametrize(
    ("verb", "route"),
    [("HEAD", "raw"), ("GET", "no-content"), ("GET", "short"), ("GET", "trailing")],
    ids=["body-after-head", "body-on-204", "short-content-length", "bytes-after-the-end"],
)
def test_misframed_response_never_reaches_the_next_caller(desync, verb, route):
    attacker, victim, log = desync
    with httpx.Client(timeout=15) as evil, httpx.Client(timeout=15) as good:
        for round_ in range(ROUNDS):
            evil.request(verb, _url(attacker, route), params={"body": FORGED.decode("latin-1")})
            msg = f"victim-{route}-{round_}"
            answer = _victim_call(victim, good, msg)
            assert answer.status_code == 200, answer.text
            assert "x-forged" not in answer.headers
            assert answer.json() == {"echo": msg}
    # Both callers' requests reached the app: the attack was forwarded, not refused, and the
    # victim's answer above came from the app's answer to the victim's own request.
    paths = [(e["method"], e["path"].split("?")[0]) for e in log.entries()]
    assert paths.count((verb, f"/{route}")) >= ROUNDS
    assert paths.count(("GET", "/echo")) >= ROUNDS


def test_well_framed_answers_keep_sharing_one_app_connection(desync):
    _, victim, log = desync
    with httpx.Client(timeout=15) as good:
        first = _victim_call(victim, good, "twin-1")
        second = _victim_call(victim, good, "twin-2")
    assert first.json() == {"echo": "twin-1"}
    assert second.json() == {"echo": "twin-2"}
    ports = {e["port"] for e in log.entries() if "msg=twin-" in e["path"]}
    assert len(ports) == 1, f"well-framed answers should reuse the app connection: {ports}"


def test_a_head_answer_still_reaches_its_caller_without_a_body(desync):
    attacker, _, _ = desync
    with httpx.Client(timeout=15) as http:
        response = http.head(_url(attacker, "echo"), params={"msg": "head-twin"})
    assert response.status_code == 200
    assert response.content == b""
