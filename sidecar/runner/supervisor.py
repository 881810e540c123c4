"""Children of a run: started in their own process groups, read line by line, stopped in order.

Theory of operation. Every child (the CA, each sidecar, each app) is the leader of a new process
group, so a Ctrl+C on the terminal reaches only the runner, which then stops the children itself,
in order (apps, then sidecars, then the CA). Stopping signals the whole group, so whatever an
app's command spawned (``npm start`` → node) goes too: SIGTERM, then SIGKILL when the grace
period runs out or the user presses Ctrl+C a second time. A child counts as gone when its leader
is reaped *and* no process is left in its group.

Every child's stdout and stderr are read by tasks in the run's nursery until EOF, so a chatty
child never blocks on a full pipe; each line goes to the child's :class:`~.output.LineSink`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import trio

from .output import LineSink, LineSplitter
from .runstate import group_alive
from .users import AppUser

GONE_POLL = 0.05  # how often to look for stragglers in a group whose leader has exited
STRAGGLER_WAIT = 2.0  # after SIGKILL, how long to wait for the kernel to clear the group


async def wait_first(*waiters: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as any of ``waiters`` returns."""
    async with trio.open_nursery() as nursery:

        async def one(waiter: Callable[[], Awaitable[object]]) -> None:
            await waiter()
            nursery.cancel_scope.cancel()

        for waiter in waiters:
            nursery.start_soon(one, waiter)


class Child:
    """One supervised process (and its process group)."""

    def __init__(self, role: str, app_id: str | None, process: trio.Process) -> None:
        self.role = role
        self.app_id = app_id
        self.process = process
        self.pid = process.pid
        self.exited = trio.Event()
        self.returncode: int | None = None
        self.stopping = False  # set when the runner asked it to stop (an exit is then expected)
        self.ready = trio.Event()
        self.ready_payload: dict | None = None
        self.stderr_sink: LineSink | None = None
        self.on_exit: list[Callable[[Child], None]] = []
        self.output_done = trio.Event()  # both pipes reached EOF
        self._open_streams = 2

    def _stream_closed(self) -> None:
        self._open_streams -= 1
        if self._open_streams <= 0:
            self.output_done.set()

    @property
    def name(self) -> str:
        return "the CA" if self.role == "ca" else f"{self.role} {self.app_id!r}"

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def gone(self) -> bool:
        return self.exited.is_set() and not group_alive(self.pid)

    async def wait_gone(self) -> None:
        await self.exited.wait()
        while group_alive(self.pid):
            await trio.sleep(GONE_POLL)

    async def stop(self, grace: float, hurry: trio.Event) -> None:
        """SIGTERM the group; SIGKILL it after ``grace`` seconds or when ``hurry`` is set."""
        self.stopping = True
        if self.gone():
            return
        self.signal_group(signal.SIGTERM)
        with trio.move_on_after(grace):
            await wait_first(self.wait_gone, hurry.wait)
        if self.gone():
            return
        self.signal_group(signal.SIGKILL)
        with trio.move_on_after(STRAGGLER_WAIT):
            await self.wait_gone()

    def exit_text(self) -> str:
        code = self.returncode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"


# A hook sees every stdout line first; True means "consumed": a line meant for the runner (a
# readiness line), which the user does not see. The runner prints its own line for it.
LineHook = Callable[[str], bool]


def ready_line_hook(child: Child) -> LineHook:
    """Watch stdout for the sidecar's ``{"event": "ready", …}`` line, and consume it."""

    def hook(line: str) -> bool:
        if child.ready.is_set() or not line.startswith("{"):
            return False
        try:
            payload = json.loads(line)
        except ValueError:
            return False
        if isinstance(payload, dict) and payload.get("event") == "ready":
            child.ready_payload = payload
            child.ready.set()
            return True
        return False

    return hook


def listening_line_hook(child: Child) -> LineHook:
    """Watch stdout for ``ca serve``'s ``listening on https://HOST:PORT`` line (shown too)."""

    def hook(line: str) -> bool:
        if not child.ready.is_set() and line.startswith("listening on "):
            child.ready_payload = {"url": line.removeprefix("listening on ").strip()}
            child.ready.set()
        return False

    return hook


async def _pump(
    child: Child,
    stream: trio.abc.ReceiveStream,
    sink: LineSink,
    hook: LineHook | None,
) -> None:
    splitter = LineSplitter()

    def deliver(lines: list[str]) -> None:
        for line in lines:
            if hook is not None and hook(line):
                continue
            sink.line(line)

    try:
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not data:
                break
            deliver(splitter.feed(data))
        deliver(splitter.flush())
    finally:
        child._stream_closed()
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(stream)


async def _reap(child: Child) -> None:
    child.returncode = await child.process.wait()
    child.exited.set()
    for callback in child.on_exit:
        callback(child)


async def start_child(
    nursery: trio.Nursery,
    argv: Sequence[str],
    *,
    role: str,
    app_id: str | None,
    cwd: Path,
    env: Mapping[str, str],
    stdout_sink: LineSink,
    stderr_sink: LineSink,
    stdout_hook: Callable[[Child], LineHook] | None = None,
    user: AppUser | None = None,
) -> Child:
    """Start ``argv`` as the leader of a new process group; its pipes are read in ``nursery``.

    With ``user`` the process runs with that uid and gid and no supplementary groups.
    """
    credentials = {}
    if user is not None:
        credentials = {"user": user.uid, "group": user.gid, "extra_groups": []}
        if user.umask is not None:
            credentials["umask"] = user.umask
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd),
        env=dict(env),
        process_group=0,
        **credentials,
    )
    child = Child(role, app_id, process)
    child.stderr_sink = stderr_sink
    assert process.stdout is not None and process.stderr is not None
    hook = stdout_hook(child) if stdout_hook is not None else None
    nursery.start_soon(_pump, child, process.stdout, stdout_sink, hook)
    nursery.start_soon(_pump, child, process.stderr, stderr_sink, None)
    nursery.start_soon(_reap, child)
    return child
