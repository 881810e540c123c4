"""The CA enrolment child never imports a ``sidecar`` package planted in the working directory.

Enrolment and renewal run in ``python -m sidecar.ca_worker``, which gets the join token or the
sidecar's current private key on its stdin. ``-m`` puts the working directory first on
``sys.path``, so a ``sidecar/__init__.py`` planted where the sidecar runs would have run in that
child and read the key. The attack plants a package that leaves a mark when imported and asks the
child to enrol with a CA that is not there; the genuine child answers with the connection
failure. The twin makes the same call from a clean directory and reads the same answer.
"""

from __future__ import annotations

import socket

import pytest

from sidecar.ca_worker import CAWorkerError, request_svid

pytestmark = pytest.mark.e2e


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _enrol_with_no_ca(mesh_ca) -> CAWorkerError:
    with pytest.raises(CAWorkerError) as refused:
        await request_svid(f"https://127.0.0.1:{_closed_port()}", "join-token", mesh_ca.bundle)
    return refused.value


async def test_a_sidecar_package_planted_in_the_working_directory_never_sees_the_enrolment(
    tmp_path, monkeypatch, mesh_ca
):
    planted = tmp_path / "appdir" / "sidecar"
    planted.mkdir(parents=True)
    mark = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    (planted / "ca_worker.py").write_text('print(\'{"error": "planted"}\')\n')
    monkeypatch.chdir(planted.parent)
    refused = await _enrol_with_no_ca(mesh_ca)
    assert not mark.exists(), "the CA child imported the planted package"
    assert "planted" not in str(refused)


async def test_the_same_enrolment_from_a_clean_directory_fails_the_same_way(
    tmp_path, monkeypatch, mesh_ca
):
    monkeypatch.chdir(tmp_path)
    refused = await _enrol_with_no_ca(mesh_ca)
    assert "planted" not in str(refused)
    assert refused.http_status == 503
