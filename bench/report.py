"""Turning measurements into the printed tables, the target verdicts and ``latest.json``.

Ratios are taken at the same concurrency. "Added" latency is a path's p50 minus the direct
p50: the time the proxies themselves put on a request. CPU and RSS are the proxies' only (the
app and wrk are the same in every run), so they have no ratio to direct.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .handshake import HandshakeResult
from .load import WrkResult

MB = 1_000_000
MIB = 1024 * 1024

# The targets of issue #11 (2 cores, same run as direct and the nginx pair).
TARGET_CPU_US = 200.0  # both sidecars together per request at c=32, MCP policy on
TARGET_CPU_NO_POLICY_US = 150.0  # the same with no policy
TARGET_RPS_VS_NGINX = 0.15  # at concurrency 32
TARGET_ADDED_P50_VS_NGINX = 3.0  # at concurrency 1
TARGET_IDLE_RSS_MIB = 35.0  # each sidecar, idle
NOISY_LOAD = 0.10  # share of the machine busy with processes that are not the bench's


@dataclass
class Run:
    route: str
    connections: int
    wrk: WrkResult
    proxy_cpu_us: dict[str, float]  # per proxy process (tree), µs per completed request
    new_upstream_tls: int | None = None  # trustmesh only: client-sidecar handshakes in the run
    other_load: float = 0.0  # share of all CPUs used by processes other than the bench's

    @property
    def cpu_us(self) -> float | None:
        return sum(self.proxy_cpu_us.values()) if self.proxy_cpu_us else None


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    idle_rss_kb: dict[str, dict[str, int]] = field(default_factory=dict)  # route → proxy → kB
    peak_rss_kb: dict[str, dict[str, int]] = field(default_factory=dict)
    handshakes: list[HandshakeResult] = field(default_factory=list)
    audit_us: dict[str, float] = field(default_factory=dict)  # where the log is → µs/record
    meta: dict = field(default_factory=dict)

    def run(self, route: str, connections: int) -> Run | None:
        for run in self.runs:
            if run.route == route and run.connections == connections:
                return run
        return None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _mb(kb: int) -> float:
    return kb * 1024 / MB


def _table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("─" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def ratios(results: Results, run: Run) -> dict[str, float | None]:
    direct = results.run("direct", run.connections)
    nginx = results.run("nginx pair", run.connections)
    out: dict[str, float | None] = {}
    d = direct.wrk if direct else None
    n = nginx.wrk if nginx else None
    added = run.wrk.p50_us - d.p50_us if d else None
    nginx_added = n.p50_us - d.p50_us if (n and d) else None
    out["rps_vs_direct"] = _ratio(run.wrk.rps, d.rps if d else None)
    out["rps_vs_nginx"] = _ratio(run.wrk.rps, n.rps if n else None)
    out["p50_vs_direct"] = _ratio(run.wrk.p50_us, d.p50_us if d else None)
    out["p50_vs_nginx"] = _ratio(run.wrk.p50_us, n.p50_us if n else None)
    out["p99_vs_direct"] = _ratio(run.wrk.p99_us, d.p99_us if d else None)
    out["p99_vs_nginx"] = _ratio(run.wrk.p99_us, n.p99_us if n else None)
    out["added_p50_us"] = added
    out["added_p50_vs_nginx"] = _ratio(added, nginx_added) if added is not None else None
    out["cpu_vs_nginx"] = _ratio(run.cpu_us, nginx.cpu_us if nginx else None)
    idle = sum(results.idle_rss_kb.get(run.route, {}).values())
    nginx_idle = sum(results.idle_rss_kb.get("nginx pair", {}).values())
    out["idle_rss_vs_nginx"] = _ratio(idle, nginx_idle) if idle else None
    return out


def results_table(results: Results) -> str:
    headers = ["path", "conc", "req/s", "p50 µs", "p99 µs", "errors"]
    headers += ["proxy CPU µs/req", "(per proxy)", "RSS MB idle", "RSS MB peak", "other load"]
    rows = []
    for run in results.runs:
        idle = results.idle_rss_kb.get(run.route, {})
        peak = results.peak_rss_kb.get(run.route, {})
        per_proxy = " + ".join(f"{v:,.0f}" for v in run.proxy_cpu_us.values())
        rows.append(
            [
                run.route,
                str(run.connections),
                f"{run.wrk.rps:,.0f}",
                f"{run.wrk.p50_us:,}",
                f"{run.wrk.p99_us:,}",
                str(run.wrk.errors),
                _fmt_us(run.cpu_us),
                per_proxy or "-",
                f"{_mb(sum(idle.values())):.1f}" if idle else "-",
                f"{_mb(sum(peak.values())):.1f}" if peak else "-",
                f"{run.other_load:.0%}",
            ]
        )
    return _table(headers, rows)


def ratio_table(results: Results) -> str:
    headers = ["path", "conc", "req/s ×direct", "req/s ×nginx", "p50 ×direct", "p50 ×nginx"]
    headers += ["p99 ×direct", "p99 ×nginx", "added p50 µs", "added p50 ×nginx"]
    headers += ["CPU ×nginx", "RSS ×nginx"]
    rows = []
    for run in results.runs:
        r = ratios(results, run)
        rows.append(
            [
                run.route,
                str(run.connections),
                _fmt_ratio(r["rps_vs_direct"]),
                _fmt_ratio(r["rps_vs_nginx"]),
                _fmt_ratio(r["p50_vs_direct"]),
                _fmt_ratio(r["p50_vs_nginx"]),
                _fmt_ratio(r["p99_vs_direct"]),
                _fmt_ratio(r["p99_vs_nginx"]),
                _fmt_us(r["added_p50_us"]),
                _fmt_ratio(r["added_p50_vs_nginx"]),
                _fmt_ratio(r["cpu_vs_nginx"]),
                _fmt_ratio(r["idle_rss_vs_nginx"]),
            ]
        )
    return _table(headers, rows)


def handshake_table(results: Results) -> str:
    headers = ["fresh mTLS handshake against", "n", "TLS", "wall µs/handshake"]
    headers += ["server CPU µs/handshake"]
    rows = [
        [
            h.target,
            str(h.handshakes),
            h.version,
            f"{h.wall_us:,.0f}",
            f"{h.server_cpu_us:,.0f}",
        ]
        for h in results.handshakes
    ]
    return _table(headers, rows)


@dataclass
class Verdict:
    target: str
    measured: str
    limit: str
    passed: bool | None  # None: not measured

    @property
    def word(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


def verdicts(results: Results) -> list[Verdict]:
    """The four #11 figures, for the MCP-policy pair (the target) and the no-policy pair."""
    out = []
    for route, limit in (("trustmesh+mcp", TARGET_CPU_US), ("trustmesh", TARGET_CPU_NO_POLICY_US)):
        run = results.run(route, 32)
        cpu = run.cpu_us if run else None
        out.append(
            Verdict(
                f"CPU per request, both sidecars, c=32 ({route})",
                f"{cpu:,.0f} µs" if cpu is not None else "-",
                f"≤ {limit:.0f} µs",
                None if cpu is None else cpu <= limit,
            )
        )
    ng32 = results.run("nginx pair", 32)
    for route in ("trustmesh+mcp", "trustmesh"):
        tm32 = results.run(route, 32)
        rps_ratio = _ratio(tm32.wrk.rps, ng32.wrk.rps) if (tm32 and ng32) else None
        out.append(
            Verdict(
                f"throughput at c=32 vs nginx pair ({route})",
                _fmt_ratio(rps_ratio),
                f"≥ {TARGET_RPS_VS_NGINX:.2f}×",
                None if rps_ratio is None else rps_ratio >= TARGET_RPS_VS_NGINX,
            )
        )
    for route in ("trustmesh+mcp", "trustmesh"):
        tm1 = results.run(route, 1)
        added = ratios(results, tm1)["added_p50_vs_nginx"] if tm1 else None
        out.append(
            Verdict(
                f"added p50 at c=1 vs nginx pair's ({route})",
                _fmt_ratio(added),
                f"≤ {TARGET_ADDED_P50_VS_NGINX:.2f}×",
                None if added is None else added <= TARGET_ADDED_P50_VS_NGINX,
            )
        )
    idle = {
        **results.idle_rss_kb.get("trustmesh", {}),
        **results.idle_rss_kb.get("trustmesh+mcp", {}),
    }
    worst = max((kb * 1024 / MIB for kb in idle.values()), default=None)
    out.append(
        Verdict(
            "idle RSS per sidecar (largest)",
            f"{worst:.1f} MiB" if worst is not None else "-",
            f"≤ {TARGET_IDLE_RSS_MIB:.0f} MiB",
            None if worst is None else worst <= TARGET_IDLE_RSS_MIB,
        )
    )
    return out


def verdict_table(results: Results) -> str:
    rows = [[v.target, v.measured, v.limit, v.word] for v in verdicts(results)]
    return _table(["target", "measured", "limit", "result"], rows)


def render(results: Results) -> str:
    meta = results.meta
    lines = [
        f"trustmesh bench — {meta.get('when', '')}  ({meta.get('cpus', '?')} CPUs, "
        f"{meta.get('duration_s', '?')} s per run after {meta.get('warmup_s', '?')} s warm-up)",
        f"request: POST tools/call, {meta.get('request_bytes', '?')} B body; response "
        f"{meta.get('response_bytes', '?')} B; wrk -t1 -c1 and -t2 -c32, kept-alive",
        "",
        results_table(results),
        "",
        ratio_table(results),
        "",
        handshake_table(results),
        "",
        verdict_table(results),
    ]
    if results.audit_us:
        lines += [
            "",
            "audit cost per request (what the inbound proxy does for one record: begin, its "
            "fields, the record with its flush, the metrics; CPU in-process): "
            + ", ".join(f"{where} {us:,.1f} µs" for where, us in results.audit_us.items()),
        ]
    tls = [
        f"{run.route} c={run.connections}: {run.new_upstream_tls}"
        for run in results.runs
        if run.new_upstream_tls is not None
    ]
    if tls:
        lines += ["", "new sidecar→sidecar mTLS connections during the run: " + ", ".join(tls)]
    noisy = [run for run in results.runs if run.other_load >= NOISY_LOAD]
    if noisy:
        worst = max(run.other_load for run in noisy)
        lines += [
            "",
            f"warning: other processes used up to {worst:.0%} of the machine during "
            f"{len(noisy)} of {len(results.runs)} runs; figures from those runs are noisy",
        ]
    return "\n".join(lines)


def as_json(results: Results) -> dict:
    return {
        "meta": results.meta,
        "runs": [
            {
                "route": run.route,
                "connections": run.connections,
                "wrk": run.wrk.as_dict(),
                "proxy_cpu_us_per_request": round(run.cpu_us, 1) if run.cpu_us else None,
                "proxy_cpu_us_per_request_by_process": {
                    k: round(v, 1) for k, v in run.proxy_cpu_us.items()
                },
                "new_upstream_tls": run.new_upstream_tls,
                "other_load": round(run.other_load, 3),
                "ratios": {
                    k: (round(v, 3) if v is not None else None)
                    for k, v in ratios(results, run).items()
                },
            }
            for run in results.runs
        ],
        "idle_rss_kb": results.idle_rss_kb,
        "peak_rss_kb": results.peak_rss_kb,
        "handshakes": [h.as_dict() for h in results.handshakes],
        "audit_us_per_record": results.audit_us,
        "targets": [
            {"target": v.target, "measured": v.measured, "limit": v.limit, "result": v.word}
            for v in verdicts(results)
        ],
    }
