"""The trio half of the bearer layer: find the issuer's JWKS, keep ``JwksCache`` fed, never block.

Theory of operation. ``JwksSource.run`` is one background task per bearer component::

    discovery (only when the component names no jwksURL), retried with back-off until it works
    loop:  if cache.needs_fetch(now): GET jwks_uri → cache.on_fetched / cache.on_fetch_failed
           else: sleep until cache.next_fetch_at, or until request_refresh wakes us

The request path only ever calls ``keys()`` (a dictionary read) and, when a decision says
``refresh_may_help``, ``request_refresh(kid)`` (rate-limited by the cache, then an
``Event.set()``): neither awaits, so a slow or dead issuer never holds a request.

``run`` reports ``started`` after the *first attempt*, whatever its outcome: a sidecar whose issuer
is down must come up and answer 503 naming the JWKS URL (fail closed), not hang at start-up the
way Dapr's component load does. Every GET is bounded by a timeout and a body size limit.

**Two clocks.** The cache is scheduled on ``trio.current_time()`` (monotonic, and the clock that
``autojump_clock`` drives): ``needs_fetch``, ``begin_fetch``, ``on_fetched``, ``on_unknown_kid``
all get that ``now``, so ``JwksSnapshot.fetched_at`` is trio time too. Token claims (``exp``,
``nbf``, ``iat``) are wall-clock seconds: the caller passes ``time.time()`` as ``check_bearer``'s
``now``. The two are never mixed; this module never reads the wall clock.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import structlog
import trio

from ..errors import SidecarError
from ..http.connection import ConnectionLost, HttpConnection
from .cache import RETRY_FIRST, RETRY_MAX, JwksCache, KeysUnavailable
from .config import BearerConfig
from .discovery import discovery_url, parse_discovery_document
from .errors import DiscoveryInvalid
from .jwks import JwksSnapshot

log = structlog.get_logger("trustmesh.bearer")

DEFAULT_FETCH_TIMEOUT = 10.0  # seconds for connect + TLS + request + whole response
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 16 * 1024
USER_AGENT = "trustmesh-jwks/1"


class FetchError(SidecarError):
    """A GET of issuer metadata or keys failed: transport, timeout, status, or size."""

    code = "ERR_BEARER_FETCH"
    http_status = 503


@dataclass(frozen=True, slots=True)
class FetchResult:
    body: bytes
    max_age: float | None = None  # Cache-Control max-age, seconds, if the issuer sent one


Fetch = Callable[[str], Awaitable[FetchResult]]  # GET url → 200 body, or raise FetchError


class JwksSource:
    """The keys of one bearer component, kept fresh in the background by ``run``."""

    def __init__(
        self,
        config: BearerConfig,
        *,
        fetch: Fetch | None = None,
        timeout: float = DEFAULT_FETCH_TIMEOUT,
        min_refresh_on_miss: float | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        # None: the component's unknownKidRefreshInterval (tests may pass their own)
        if min_refresh_on_miss is None:
            min_refresh_on_miss = config.unknown_kid_refresh_interval
        self.min_refresh_on_miss = min_refresh_on_miss
        self._fetch: Fetch = fetch if fetch is not None else HttpsGetter(timeout=timeout)
        self._cache: JwksCache | None = None
        self._discovery_error: str | None = None
        self._discovery_failures = 0
        self._discovery_retry_at = -math.inf
        self._wake = trio.Event()
        if config.jwks_url is not None:
            self._cache = self._new_cache(config.jwks_url)

    # -- what the request path calls (never awaits) ----------------------------------------------

    @property
    def jwks_url(self) -> str | None:
        """The JWKS URL, configured or discovered; None while discovery has not succeeded."""
        return self._cache.jwks_url if self._cache is not None else None

    def keys(self) -> JwksSnapshot | KeysUnavailable:
        """The current keys for ``check_bearer``, or why there are none (→ 503)."""
        if self._cache is None:
            return KeysUnavailable(discovery_url(self.config.issuer), self._discovery_error)
        return self._cache.keys()

    def request_refresh(self, kid: str) -> bool:
        """A token named an unknown ``kid``; refetch soon if the cache allows. Call inside trio.

        Returns True if a refresh was scheduled. At most one per ``min_refresh_on_miss``
        seconds (trio clock) since the last fetch attempt, so a flood of made-up kids costs the
        issuer one GET.
        """
        if self._cache is None:
            return False  # discovery is still retrying on its own schedule
        if not self._cache.on_unknown_kid(kid, trio.current_time()):
            return False
        self._wake.set()
        return True

    # -- the background task ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while self._cache is None:
            self._cache = await self._discover()
            if self._cache is None:
                if not started:
                    task_status.started()
                    started = True
                await self._sleep_until(self._discovery_retry_at)
        while True:
            self._wake = trio.Event()  # fresh before checking, so no wake-up is lost
            now = trio.current_time()
            if self._cache.needs_fetch(now):
                await self._fetch_jwks(self._cache)
                if not started:
                    task_status.started()
                    started = True
                continue
            await self._sleep_until(self._cache.next_fetch_at)

    async def _sleep_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._wake.wait()

    async def _discover(self) -> JwksCache | None:
        url = discovery_url(self.config.issuer)
        try:
            result = await self._get(url)
            jwks_uri = parse_discovery_document(
                result.body,
                self.config.issuer,
                allow_foreign_host=self.config.allow_foreign_jwks_host,
            )
        except (FetchError, DiscoveryInvalid) as exc:
            self._discovery_failures += 1
            retry_in = min(RETRY_FIRST * 2 ** min(self._discovery_failures - 1, 16), RETRY_MAX)
            self._discovery_retry_at = trio.current_time() + retry_in
            self._discovery_error = str(exc)
            log.error(
                "oidc discovery failed",
                component=self.config.name,
                url=url,
                error=str(exc),
                retry_in=retry_in,
            )
            return None
        self._discovery_error = None
        self._discovery_failures = 0
        log.info("oidc discovery", component=self.config.name, url=url, jwks_uri=jwks_uri)
        return self._new_cache(jwks_uri)

    async def _fetch_jwks(self, cache: JwksCache) -> None:
        url = cache.begin_fetch(trio.current_time())
        try:
            result = await self._get(url)
        except FetchError as exc:
            cache.on_fetch_failed(str(exc), trio.current_time())
            self._log_failure(cache, url, str(exc))
            return
        if cache.on_fetched(result.body, trio.current_time(), cache_control_max_age=result.max_age):
            snapshot = cache.snapshot()
            log.info(
                "jwks fetched",
                component=self.config.name,
                url=url,
                kids=sorted(snapshot.usable_kids) if snapshot else [],
                skipped=list(snapshot.skipped) if snapshot else [],
                next_in=round(cache.next_fetch_at - trio.current_time(), 3),
            )
        else:
            self._log_failure(cache, url, cache.last_error or "unusable key set")

    def _log_failure(self, cache: JwksCache, url: str, error: str) -> None:
        log.error(
            "jwks fetch failed",
            component=self.config.name,
            url=url,
            error=error,
            keys_kept=cache.snapshot() is not None,
            retry_in=round(cache.next_fetch_at - trio.current_time(), 3),
        )

    async def _get(self, url: str) -> FetchResult:
        # Bounds an injected fetch too: a hung issuer must not keep `run` from starting.
        with trio.move_on_after(self.timeout):
            return await self._fetch(url)
        raise FetchError(f"GET {url} timed out after {self.timeout:g} s")

    def _new_cache(self, jwks_url: str) -> JwksCache:
        return JwksCache(
            jwks_url,
            refresh_interval=self.config.jwks_refresh_interval,
            min_refresh_on_miss=self.min_refresh_on_miss,
        )


# -- the HTTP client ------------------------------------------------------------------------------


class HttpsGetter:
    """``GET url`` over h11: https with the system CAs and hostname checks, or loopback http.

    Only a 200 is accepted; the body is capped at ``max_bytes``; the whole exchange at
    ``timeout``. One connection per GET (``Connection: close``): refreshes are minutes apart.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_FETCH_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()

    async def __call__(self, url: str) -> FetchResult:
        try:
            with trio.fail_after(self.timeout):
                return await self._get(url)
        except trio.TooSlowError:
            raise FetchError(f"GET {url} timed out after {self.timeout:g} s") from None
        except (ConnectionLost, OSError, trio.BrokenResourceError, UnicodeError) as exc:
            raise FetchError(f"GET {url} failed: {exc}") from exc

    async def _get(self, url: str) -> FetchResult:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http") or not parts.hostname:
            raise FetchError(f"GET {url}: not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
        if scheme == "https":
            stream = trio.SSLStream(
                stream, self.ssl_context, server_hostname=parts.hostname, https_compatible=True
            )
        conn = HttpConnection(stream, h11.CLIENT, max_head_bytes=MAX_HEAD_BYTES)
        try:
            if isinstance(stream, trio.SSLStream):
                await _handshake(stream, url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = [
                ("Host", parts.netloc),
                ("Accept", "application/json"),
                ("User-Agent", USER_AGENT),
                ("Connection", "close"),
            ]
            await conn.send(h11.Request(method="GET", target=target, headers=headers))
            await conn.send(h11.EndOfMessage())
            return await self._read_response(conn, url)
        finally:
            await conn.aclose()

    async def _read_response(self, conn: HttpConnection, url: str) -> FetchResult:
        response = await conn.next_event()
        while isinstance(response, h11.InformationalResponse):
            response = await conn.next_event()
        if not isinstance(response, h11.Response):
            raise FetchError(f"GET {url}: no response")
        if response.status_code != 200:
            raise FetchError(f"GET {url}: HTTP {response.status_code}, expected 200")
        length = _header(response.headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise FetchError(f"GET {url}: body of {int(length)} bytes exceeds {self.max_bytes}")
        body = bytearray()
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_bytes:
                    raise FetchError(f"GET {url}: body exceeds {self.max_bytes} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise FetchError(f"GET {url}: connection closed before the body ended")
        return FetchResult(bytes(body), cache_control_max_age(response.headers))


async def _handshake(stream: trio.SSLStream, url: str) -> None:
    """Handshake up front, so a certificate failure is reported as itself, not as a broken pipe."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise FetchError(f"GET {url}: TLS handshake failed: {cause}") from exc


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in headers if key == name]
    return ", ".join(values) if values else None


# RFC 9111 §5.2: Cache-Control = #cache-directive; max-age = delta-seconds (1*DIGIT). A quoted
# value is not allowed by the grammar but is common enough to accept.
_MAX_AGE = re.compile(r'max-age\s*=\s*"?(\d+)"?', re.IGNORECASE)


def cache_control_max_age(headers: list[tuple[bytes, bytes]]) -> float | None:
    """``max-age`` from the response's Cache-Control header(s), or None (no-store/no-cache too)."""
    value = _header(headers, b"cache-control")
    if value is None:
        return None
    directives = [d.strip() for d in value.split(",")]
    if any(d.lower() in ("no-store", "no-cache") for d in directives):
        return None
    for directive in directives:
        match = _MAX_AGE.fullmatch(directive)
        if match:
            seconds = float(match.group(1))
            return seconds if math.isfinite(seconds) else None
    return None
