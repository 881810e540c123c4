"""The JWKS cache as a sans-I/O state machine: time and bytes in, "fetch now?" out.

Theory of operation. The trio fetcher (written later) is a loop around this object::

    while True:
        if cache.needs_fetch(now()):
            url = cache.begin_fetch(now())
            try:    body, max_age = await GET(url)
            except  e: cache.on_fetch_failed(str(e), now())
            else:   cache.on_fetched(body, now(), cache_control_max_age=max_age)
        await sleep_until(min(cache.next_fetch_at, <woken by on_unknown_kid>))

and the inbound pipeline reads ``cache.keys()`` per request. Nothing here reads a clock, so tests
drive it by passing ``now``.

Rules, each from a failure seen elsewhere:

* Refresh every ``refresh_interval`` (Dapr: 10 min), or later if the issuer's ``Cache-Control:
  max-age`` says so (jwx/httprc: ``max(max-age, interval)``), capped at a day.
* **Key rotation**: a token whose ``kid`` is not in the set may be signed by a key published
  since the last fetch, so ``on_unknown_kid`` asks for a refresh — but at most one per
  ``min_refresh_on_miss`` seconds (the component's ``unknownKidRefreshInterval``, 10 s by
  default) since the last fetch attempt, and never while one is in flight.
  A flood of random kids therefore costs the issuer one GET per interval, not one per request.
  (Dapr does not refetch on a miss at all; rotation then waits up to 10 minutes.)
* **Issuer down**: a failed fetch, or a fetched set with no usable key, never replaces a working
  snapshot; validation continues with the cached keys (as Dapr does), and retries back off from
  5 s to a minute. With nothing cached, ``keys()`` says so and the decision answers 503 naming
  the JWKS URL.
* Moves are a table: a result without a fetch in flight, or a second concurrent fetch, raises
  ``JwksCacheMisuse`` instead of drifting.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .config import (
    DEFAULT_JWKS_REFRESH_INTERVAL,
    DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL,
    MAX_JWKS_REFRESH_INTERVAL,
)
from .errors import JwksCacheMisuse, JwksInvalid
from .jwks import JwksSnapshot, parse_jwks

DEFAULT_MIN_REFRESH_ON_MISS = DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL
RETRY_FIRST = 5.0
RETRY_MAX = 60.0


class FetchState(enum.Enum):
    IDLE = "idle"
    FETCHING = "fetching"


_MOVES = {
    (FetchState.IDLE, "begin_fetch"): FetchState.FETCHING,
    (FetchState.FETCHING, "on_fetched"): FetchState.IDLE,
    (FetchState.FETCHING, "on_fetch_failed"): FetchState.IDLE,
}


@dataclass(frozen=True, slots=True)
class KeysUnavailable:
    """No key has ever been fetched: requests with a token get 503 naming ``jwks_url``."""

    jwks_url: str
    error: str | None = None  # the last fetch error, for the log and the 503 message


class JwksCache:
    def __init__(
        self,
        jwks_url: str,
        *,
        refresh_interval: float = DEFAULT_JWKS_REFRESH_INTERVAL,
        min_refresh_on_miss: float = DEFAULT_MIN_REFRESH_ON_MISS,
    ) -> None:
        if not refresh_interval > 0 or not min_refresh_on_miss > 0:
            raise ValueError("refresh intervals must be positive")
        self.jwks_url = jwks_url
        self.refresh_interval = float(refresh_interval)
        self.min_refresh_on_miss = float(min_refresh_on_miss)
        self.state = FetchState.IDLE
        self.next_fetch_at = -math.inf  # fetch at once
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._snapshot: JwksSnapshot | None = None
        self._last_attempt_at = -math.inf
        self._last_miss_refresh_at = -math.inf

    # -- moves ---------------------------------------------------------------------------------

    def _move(self, event: str) -> None:
        try:
            self.state = _MOVES[(self.state, event)]
        except KeyError:
            raise JwksCacheMisuse(f"{event} is not allowed while {self.state.value}") from None

    def needs_fetch(self, now: float) -> bool:
        return self.state is FetchState.IDLE and now >= self.next_fetch_at

    def begin_fetch(self, now: float) -> str:
        """Record that a GET starts now; returns the URL to fetch."""
        self._move("begin_fetch")
        self._last_attempt_at = now
        return self.jwks_url

    def on_fetched(
        self, body: bytes, now: float, cache_control_max_age: float | None = None
    ) -> bool:
        """Apply a fetched body. Returns False (and keeps the old keys) if the set is unusable."""
        self._move("on_fetched")
        try:
            snapshot = parse_jwks(body, source_url=self.jwks_url, fetched_at=now)
        except JwksInvalid as exc:
            self._failed(str(exc), now)
            return False
        self._snapshot = snapshot
        self.last_error = None
        self.consecutive_failures = 0
        self.next_fetch_at = now + self._interval(cache_control_max_age)
        return True

    def on_fetch_failed(self, error: str, now: float) -> None:
        """The GET failed (connection, timeout, non-200): keep the keys, retry with back-off."""
        self._move("on_fetch_failed")
        self._failed(error, now)

    def on_unknown_kid(self, kid: str, now: float) -> bool:
        """A token named a kid we do not have. Returns True if a refresh was scheduled for now."""
        if self._snapshot is not None and kid in self._snapshot.keys:
            return False
        if self.state is FetchState.FETCHING:
            return False  # the fetch in flight is the refresh
        since = now - max(self._last_attempt_at, self._last_miss_refresh_at)
        if since < self.min_refresh_on_miss:
            return False
        self._last_miss_refresh_at = now
        self.next_fetch_at = min(self.next_fetch_at, now)
        return True

    # -- reads ---------------------------------------------------------------------------------

    def snapshot(self) -> JwksSnapshot | None:
        return self._snapshot

    def keys(self) -> JwksSnapshot | KeysUnavailable:
        """What ``check_bearer`` takes: the current keys, or why there are none."""
        if self._snapshot is not None:
            return self._snapshot
        return KeysUnavailable(self.jwks_url, self.last_error)

    # -- helpers -------------------------------------------------------------------------------

    def _failed(self, error: str, now: float) -> None:
        self.last_error = error
        self.consecutive_failures += 1
        backoff = RETRY_FIRST * 2 ** min(self.consecutive_failures - 1, 16)
        self.next_fetch_at = now + min(backoff, RETRY_MAX, self.refresh_interval)

    def _interval(self, max_age: float | None) -> float:
        if max_age is None or not math.isfinite(max_age) or max_age <= 0:
            return self.refresh_interval
        return max(self.refresh_interval, min(max_age, MAX_JWKS_REFRESH_INTERVAL))
