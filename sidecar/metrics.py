"""The sidecar's Prometheus metrics: plain counters on the hot path, prometheus_client to expose.

``observe_request`` runs once per request, so it only bumps a dict entry and a histogram bucket
(no locks, no label objects: everything runs on the trio thread). ``render`` hands the counts to
``prometheus_client`` through a collector in the sidecar's own ``CollectorRegistry`` — no global
registry, no background threads — so the exposition format is the library's, not ours.

Label values an operator filters by: direction, caller, callee, decision, layer, reason, MCP
method and tool. The tool label is bounded: a name no grant of the current policy names is
counted as ``other``, so a caller cannot grow the series by inventing tool names; MCP methods
outside the protocol's method table are ``other`` too.

``prometheus_client`` is imported at the first scrape, not at start: it brings ~12 MiB of
modules (its HTTP servers among them) that an idle sidecar does not need.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
OTHER = "other"
REQUEST_LABELS = (
    "direction",
    "caller",
    "callee",
    "decision",
    "layer",
    "reason",
    "mcp_method",
    "tool",
    "status",
)


def _known_methods() -> frozenset[str]:
    from .mcp.methods import METHODS

    return frozenset(METHODS)


class Counter:
    """A labelled counter kept as a dict: ``inc`` is one dict update."""

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class Histogram:
    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.help, self.labelnames = name, help_text, labelnames
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[labels] = 0.0
        counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sums[labels] += value

    def family(self) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, counts in self.counts.items():
            running, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


class _Collector:
    """Bridges the plain counters to ``prometheus_client`` at scrape time."""

    def __init__(self, metrics: SidecarMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        yield m.requests.family()
        yield m.latency.family()
        yield m.handshakes.family()
        for name, help_text, read in m.gauges:
            value = read()
            family = GaugeMetricFamily(name, help_text)
            if value is not None:
                family.add_metric([], value)
            yield family
        for name, help_text, read in m.counters:
            yield CounterMetricFamily(name, help_text, value=read())


class SidecarMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "trustmesh_requests",
            "Requests decided, by direction, caller, callee, decision, deciding layer and reason, "
            "MCP method, tool and status.",
            REQUEST_LABELS,
        )
        self.latency = Histogram(
            "trustmesh_request_duration_seconds",
            "Time from request head to the end of the response, as seen by this sidecar.",
            ("direction", "decision"),
        )
        self.handshakes = Counter(
            "trustmesh_tls_handshakes", "Outbound mTLS handshakes, by result.", ("result",)
        )
        self.gauges: list[tuple[str, str, Callable[[], float | None]]] = []
        self.counters: list[tuple[str, str, Callable[[], float]]] = []
        self.granted_tools: frozenset[str] = frozenset()
        self._methods = _known_methods()
        self.registry: Any = None  # this sidecar's own CollectorRegistry, made at first scrape

    def set_granted_tools(self, names: Iterable[str]) -> None:
        """The tool names some grant names (wildcards excluded): the tool label's values."""
        self.granted_tools = frozenset(names)

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
        """Count one request the sidecar decided (the one call both proxies make per request)."""
        if mcp_method is not None and mcp_method not in self._methods:
            mcp_method = OTHER
        if tool is not None and tool not in self.granted_tools:
            tool = OTHER
        key = (
            direction,
            caller,
            callee,
            decision,
            layer,
            reason,
            mcp_method or "",
            tool or "",
            str(status or 0),
        )
        self.requests.values[key] = self.requests.values.get(key, 0.0) + 1.0
        self.latency.observe(seconds, direction, decision)

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float | None]) -> None:
        self.gauges.append((name, help_text, read))

    def add_counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.counters.append((name, help_text, read))

    def watch_audit(self, audit) -> None:
        """The audit log's health: what an alert on a full buffer or a failing disk reads."""
        self.add_counter(
            "trustmesh_audit_records", "Decision records appended.", lambda: audit.records
        )
        self.add_counter(
            "trustmesh_audit_dropped",
            "Records dropped because the audit buffer was full.",
            lambda: audit.dropped,
        )
        self.add_counter(
            "trustmesh_audit_write_errors",
            "Failed writes of the audit log.",
            lambda: audit.write_errors,
        )
        self.add_gauge(
            "trustmesh_audit_buffered", "Records waiting to be written.", lambda: audit.buffered
        )
        self.add_gauge(
            "trustmesh_audit_healthy",
            "1 when the audit log is keeping up, 0 when its buffer is full or writes fail.",
            lambda: 1.0 if audit.healthy else 0.0,
        )
        self.add_gauge(
            "trustmesh_audit_head_seq",
            "Sequence number of the last record written.",
            lambda: audit.written_seq,
        )

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.registry is None:
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(_Collector(self))
        return generate_latest(self.registry)


def granted_tool_names(policy: Any) -> set[str]:
    """Every tool name an MCP policy's grants name (``*`` excluded: it names no tool)."""
    return {
        name
        for rule in getattr(policy, "rules", ())
        for grant in rule.grants
        if grant.capability == "tools"
        for name in grant.names
        if name != "*"
    }
