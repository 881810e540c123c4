"""Where the sidecar's SVID comes from, and how it stays fresh.

The TLS material (SVID, bundle and the two ``SSLContext`` objects built from them) is one
immutable value, swapped whole: a connection uses the contexts it was accepted or dialled with,
so a rotation never changes anything under a request in flight.

* ``--svid-dir``: files written by ``trustmesh ca issue``, SPIRE's spiffe-helper or cert-manager's
  csi-driver-spiffe. Polled once a second; a change is loaded, checked (key matches leaf, the leaf
  is this app's identity) and installed. A broken or foreign file is logged and ignored: the last
  good material stays in force.
* ``--ca-url``/``--token``: a new key, a CSR to the bundled CA with the one-time token, then
  renewal over mTLS with a new key at half the certificate's lifetime; each in a short-lived
  child process (``ca_worker``), so the sidecar never loads an X.509 library. If the CA is
  unreachable the current SVID keeps serving and renewal retries with exponential back-off, each
  failure logged, until it works or the SVID expires.
* ``--identity spire``: the SPIFFE Workload API (``identity_spire.py``).

Which App an SVID (ours or a peer's) is depends on the mesh's identity map: ``AppIdentityBinding``
resources in the home or the ``--policy-dir``, loaded by :func:`watch_identity_map` *before* the
SVID (a bound SPIFFE ID may be our own) and swapped whole when the bindings change.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from identity import (
    BINDING_KIND,
    AppIdentity,
    IdentityBinding,
    IdentityError,
    IdentityMap,
    TrustBundle,
    X509Svid,
    client_context,
    current_identity_map,
    install_identity_map,
    load_svid_dir,
    parse_binding,
    server_context,
    svid_dir_layout,
)

from .errors import ResourceInvalid, SidecarError
from .state.tick_signature import STORE_POLL_INTERVAL
from .ticks import sleep_to_next_tick

log = structlog.get_logger("trustmesh.identity")

MAX_BACKOFF = 30.0
MIN_RENEWAL_DELAY = 1.0  # never renew in a tight loop, whatever the certificate says


class IdentityUnavailable(SidecarError):
    code = "ERR_IDENTITY"
    http_status = 503


@dataclass(frozen=True)
class TlsMaterial:
    svid: X509Svid
    bundle: TrustBundle
    server: ssl.SSLContext
    client: ssl.SSLContext
    generation: int


class IdentityHolder:
    """The current TLS material, and an event for when the first one arrives."""

    def __init__(self, expected: AppIdentity) -> None:
        self.expected = expected
        self.current: TlsMaterial | None = None
        self.ready = trio.Event()
        self.renewals = 0
        self.last_error: str | None = None
        self.installed_at: dt.datetime | None = None
        # Called when a new bundle drops a CA the previous one trusted: connections verified
        # under the old bundle must not go on serving peers the new one would refuse.
        self.on_trust_narrowed: list[Callable[[], None]] = []

    @property
    def generation(self) -> int:
        return self.current.generation if self.current else 0

    def install(self, svid: X509Svid, bundle: TrustBundle) -> None:
        if svid.identity != self.expected:
            raise IdentityUnavailable(
                f"SVID is for {svid.identity}, but this sidecar is {self.expected}"
            )
        generation = self.generation + 1
        previous = self.current
        self.current = TlsMaterial(
            svid,
            bundle,
            server_context(svid, bundle),
            client_context(svid, bundle),
            generation,
        )
        if generation > 1:
            self.renewals += 1
        self.installed_at = _utcnow()
        self.last_error = None
        self.ready.set()
        log.info(
            "svid installed",
            spiffe_id=str(svid.identity),
            serial=f"{svid.serial_number:x}",
            not_after=svid.not_after.isoformat(),
            generation=generation,
        )
        _warn_if_trust_ends_soon(bundle)  # at each renewal: twice a day by default
        if previous is not None and previous.bundle is not bundle:
            removed = previous.bundle.authority_ders() - bundle.authority_ders()
            if removed:
                log.warning(
                    "trust bundle dropped a CA: retiring connections verified under it",
                    removed=len(removed),
                )
                for retire in self.on_trust_narrowed:
                    retire()

    def material(self) -> TlsMaterial:
        if self.current is None:
            raise IdentityUnavailable("no SVID yet")
        return self.current

    def seconds_until_expiry(self) -> float | None:
        if self.current is None:
            return None
        return (self.current.svid.not_after - _utcnow()).total_seconds()

    def trust_ends(self) -> dt.datetime | None:
        """When the first CA of the trust bundle expires (the mesh's own deadline)."""
        return None if self.current is None else _bundle_ends(self.current.bundle)

    def seconds_until_trust_ends(self) -> float | None:
        ends = self.trust_ends()
        return None if ends is None else (ends - _utcnow()).total_seconds()


TRUST_ENDS_WARNING = dt.timedelta(days=30)


def _bundle_ends(bundle: TrustBundle) -> dt.datetime | None:
    """``bundle.expires_at()``, or None for a CA certificate the DER reader cannot parse
    (OpenSSL accepted the bundle; what this reader cannot parse it cannot date)."""
    try:
        return bundle.expires_at()
    except IdentityError:
        return None


def _warn_if_trust_ends_soon(bundle: TrustBundle) -> None:
    """A CA expires once a year by default (``trustmesh ca init --ttl``); say so from a month
    ahead, with every SVID a sidecar installs, while there is time to act."""
    ends = _bundle_ends(bundle)
    if ends is None:
        return
    left = ends - _utcnow()
    if left <= dt.timedelta(0):  # not "soon": peers chained only to it are refused already
        log.warning(
            "a CA of the trust bundle has expired: no peer chained only to it is trusted",
            not_after=ends.isoformat(),
            days_left=0,
        )
    elif left < TRUST_ENDS_WARNING:
        log.warning(
            "a CA of the trust bundle expires soon: then no peer chained to it is trusted",
            not_after=ends.isoformat(),
            days_left=left.days,
        )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _files_signature(directory: Path) -> tuple:
    """The stat of each SVID file. Never raises: it runs on the event loop, and a file that
    cannot be stat-ed (a symlink loop, a directory this user may not search) is an entry of
    its own, for the load to refuse by name."""
    signature: list[tuple] = []
    try:
        paths = svid_dir_layout(directory)
    except OSError as exc:  # ``Path.exists`` raises on EACCES
        return ((str(directory), "unreadable", exc.errno),)
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            signature.append((str(path), None))
        except OSError as exc:
            signature.append((str(path), "unreadable", exc.errno))
        else:
            signature.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(signature)


def _load_svid_dir(directory: Path) -> tuple[X509Svid, TrustBundle]:
    """``load_svid_dir`` with every file error said as an :class:`IdentityError`'s would be."""
    try:
        return load_svid_dir(directory)
    except OSError as exc:
        raise IdentityUnavailable(
            f"cannot read {exc.filename or directory}: {exc.strerror}"
        ) from exc


async def watch_svid_dir(
    holder: IdentityHolder,
    directory: Path,
    *,
    poll_interval: float = 1.0,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Load the SVID directory now (failing if it is unusable), then reload on change.

    After the start nothing here ends the sidecar: a reload that fails (a broken or foreign
    file, a directory that cannot be read) keeps the current SVID, says why (``svid_error`` on
    ``/v1/status``, a log line), and the next change of the files is tried again."""
    signature = _files_signature(directory)
    try:
        holder.install(*_load_svid_dir(directory))
    except (IdentityError, IdentityUnavailable) as exc:
        raise IdentityUnavailable(f"cannot use SVID directory {directory}: {exc}") from exc
    task_status.started()
    while True:
        await sleep_to_next_tick(poll_interval)
        current = _files_signature(directory)
        if current == signature:
            continue
        signature = current
        try:
            holder.install(*_load_svid_dir(directory))
        except (IdentityError, IdentityUnavailable) as exc:
            holder.last_error = str(exc)
            log.error("svid reload refused; keeping the current one", error=str(exc))


async def run_ca_identity(
    holder: IdentityHolder,
    ca_url: str,
    token: str,
    ca_bundle: TrustBundle | Callable[[], TrustBundle],
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Obtain the first SVID with the join token, then renew at half-life forever.

    ``ca_bundle`` may be a loader (the bundle file): it is read again at each attempt, so a
    sidecar still retrying when the CA is rotated (``ca rotate activate``: the CA's own
    certificate then chains to the new root) verifies it with the bundle the rotation wrote."""
    from .ca_worker import request_svid  # a child process: keeps cryptography out of ours

    load = ca_bundle if callable(ca_bundle) else lambda: ca_bundle
    trusted = load()
    backoff = 0.5
    while True:
        try:
            svid, bundle = await request_svid(ca_url, token, trusted)
            break
        except Exception as exc:
            if not _retryable(exc):
                raise IdentityUnavailable(
                    f"the CA at {ca_url} refused the join token: {exc}"
                ) from exc
            log.error("cannot reach the CA; retrying", ca_url=ca_url, error=str(exc), in_s=backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            try:
                trusted = load()
            except IdentityError as exc:  # mid-write, or broken: the last good one is kept
                log.error("cannot read the CA bundle; keeping the one read before", error=str(exc))
    holder.install(svid, bundle)
    task_status.started()
    await renew_forever(holder, ca_url)


async def renew_forever(holder: IdentityHolder, ca_url: str) -> None:
    from . import ca_worker

    while True:
        material = holder.material()
        renew_at = material.svid.renewal_time(holder.installed_at)
        delay = (renew_at - _utcnow()).total_seconds()
        await trio.sleep(max(delay, MIN_RENEWAL_DELAY))
        backoff = 1.0
        while True:
            material = holder.material()
            try:
                svid, bundle = await ca_worker.renew_svid(ca_url, material.svid, material.bundle)
                holder.install(svid, bundle)
                break
            except Exception as exc:
                holder.last_error = f"renewal failed: {exc}"
                left = holder.seconds_until_expiry() or 0
                log.error(
                    "svid renewal failed; serving with the current one",
                    ca_url=ca_url,
                    error=str(exc),
                    retry_in_s=backoff,
                    expires_in_s=round(left),
                )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


def _retryable(exc: BaseException) -> bool:
    """Transport trouble is worth retrying; a refusal from the CA is final."""
    status = getattr(exc, "http_status", None)
    return not (isinstance(status, int) and 400 <= status < 500)


# -- the mesh's identity map (AppIdentityBinding resources) -----------------------------------


def parse_binding_resource(document: Mapping[str, Any]) -> IdentityBinding:
    """``AppIdentityBinding`` as a store resource: the identity package's parser, with the
    error type every resource validator raises (so ``trustmesh apply`` names file and line)."""
    try:
        return parse_binding(document)
    except IdentityError as exc:
        raise ResourceInvalid(str(exc)) from exc


def identity_map_from_resources(resources: Mapping[tuple[str, str], Any]) -> IdentityMap:
    """The map from a snapshot's resources; a binding that did not read fails the whole map,
    since a missing binding would hand its App ID to the default ServiceAccount form."""
    bindings = []
    for (kind, name), document in sorted(resources.items()):
        if kind != BINDING_KIND:
            continue
        if isinstance(document, Exception):
            raise IdentityUnavailable(f"AppIdentityBinding {name!r}: {document}")
        try:
            bindings.append(parse_binding(document))
        except IdentityError as exc:
            raise IdentityUnavailable(f"AppIdentityBinding {name!r}: {exc}") from exc
    try:
        return IdentityMap(bindings)
    except IdentityError as exc:
        raise IdentityUnavailable(str(exc)) from exc


async def watch_identity_map(
    load: Callable[[], IdentityMap],
    signature: Callable[[], object],
    *,
    poll_interval: float = STORE_POLL_INTERVAL,
    on_change: Sequence[Callable[[], None]] = (),
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Install the mesh's identity map now (failing if it is broken: with no map yet, a guess
    could hand an App ID to the wrong workload), then swap in each new valid one, calling
    ``on_change`` after each swap (what was judged under the old map is judged again).

    ``load`` runs in a worker thread: it reads and parses every file of the store, and waits
    for the store's lock while a writer holds it (a ``trustmesh apply``, or one suspended with
    ^Z), none of which may stall the event loop that serves requests. Only the signature, a
    ``stat`` per file, is taken on the loop, once per tick.

    A store that does not load is tried again only once its signature changes (as the policy
    watcher does): reading every file on each tick would cost the whole store four times a
    second for as long as one file stays broken. Only "busy" (a writer mid-change) is tried
    again at the next tick."""
    from .state.store import StoreBusy

    async def load_off_the_loop() -> IdentityMap:
        return await trio.to_thread.run_sync(load, abandon_on_cancel=True)

    seen = signature()
    for attempt in range(50):
        try:
            install_identity_map(await load_off_the_loop())
            break
        except StoreBusy:
            if attempt == 49:
                raise IdentityUnavailable("the identity map stayed busy; try again") from None
            await trio.sleep(0.02)  # a writer (or kubelet) is mid-change: read the next set
        except (SidecarError, IdentityError, OSError) as exc:
            raise IdentityUnavailable(f"cannot load the identity map: {exc}") from exc
    task_status.started()
    while True:
        await sleep_to_next_tick(poll_interval)
        current = signature()
        if current == seen:
            continue
        try:
            new_map = await load_off_the_loop()
        except StoreBusy:
            continue  # ``seen`` stays: the next tick reads the writer's finished change
        except (SidecarError, IdentityError, OSError) as exc:
            new_map = None
            log.error("identity map refused; keeping the current one", error=str(exc))
        seen = current  # a refused store is not read again until it changes
        if new_map is not None and new_map != current_identity_map():
            install_identity_map(new_map)
            log.info("identity map applied", bindings=len(new_map.bindings))
            for changed in on_change:
                changed()
