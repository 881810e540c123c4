"""Just enough of Prometheus's text exposition format for the sidecar's own metrics.

A client library would bring a global registry and threads we do not need; the sidecar has a
handful of counters and one histogram, all updated from one trio thread, so plain dicts do.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


@dataclass
class Counter:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labelnames, labels)} {value:g}")
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.buckets) + 1)
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                bucket_labels = _labels(self.labelnames, labels, 'le="' + le + '"')
                lines.append(f"{self.name}_bucket{bucket_labels} {running}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, labels)} {self.sums[labels]:g}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, labels)} {running}")
        return lines


@dataclass
class Gauge:
    name: str
    help: str
    read: Callable[[], float | None]

    def render(self) -> list[str]:
        value = self.read()
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        if value is not None:
            lines.append(f"{self.name} {value:g}")
        return lines


class SidecarMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "trustmesh_requests_total",
            "Requests handled, by direction, caller, target, decision and status.",
            ("direction", "caller", "target", "decision", "status"),
        )
        self.latency = Histogram(
            "trustmesh_request_duration_seconds",
            "Time from request head to the end of the response, as seen by this sidecar.",
            ("direction",),
        )
        self.handshakes = Counter(
            "trustmesh_tls_handshakes_total",
            "Outbound mTLS handshakes, by result.",
            ("result",),
        )
        self.gauges: list[Gauge] = []

    def observe_request(
        self,
        direction: str,
        *,
        caller: str,
        callee: str,
        decision: str,
        layer: str,
        reason: str,
        mcp_method: str | None,
        tool: str | None,
        status: int | None,
        seconds: float,
    ) -> None:
        """Count one request the sidecar decided (the one call both proxies make per request).

        Takes every label an operator filters by, so the proxies never know which of them a
        given metrics back end keeps."""
        del layer, reason, mcp_method, tool  # not yet labels of these plain counters
        self.requests.inc(direction, caller, callee, decision, str(status or 0))
        self.latency.observe(seconds, direction)

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float | None]) -> None:
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in (self.requests, self.latency, self.handshakes, *self.gauges):
            lines += metric.render()
        return ("\n".join(lines) + "\n").encode()
