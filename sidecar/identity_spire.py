"""``--identity spire``: SVIDs and the trust bundle from the SPIFFE Workload API.

SPIRE's agent (or anything speaking the Workload API, e.g. the SPIFFE CSI driver's socket in a
pod) streams X.509 contexts on a Unix socket (``SPIFFE_ENDPOINT_SOCKET``): the first on connect,
a new one whenever it rotates the SVID or the bundle changes. py-spiffe's client watches that
stream on its own thread; each context is handed to the trio loop (the latest one wins: an older
context that was never installed is worth nothing) and installed through the same
:class:`IdentityHolder` as the other sources, so a connection keeps the TLS contexts it started
with and a rotation never changes anything under a request in flight.

Which SVID: the Workload API may return several; the one whose SPIFFE ID the mesh's identity
map turns into this sidecar's App identity is used. If none is, nothing is installed (first
context: the sidecar fails to start naming what was offered; later: the current SVID stays and
the refusal is logged and reported as ``svid_error``).

Stream trouble: py-spiffe reconnects with back-off on its own; errors it gives up on are logged
and reported while the current SVID serves until it expires, as with the bundled CA.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import structlog
import trio
from cryptography.hazmat.primitives.hashes import SHA256

from identity import IdentityError, TrustBundle, X509Svid

from .identity_source import IdentityHolder, IdentityUnavailable

log = structlog.get_logger("trustmesh.identity")

ENDPOINT_ENV = "SPIFFE_ENDPOINT_SOCKET"
FIRST_CONTEXT_TIMEOUT = 30.0


class _Latest:
    """A one-slot mailbox filled from the trio thread: the newest value, and a wake-up."""

    def __init__(self) -> None:
        self.value: object | None = None
        self.wake = trio.Event()

    def put(self, value: object) -> None:
        self.value = value
        self.wake.set()

    async def take(self) -> object:
        await self.wake.wait()
        self.wake = trio.Event()
        value, self.value = self.value, None
        return value


def material_from_context(context, holder: IdentityHolder) -> tuple[X509Svid, TrustBundle]:
    """Our SVID and bundle out of a py-spiffe ``X509Context``: the SVID that is this App."""
    offered = []
    for svid in context.x509_svids:
        try:
            ours = X509Svid(tuple(svid.cert_chain), svid.private_key)
        except IdentityError as exc:
            offered.append(f"{svid.spiffe_id} ({exc})")
            continue
        if ours.identity != holder.expected:
            offered.append(str(ours.identity))
            continue
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None or not bundle.x509_authorities:
            raise IdentityUnavailable(f"the Workload API sent no bundle for {svid.spiffe_id}")
        # A set in py-spiffe: order it, so an unchanged bundle compares equal across contexts.
        authorities = sorted(bundle.x509_authorities, key=lambda c: c.fingerprint(SHA256()))
        return ours, TrustBundle(tuple(authorities))
    raise IdentityUnavailable(
        f"the Workload API offered no SVID for {holder.expected}: got "
        + (", ".join(offered) or "none")
    )


def _client(endpoint: str | None):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # py-spiffe's import warns about DSA, never used here
            from spiffe import WorkloadApiClient
            from spiffe.errors import ArgumentError
    except ImportError as exc:
        raise IdentityUnavailable(
            "--identity spire needs py-spiffe: pip install 'trustmesh[spire]'"
        ) from exc
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        raise IdentityUnavailable(
            f"--identity spire needs the Workload API socket: set {ENDPOINT_ENV} "
            "(e.g. unix:///spiffe-workload-api/spire-agent.sock) or pass --spiffe-endpoint"
        )
    try:
        return WorkloadApiClient(socket_path=endpoint)
    except ArgumentError as exc:
        raise IdentityUnavailable(f"cannot use the Workload API at {endpoint}: {exc}") from exc


async def run_workload_api_identity(
    holder: IdentityHolder,
    endpoint: str | None = None,
    *,
    first_timeout: float = FIRST_CONTEXT_TIMEOUT,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Install the first usable X.509 context (failing after ``first_timeout``), then every
    rotation the Workload API streams."""
    client = _client(endpoint)
    latest = _Latest()
    token = trio.lowlevel.current_trio_token()

    def from_stream(item: object) -> None:  # runs on py-spiffe's watcher thread
        with contextlib.suppress(trio.RunFinishedError):  # the sidecar is shutting down
            trio.from_thread.run_sync(latest.put, item, trio_token=token)

    stream = client.stream_x509_contexts(from_stream, from_stream)
    try:
        with trio.move_on_after(first_timeout):
            while holder.current is None:
                _install(holder, await latest.take(), first=True)
        if holder.current is None:
            raise IdentityUnavailable(
                f"no SVID from the Workload API within {first_timeout:g} s"
                + (f": {holder.last_error}" if holder.last_error else "")
            )
        task_status.started()
        while True:
            _install(holder, await latest.take(), first=False)
    finally:
        stream.cancel()
        client.close()


def _install(holder: IdentityHolder, item: object, *, first: bool) -> None:
    if isinstance(item, Exception):
        holder.last_error = f"Workload API: {item}"
        log.error("workload api stream failed; serving with the current SVID", error=str(item))
        return
    try:
        holder.install(*material_from_context(item, holder))
    except (IdentityError, IdentityUnavailable) as exc:
        if first:
            raise IdentityUnavailable(str(exc)) from exc
        holder.last_error = str(exc)
        log.error("svid from the Workload API refused; keeping the current one", error=str(exc))
