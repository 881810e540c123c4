"""``python -m bench``: one invocation, three paths, two concurrencies, one report.

Order of work: install nginx and wrk if missing; start the app, the nginx pair and the two
sidecars; check one request through each path; read every proxy's idle RSS; then, for
concurrency 1 and 32 and for each path in turn, a warm-up and a measured wrk run with the
proxies' CPU time read from /proc around it; then peak RSS; then fresh-handshake timing
against the server sidecar's mTLS port and against nginx B. Every process started is stopped
in a ``finally`` (SIGTERM, then SIGKILL), Ctrl+C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from . import report
from .audit_cost import audit_cost
from .deps import ensure_programs, version_of
from .handshake import time_handshakes
from .load import REQUEST_BODY, run_wrk, write_script
from .procs import BenchError, Processes, children_cpu_seconds, machine_busy_seconds
from .profile import profile_sidecars, py_spy
from .topology import APP_RESPONSE, Route, Topology, start_topology

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CONCURRENCIES = (1, 32)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s runs: a smoke test")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run (default 2)")
    parser.add_argument("--handshakes", type=int, help="fresh handshakes per target (300)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the comparison, profile both sidecars with py-spy under load",
    )
    parser.add_argument(
        "--profile-path",
        choices=("trustmesh", "mcp"),
        default="trustmesh",
        help="with --profile: the no-policy pair (default) or the trustmesh+mcp pair",
    )
    parser.add_argument(
        "--early-answer",
        action="store_true",
        help="the app answers before reading the request body (legal HTTP; see README)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.handshakes = args.handshakes or (50 if args.quick else 300)
    return args


def _check_path(route: Route) -> None:
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
        route.url,
        data=REQUEST_BODY.encode(),
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            body = reply.read().decode()
    except OSError as exc:
        raise BenchError(f"{route.name}: the check request failed: {exc}") from exc
    if json.loads(body) != json.loads(APP_RESPONSE):
        raise BenchError(f"{route.name}: unexpected answer {body[:200]!r}")


def _client_handshakes(topology: Topology) -> int | None:
    url = f"http://{topology.client_sidecar.ready['admin']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    match = re.search(r'^trustmesh_tls_handshakes_total\{result="ok"\} (\S+)$', text, re.M)
    return int(float(match[1])) if match else 0


def _measure(
    wrk: str, script: Path, topology: Topology, route: Route, conc: int, args
) -> report.Run:
    if args.warmup > 0:
        try:
            run_wrk(wrk, script, route.url, conc, args.warmup)
        except BenchError as exc:
            raise BenchError(f"{route.name} c={conc} warm-up: {exc}{_dead(route)}") from exc
    tls_before = _client_handshakes(topology) if route is topology.trustmesh else None
    before = {proxy.name: proxy.cpu_seconds() for proxy in route.proxies}
    ours_before = sum(before.values()) + topology.app.cpu_seconds() + children_cpu_seconds()
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    try:
        result = run_wrk(wrk, script, route.url, conc, args.duration)
    except BenchError as exc:
        raise BenchError(f"{route.name} c={conc}: {exc}{_dead(route)}") from exc
    busy, wall = machine_busy_seconds() - busy_before, time.monotonic() - wall_before
    after = {proxy.name: proxy.cpu_seconds() for proxy in route.proxies}
    ours = sum(after.values()) + topology.app.cpu_seconds() + children_cpu_seconds() - ours_before
    other_load = max(0.0, (busy - ours) / (wall * (os.cpu_count() or 1)))
    tls_after = _client_handshakes(topology) if tls_before is not None else None
    requests = max(result.requests, 1)
    cpu = {name: (after[name] - before[name]) / requests * 1e6 for name in before}
    new_tls = tls_after - tls_before if (tls_before is not None and tls_after is not None) else None
    run = report.Run(route.name, conc, result, cpu, new_tls, other_load)
    print(
        f"  {route.name:<10} c={conc:<2} {result.rps:>9,.0f} req/s  p50 {result.p50_us:>6,} µs"
        f"  p99 {result.p99_us:>7,} µs  proxy CPU {report._fmt_us(run.cpu_us):>5} µs/req"
        + (f"  errors {result.errors}" if result.errors else "")
        + (f"  (other load {other_load:.0%})" if other_load >= report.NOISY_LOAD else ""),
        flush=True,
    )
    return run


def _dead(route: Route) -> str:
    dead = [proxy for proxy in route.proxies if proxy.popen.poll() is not None]
    return "".join(
        f"\n{proxy.name} exited with {proxy.popen.returncode}:\n{proxy.log_tail()}"
        for proxy in dead
    )


def _rss(topology: Topology, peak: bool) -> dict[str, dict[str, int]]:
    return {
        route.name: {
            proxy.name: (proxy.peak_rss_kb() if peak else proxy.rss_kb()) for proxy in route.proxies
        }
        for route in topology.paths
        if route.proxies
    }


def _meta(args, programs: dict[str, str]) -> dict:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version_of([programs["nginx"], "-v"]),
        "wrk": version_of([programs["wrk"], "-v"]),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "request_bytes": len(REQUEST_BODY),
        "response_bytes": len(APP_RESPONSE),
        "app_reads_body": not args.early_answer,
    }


def _compare(procs: Processes, topology: Topology, programs: dict[str, str], args) -> None:
    wrk = programs["wrk"]
    script = write_script(procs.workdir)
    results = report.Results(meta=_meta(args, programs))
    time.sleep(1.0)  # let start-up settle before reading idle memory
    results.idle_rss_kb = _rss(topology, peak=False)
    for conc in CONCURRENCIES:
        for route in topology.paths:
            results.runs.append(_measure(wrk, script, topology, route, conc, args))
    results.peak_rss_kb = _rss(topology, peak=True)
    context = topology.pki.client_context()
    server = topology.server_sidecar
    results.handshakes.append(
        time_handshakes(
            "trustmesh server sidecar (inbound)",
            server.address("inbound"),
            context,
            server,
            args.handshakes,
        )
    )
    nginx_b = topology.nginx.proxies[1]
    results.handshakes.append(
        time_handshakes(
            "nginx B", ("127.0.0.1", topology.nginx_b_port), context, nginx_b, args.handshakes
        )
    )
    results.audit_us = audit_cost(procs.workdir)
    print()
    print(report.render(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.as_json(results), indent=2) + "\n")
    print(f"\nwritten: {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


def _profile(procs: Processes, topology: Topology, programs: dict[str, str], args) -> None:
    py_spy()  # fail early with the install hint
    script = write_script(procs.workdir)
    route = topology.trustmesh_mcp if args.profile_path == "mcp" else topology.trustmesh
    prefix = "mcp-" if args.profile_path == "mcp" else ""
    sidecars = list(route.proxies)
    outdir = args.out.parent / "profile"
    summaries = []
    for conc in CONCURRENCIES:
        run_wrk(programs["wrk"], script, route.url, conc, max(args.warmup, 1))

        def load(seconds: float, conc: int = conc) -> None:
            result = run_wrk(programs["wrk"], script, route.url, conc, seconds)
            print(f"  profiled load c={conc}: {result.rps:,.0f} req/s, p50 {result.p50_us} µs")

        summaries += profile_sidecars(sidecars, load, args.duration, outdir, f"{prefix}c{conc}")
    text = "\n\n".join(s.render() for s in summaries)
    print()
    print(text)
    (outdir / "summary.txt").write_text(text + "\n")
    (outdir / "summary.json").write_text(
        json.dumps([s.as_dict() for s in summaries], indent=2) + "\n"
    )
    print(f"\nraw stacks and summary: {outdir}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    workdir = Path(tempfile.mkdtemp(prefix="trustmesh-bench-"))
    procs = Processes(workdir, REPO)
    started = time.monotonic()
    try:
        programs = ensure_programs()
        print(f"starting app, nginx pair and sidecars in {workdir}", flush=True)
        topology = start_topology(procs, programs["nginx"], not args.early_answer)
        for route in topology.paths:
            _check_path(route)
        if args.profile:
            _profile(procs, topology, programs, args)
        else:
            _compare(procs, topology, programs, args)
        return 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        killed = procs.stop_all()
        if killed:
            print(f"bench: had to SIGKILL {', '.join(killed)}", file=sys.stderr)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
