"""One run: the CA, then per app a sidecar and the app, in one trio nursery; then stop in order.

Theory of operation.

* Before anything starts: every app's user is decided (:mod:`.users`; as root never the mesh's
  own) and checked to be able to run its command, fixed ports are checked free and App IDs not
  held by a live sidecar (:mod:`.preflight`). A refusal here starts nothing.
* Start-up is sequential and fail-fast: ``ca serve`` (awaited by its ``listening on`` line), then
  for each app its sidecar (awaited by its JSON ready line) and its command (awaited until its
  ``appPort`` accepts TCP, or answers its health path with 2xx). Any child that exits, or is not
  ready within the start-up timeout, stops everything; the run fails with one line naming the
  app, the reason and the child's last output lines.
* Running: an app and its sidecar are a *unit*. When either half exits on its own, the runner
  reports it, stops the other half, and keeps the other units running (as Dapr keeps the other
  apps). When no unit is left, the run ends (non-zero if any app failed). If the CA exits, the
  run stops: sidecars could not renew their certificates.
* Stopping (SIGINT, SIGTERM, SIGHUP, ``trustmesh stop -f``): apps first, then sidecars, then the
  CA, each group concurrently; SIGTERM, then SIGKILL after the grace period, or at once on a
  second signal. Children lead their own process groups, so a terminal's Ctrl+C reaches only the
  runner, which stops them in that order. If the runner dies without stopping them (even by
  SIGKILL), the guard process it started first stops them (:mod:`.guard`).
* Each sidecar and app get the app's tokens (:mod:`.tokens`) through their environments only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trio

from ..logsetup import FORMAT_ENV
from ..registry import Registry
from .errors import RunnerError, StartupFailed
from .output import (
    Console,
    LineSink,
    is_sidecar_ready_log,
    log_path,
    open_log_file,
    prefix_for,
    tail_text,
)
from .preflight import check_app_ids, check_ports
from .prepare import apply_run_file, ensure_ca, mint_join_token
from .runfile import AppSpec, RunFile
from .runstate import RunState, own_record, remove_state, state_path, this_runner, write_state
from .supervisor import (
    Child,
    group_alive,
    listening_line_hook,
    ready_line_hook,
    start_child,
    wait_first,
)
from .tokens import ApiTokens, scrub_tokens
from .users import (
    AppUser,
    app_user,
    can_switch_users,
    dynamic_users,
    single_boundary_warning,
    unreachable,
)

# -P: never import from the child's working directory (a state dir holds a "ca" folder).
TRUSTMESH = (sys.executable, "-P", "-m", "sidecar")
GUARD = (sys.executable, "-P", "-m", "sidecar.runner.guard")
GUARD_EXIT_WAIT = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROBE_INTERVAL = 0.1
HEALTH_PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class RunOptions:
    home: Path
    startup_timeout: float = 30.0
    grace: float = 10.0
    progress_every: float = 5.0  # seconds between "still waiting" lines during start-up


@dataclass
class Unit:
    spec: AppSpec
    sidecar: Child | None = None
    app: Child | None = None
    http: str = ""
    app_port: int | None = None
    lost: bool = False
    logs: list[IO[str]] = field(default_factory=list)
    user: AppUser | None = None  # None: the runner's own user
    tokens: ApiTokens = field(default_factory=ApiTokens.generate)

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.app, self.sidecar) if c is not None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _http_ok(port: int, path: str) -> bool:
    """One ``GET path`` to the app; True on a 2xx status line."""
    with trio.move_on_after(HEALTH_PROBE_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "User-Agent: trustmesh-run\r\nConnection: close\r\n\r\n"
            )
            await stream.send_all(request.encode("ascii"))
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                data = await stream.receive_some(4096)
                if not data:
                    break
                head += data
            parts = head.split(b" ", 2)
            return len(parts) >= 2 and parts[1][:1] == b"2" and len(parts[1]) == 3
        finally:
            await trio.aclose_forcefully(stream)
    return False


async def wait_app_port(port: int, health_path: str | None) -> None:
    """Until 127.0.0.1:port accepts TCP (and answers ``health_path`` with 2xx, if given)."""
    while True:
        try:
            if health_path is not None:
                if await _http_ok(port, health_path):
                    return
            else:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await trio.aclose_forcefully(stream)
                return
        except OSError:
            pass
        await trio.sleep(PROBE_INTERVAL)


class Runner:
    def __init__(self, run: RunFile, opts: RunOptions, console: Console | None = None) -> None:
        self.run_file = run
        self.opts = opts
        self.console = console or Console()
        self.units = [Unit(spec) for spec in run.apps]
        self.ca: Child | None = None
        self.ca_url = ""
        self.trust_domain = "public"
        self.phase = "starting"
        self.error: str | None = None
        self.signalled = False
        self.hurry = trio.Event()
        self.all_lost = trio.Event()
        self.main_scope = trio.CancelScope()
        self.state_file = state_path(opts.home, run.path)
        self.state: RunState = this_runner(run.path, run.name)
        self._nursery: trio.Nursery | None = None
        self._awaiting: Child | None = None  # the child start-up is waiting for
        self._guard: subprocess.Popen | None = None
        self._guard_pipe: int | None = None  # the only write end of the guard's stdin

    # -- entry point ---------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; return the exit code. Raises :class:`RunnerError` on failure."""
        existing = _live_run(self.state_file)
        if existing is not None:
            if self.run_file.path.is_file():
                what, how = str(self.run_file.path), f"trustmesh stop -f {self.run_file.path}"
            else:  # a single-app run: no file to name
                app_id = self.run_file.apps[0].app_id
                what, how = f"app {app_id!r}", f"trustmesh stop --app-id {app_id}"
            raise RunnerError(
                f"{what} is already running (runner pid {existing.runner_pid}); stop it with "
                f"'{how}'"
            )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._watch_signals)
            try:
                with self.main_scope:
                    await self._start_all()
                    self.phase = "running"
                    self.console.info(
                        "You're up and running! Both trustmesh and your app logs will appear "
                        "here. Press Ctrl+C to stop."
                    )
                    await self.all_lost.wait()
            except RunnerError as exc:
                self.error = str(exc)
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown()
                nursery.cancel_scope.cancel()
        if self.error is not None:
            raise RunnerError(self.error)
        if self.signalled:
            return 0
        # An app stopped by a signal ('trustmesh stop --app-id') did not fail; one that exited
        # with an error code, or crashed, did.
        stopped = (0, None, -signal.SIGTERM, -signal.SIGINT)
        failed = [u for u in self.units if u.app is not None and u.app.returncode not in stopped]
        return 1 if failed else 0

    # -- signals -------------------------------------------------------------------------------
    async def _watch_signals(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                if not self.signalled:
                    self.signalled = True
                    name = signal.Signals(signum).name
                    self.console.info(f"Received {name}: stopping apps, sidecars and the CA")
                    self.main_scope.cancel()
                else:
                    self.console.info("Stopping now (SIGKILL)")
                    self.hurry.set()

    # -- start-up ------------------------------------------------------------------------------
    def _choose_users(self) -> None:
        """Every app's user, decided before anything starts (a bad ``user:`` starts nothing)."""
        dynamic = {}
        if can_switch_users():
            dynamic = dynamic_users(self.opts.home, [u.spec.app_id for u in self.units])
        for unit in self.units:
            spec = unit.spec
            unit.user = app_user(spec.user, spec.app_id, dynamic.get(spec.app_id))
            if unit.user is not None and spec.command:
                path = {**os.environ, **spec.env}.get("PATH", os.defpath)
                reason = unreachable(unit.user, spec.app_dir, spec.command, {"PATH": path})
                if reason is not None:
                    raise RunnerError(
                        f"app {spec.app_id!r} runs as {unit.user.label}, which {reason}: make "
                        "it reachable by that user, or set 'user:' in the run file"
                    )
            if unit.user is not None and unit.user.uid == os.geteuid():
                self.console.warn(
                    f'app "{unit.spec.app_id}" runs as {unit.user.label}, the mesh\'s own user: '
                    "it can read the CA key and rewrite mesh state"
                )
        if not can_switch_users() and any(u.spec.command for u in self.units):
            self.console.warn(single_boundary_warning())

    async def _start_all(self) -> None:
        home = self.opts.home
        for note in self.run_file.ignored:
            self.console.note(f"{note}: a Dapr key trustmesh accepts and ignores")
        self._choose_users()
        check_app_ids(Registry(home), self.run_file.apps)
        check_ports(self.run_file.apps)
        self.trust_domain, created = ensure_ca(home)
        if created:
            self.console.info(f"Created a CA for trust domain {self.trust_domain!r} in {home}/ca")
        skipped: list[str] = []
        generation = apply_run_file(home, self.run_file, skipped)
        for where in skipped:
            self.console.note(f"{where}: not a middleware component; trustmesh ignores it")
        if generation is not None:
            self.console.info(f"Applied the run file's policies as version {generation}")
        write_state(self.state_file, self.state)
        self._start_guard()
        await self._start_ca()
        for unit in self.units:
            await self._start_unit(unit)

    def _start_guard(self) -> None:
        """The watchdog that stops every child if this runner dies (see :mod:`.guard`)."""
        read_end, self._guard_pipe = os.pipe()
        try:
            self._guard = subprocess.Popen(
                [*GUARD, str(os.getpid()), str(self.opts.grace), str(self.state_file)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.opts.home,
                process_group=0,
            )
        finally:
            os.close(read_end)
        self.state.children.append(own_record("guard", None, self._guard.pid))
        write_state(self.state_file, self.state)

    def _tell_guard(self, message: str) -> None:
        if self._guard_pipe is None:
            return
        try:
            os.write(self._guard_pipe, f"{message}\n".encode("ascii"))
        except OSError:  # the guard is gone: nothing to tell, the run goes on
            self._close_guard()

    def _close_guard(self) -> None:
        if self._guard_pipe is not None:
            with contextlib.suppress(OSError):
                os.close(self._guard_pipe)
            self._guard_pipe = None

    async def _spawn(
        self,
        unit: Unit | None,
        role: str,
        argv,
        *,
        cwd,
        env,
        hook=None,
        to_console=True,
        log=None,
        user: AppUser | None = None,
    ) -> Child:
        app_id = unit.spec.app_id if unit is not None else None
        quiet = is_sidecar_ready_log if role == "sidecar" else None
        out = LineSink(self.console, role, app_id, to_console=to_console, log=log, quiet=quiet)
        err = LineSink(self.console, role, app_id, to_console=to_console, log=log, quiet=quiet)
        assert self._nursery is not None
        child = await start_child(
            self._nursery,
            argv,
            role=role,
            app_id=app_id,
            cwd=cwd,
            env=env,
            stdout_sink=out,
            stderr_sink=err,
            stdout_hook=hook,
            user=user,
        )
        child.on_exit.append(lambda c: self._on_exit(unit, c))
        record = own_record(role, app_id, child.pid)
        self._tell_guard(f"+{child.pid} {role} {record.start_ticks or '-'}")
        self.state.children.append(record)
        write_state(self.state_file, self.state)
        return child

    async def _start_ca(self) -> None:
        argv = [*TRUSTMESH, "ca", "serve", "--listen", "127.0.0.1:0", "--home", str(self.opts.home)]
        env = {**scrub_tokens(os.environ), "PYTHONUNBUFFERED": "1", FORMAT_ENV: self._log_format}
        self.ca = await self._spawn(
            None, "ca", argv, cwd=self.opts.home, env=env, hook=listening_line_hook
        )
        payload = await self._await_ready(self.ca, "the CA failed to start")
        self.ca_url = payload["url"]
        self.console.info(f"Started the CA at {self.ca_url}")

    @property
    def _log_format(self) -> str:
        """Readable lines when the user watches a terminal, JSON when our output is piped."""
        return "console" if self.console.is_terminal else "json"

    def _logs_for(self, unit: Unit, destination: str) -> tuple[bool, IO[str] | None]:
        """(to the console?, the app's log file or None); one file per app, opened once."""
        log = None
        if destination in ("file", "fileAndConsole"):
            if not unit.logs:
                unit.logs.append(open_log_file(self.opts.home, unit.spec.app_id))
                self.console.info(f"Writing logs to {log_path(self.opts.home, unit.spec.app_id)}")
            log = unit.logs[0]
        return destination in ("console", "fileAndConsole"), log

    async def _start_unit(self, unit: Unit) -> None:
        spec = unit.spec
        failed = f"app {spec.app_id!r} failed to start"
        self.console.info(f'Validating config and starting app "{spec.app_id}"')
        unit.app_port = free_port() if spec.app_port == 0 else spec.app_port
        token = mint_join_token(self.opts.home, self.trust_domain, spec.app_id)
        argv = [
            *TRUSTMESH,
            "sidecar",
            "--app-id", spec.app_id,
            "--trust-domain", self.trust_domain,
            "--home", str(self.opts.home),
            "--ca-url", self.ca_url,
            "--http-port", str(spec.http_port or 0),
            "--admin-port", "0",
            "--log-level", spec.log_level,
        ]  # fmt: skip
        if unit.app_port is not None:
            argv += ["--app-port", str(unit.app_port)]
        env = {
            **scrub_tokens(os.environ),
            **unit.tokens.sidecar_env(),
            "PYTHONUNBUFFERED": "1",
            "TRUSTMESH_JOIN_TOKEN": token,
            FORMAT_ENV: self._log_format,
        }
        to_console, log = self._logs_for(unit, spec.sidecar_log_destination)
        unit.sidecar = await self._spawn(
            unit, "sidecar", argv, cwd=spec.app_dir, env=env, hook=ready_line_hook,
            to_console=to_console, log=log,
        )  # fmt: skip
        ready = await self._await_ready(unit.sidecar, f"{failed}: its sidecar did not start")
        unit.http = str(ready.get("http") or "")
        self.console.info(
            f'Started sidecar with app id "{spec.app_id}". HTTP Port: {_port_of(unit.http)}. '
            f"Inbound: {ready.get('inbound') or '-'}. Admin: {ready.get('admin')}"
        )
        if not spec.command:
            self.console.warn(
                f'no command given for app "{spec.app_id}": only its sidecar is started'
            )
            return
        to_console, log = self._logs_for(unit, spec.app_log_destination)
        try:
            unit.app = await self._spawn(
                unit, "app", spec.command, cwd=spec.app_dir, env=self._app_env(unit),
                to_console=to_console, log=log, user=unit.user,
            )  # fmt: skip
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if unit.user is not None and isinstance(exc, PermissionError):
                reason += (
                    f" (the app runs as {unit.user.label}: it must be able to enter "
                    f"{spec.app_dir} and run its command; or set 'user:' in the run file)"
                )
            raise StartupFailed(f"{failed}: cannot run {spec.command[0]!r}: {reason}") from None
        if unit.app_port is None:
            self.console.info(f'Started app "{spec.app_id}" (pid {unit.app.pid}; no appPort)')
            return
        await self._await_port(unit, failed)
        self.console.emit(
            prefix_for("app", spec.app_id), "app", f"ready on 127.0.0.1:{unit.app_port}"
        )

    def _app_env(self, unit: Unit) -> dict[str, str]:
        env = {k: v for k, v in scrub_tokens(os.environ).items() if k != "TRUSTMESH_JOIN_TOKEN"}
        env.setdefault("PYTHONUNBUFFERED", "1")  # so a Python app's prints show as they happen
        if unit.user is not None:
            env.update(unit.user.env())
        http_port = _port_of(unit.http)
        env.update(
            APP_ID=unit.spec.app_id,
            APP_CHANNEL_ADDRESS="127.0.0.1",
            DAPR_HTTP_PORT=http_port,
            TRUSTMESH_HTTP_PORT=http_port,
            APP_PROTOCOL="http",
        )
        if unit.app_port is not None:
            env["APP_PORT"] = str(unit.app_port)
        env.update(scrub_tokens(unit.spec.env))  # the runner's tokens only, never the file's
        env.update(unit.tokens.app_env())
        return env

    def _progress(self, waiting_for: str):
        """A waiter that never finishes: every few seconds, says what start-up is waiting for."""

        async def report() -> None:
            started = trio.current_time()
            while True:
                await trio.sleep(self.opts.progress_every)
                elapsed = trio.current_time() - started
                self.console.info(
                    f"Still waiting for {waiting_for} "
                    f"({elapsed:.0f}s of {self.opts.startup_timeout:g}s)"
                )

        return report

    async def _await_ready(self, child: Child, failed: str) -> dict:
        timeout = self.opts.startup_timeout
        self._awaiting = child
        with trio.move_on_after(timeout):
            await wait_first(child.ready.wait, child.exited.wait, self._progress(child.name))
        if child.ready.is_set() and child.ready_payload is not None:
            return child.ready_payload
        if child.exited.is_set():
            raise StartupFailed(f"{failed}: {child.name} {child.exit_text()}{await _tail(child)}")
        raise StartupFailed(
            f"{failed}: {child.name} not ready after {timeout:g}s{await _tail(child)}"
        )

    async def _await_port(self, unit: Unit, failed: str) -> None:
        app, port, spec = unit.app, unit.app_port, unit.spec
        assert app is not None and port is not None
        health = spec.health_check_path if spec.health_check else None
        timeout = self.opts.startup_timeout
        reached = False

        async def probe() -> None:
            nonlocal reached
            await wait_app_port(port, health)
            reached = True

        self._awaiting = app
        what = f"answer {health} with 2xx" if health else "accept connections"
        waiting = f"app {spec.app_id!r} to {what} on 127.0.0.1:{port}"
        with trio.move_on_after(timeout):
            await wait_first(probe, app.exited.wait, self._progress(waiting))
        if reached:
            return
        if app.exited.is_set():
            raise StartupFailed(f"{failed}: the app {app.exit_text()}{await _tail(app)}")
        raise StartupFailed(
            f"{failed}: it did not {what} on 127.0.0.1:{port} within {timeout:g}s{await _tail(app)}"
        )

    # -- exits while running -------------------------------------------------------------------
    def _on_exit(self, unit: Unit | None, child: Child) -> None:
        self.state.children = [c for c in self.state.children if c.pid != child.pid]
        if not group_alive(child.pid):  # else the guard keeps it, for what is left of the group
            self._tell_guard(f"-{child.pid}")
        if self.phase != "stopping":
            write_state(self.state_file, self.state)
        if child.stopping or self.phase == "stopping":
            return
        if self.phase == "starting":
            if child is not self._awaiting:  # the waiter reports its own child's exit
                who = f"app {unit.spec.app_id!r}" if unit is not None else "the CA"
                last = tail_text(child.stderr_sink.tail) if child.stderr_sink else ""
                self.error = (
                    f"{who} failed while the others were starting: {child.name} "
                    f"{child.exit_text()}" + (f"; last output: {last}" if last else "")
                )
                self.main_scope.cancel()
            return
        if unit is None:
            self.error = f"the CA {child.exit_text()}; stopping the run"
            self.main_scope.cancel()
            return
        if unit.lost:
            return
        unit.lost = True
        other = "sidecar" if child.role == "app" else "app"
        self.console.info(
            f'{child.role.capitalize()} "{unit.spec.app_id}" {child.exit_text()}; '
            f"stopping its {other}, the other apps keep running"
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._stop_unit, unit)

    async def _stop_unit(self, unit: Unit) -> None:
        for child in unit.children:
            await child.stop(self.opts.grace, self.hurry)
        if all(u.lost for u in self.units):
            self.all_lost.set()

    # -- shutdown ------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        self.phase = "stopping"
        apps = [u.app for u in self.units if u.app is not None]
        sidecars = [u.sidecar for u in self.units if u.sidecar is not None]
        for label, group in (("apps", apps), ("sidecars", sidecars), ("the CA", [self.ca])):
            group = [c for c in group if c is not None and not c.gone()]
            if not group:
                continue
            self.console.info(f"Stopping {label}")
            async with trio.open_nursery() as nursery:
                for child in group:
                    nursery.start_soon(child.stop, self.opts.grace, self.hurry)
            for child in group:
                state = child.exit_text() if child.gone() else "did not stop"
                self.console.info(f"  {child.name} {state}")
        for unit in self.units:
            for log in unit.logs:
                log.close()
        remove_state(self.state_file, self.state.runner_pid)
        self._tell_guard("bye")
        self._close_guard()
        if self._guard is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guard.wait(GUARD_EXIT_WAIT)


def _port_of(address: str) -> str:
    return address.rpartition(":")[2]


async def _tail(child: Child) -> str:
    """The child's last output lines, once its pipes are drained (briefly)."""
    with trio.move_on_after(1.0):
        await child.output_done.wait()
    sink = child.stderr_sink
    text = tail_text(sink.tail) if sink is not None else ""
    return f"; last output: {text}" if text else ""


def _live_run(path: Path) -> RunState | None:
    from .runstate import read_state

    state = read_state(path)
    if state is None or state.runner_pid == os.getpid() or not state.runner_alive():
        return None
    return state
