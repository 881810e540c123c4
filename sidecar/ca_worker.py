"""Enrolment and renewal with the bundled CA, done by a short-lived child process.

Getting an SVID from the CA takes a new private key and a CSR, which need an X.509 library
(``cryptography``, ~10 MiB resident once imported). A sidecar does this once at start and then
once per half-life of its certificate (12 h for the default 24 h leaf), so it runs
``python -m sidecar.ca_worker``: the child makes the key, calls the CA through :mod:`ca.client`
(the same code and checks as ever) and prints the SVID as PEM; the serving process reads the PEM
with :meth:`identity.X509Svid.from_pem` (OpenSSL checks the key matches the leaf) and never
imports ``cryptography`` itself. The child exits when it has answered, so it adds nothing to the
sidecar's resident memory; each call costs the child's start-up (a few hundred ms of CPU).

The join token and the current key travel on the child's stdin, never its command line. The
mesh's identity bindings travel too, so the child judges the CA's answer by the same identity
map as the sidecar.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from identity import (
    IdentityBinding,
    SpiffeId,
    TrustBundle,
    X509Svid,
    current_identity_map,
)

from .errors import SidecarError
from .serve import interpreter_options

TIMEOUT = 60.0  # the CA client's own per-call timeout is 10 s; this bounds the whole child


class CAWorkerError(SidecarError):
    """The CA call failed; ``http_status`` is the CA client's (4xx: a refusal, final)."""

    code = "ERR_CA"
    http_status = 503

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        if http_status is not None:
            self.http_status = http_status


def _bindings() -> list[list[str]]:
    return [[str(b.spiffe_id), b.namespace, b.app_id] for b in current_identity_map().bindings]


async def _ask(request: dict[str, Any]) -> tuple[X509Svid, TrustBundle]:
    request["bindings"] = _bindings()
    try:
        with trio.fail_after(TIMEOUT):
            done = await trio.run_process(
                # Never a ``sidecar`` package from the working directory: the child gets our key.
                [sys.executable, *interpreter_options(), "-m", "sidecar.ca_worker"],
                stdin=json.dumps(request).encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    except trio.TooSlowError:
        raise CAWorkerError(f"the CA call did not finish within {TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise CAWorkerError(f"cannot start the CA helper process: {exc}") from exc
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
        raise CAWorkerError(
            f"the CA helper process failed (exit {done.returncode}): {lines[-1]}"
        ) from None
    if "error" in answer:
        raise CAWorkerError(str(answer["error"]), answer.get("http_status"))
    svid = X509Svid.from_pem(answer["svid"].encode(), answer["key"].encode(), "CA response svid")
    return svid, TrustBundle.from_pem(answer["bundle"].encode(), "CA response bundle")


async def request_svid(ca_url: str, token: str, ca_bundle: TrustBundle):
    """Enrol with a join token (see :func:`ca.client.request_svid`), in a child process."""
    return await _ask(
        {"op": "request", "ca_url": ca_url, "token": token, "bundle": ca_bundle.to_pem().decode()}
    )


async def renew_svid(ca_url: str, current: X509Svid, ca_bundle: TrustBundle):
    """Renew over mTLS with ``current`` (see :func:`ca.client.renew_svid`), in a child process."""
    return await _ask(
        {
            "op": "renew",
            "ca_url": ca_url,
            "svid": current.chain_pem().decode(),
            "key": current.key_pem().decode(),
            "bundle": ca_bundle.to_pem().decode(),
        }
    )


# -- the child -----------------------------------------------------------------------------


async def _serve(request: dict[str, Any]) -> dict[str, Any]:
    from ca import client

    bundle = TrustBundle.from_pem(request["bundle"].encode(), "CA bundle")
    if request["op"] == "request":
        svid, new_bundle = await client.request_svid(request["ca_url"], request["token"], bundle)
    elif request["op"] == "renew":
        current = X509Svid.from_pem(request["svid"].encode(), request["key"].encode())
        svid, new_bundle = await client.renew_svid(request["ca_url"], current, bundle)
    else:
        raise ValueError(f"unknown operation {request['op']!r}")
    return {
        "svid": svid.chain_pem().decode(),
        "key": svid.key_pem().decode(),
        "bundle": new_bundle.to_pem().decode(),
    }


def main() -> None:
    from identity import IdentityMap, install_identity_map

    try:
        request = json.loads(sys.stdin.buffer.read())
        install_identity_map(
            IdentityMap(
                IdentityBinding(SpiffeId.parse(sid), ns, app)
                for sid, ns, app in request["bindings"]
            )
        )
        answer = trio.run(_serve, request)
    except Exception as exc:  # every failure becomes one answer the sidecar can log and judge
        answer = {"error": str(exc), "http_status": getattr(exc, "http_status", None)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
