"""The serving process of ``trustmesh sidecar``: what runs once the CLI has read its flags.

A sidecar lives for days; the command line is read once. click, the other commands' shared
helpers and their imports cost a sidecar ~1.4 MiB of resident memory for its whole life (issue
#11 allows 35 MiB). So ``trustmesh sidecar`` parses and validates its flags with click, exactly
as before (same help, same messages), and then replaces itself with ``python -m sidecar.serve``
(:func:`os.execve`: the same pid, stdio, environment and, after the module name, the same
arguments, so ``ps`` and whoever watches the pid see the same sidecar). The values it read
(plain data: strings, numbers, paths) travel pickled over a pipe inherited across the exec,
named by ``TRUSTMESH_SIDECAR_OPTIONS_FD``, never on the command line (they may hold tokens).
The serving process builds the :class:`SidecarOptions` from them, so the CLI process does not
import the serving path only to pass it on (start-up costs one more interpreter, not two).

A ``--limit`` the listeners refuse is refused there, worded by click as before.
Failures end as the CLI ends them: one line ``trustmesh: <message>`` on stderr and exit 1 for an
error a user can cause (the CLI's own :func:`sidecar.cli.known_error_message`, loaded only then),
exit 70 naming an internal error otherwise.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity._errors import IdentityError  # not the package: it loads ssl and the DER reader

from .errors import SidecarError

if TYPE_CHECKING:
    import click

    from .runtime import SidecarOptions

# This module's top level stays light: ``trustmesh sidecar`` imports it to hand over, and the
# serving path (trio, the proxies) is imported by the process that serves, once.

OPTIONS_FD_ENV = "TRUSTMESH_SIDECAR_OPTIONS_FD"
MAX_OPTIONS_BYTES = 60_000  # below a pipe's capacity: written whole before the exec, unread

KNOWN_ERRORS: tuple[type[BaseException], ...] = (SidecarError, IdentityError)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Ours, and the CA package's when it was loaded (SPIRE and tests may load it; a serving
    sidecar does not, since its signing core imports ``cryptography``)."""
    ca = sys.modules.get("ca")
    return KNOWN_ERRORS + ((ca.CAError,) if ca is not None else ())


def first_known_error(exc: BaseException) -> BaseException | None:
    """trio wraps task failures in exception groups; find the one a user should read."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_known_error(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, _known_errors()) else None


def _release_startup_memory() -> None:
    """Start-up (imports, policy parsing, TLS contexts) leaves freed memory inside the C heap;
    glibc's ``malloc_trim`` hands those pages back to the kernel (elsewhere: nothing to do)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class BadLimit(ValueError):
    """A ``--limit NAME=VALUE`` the listeners do not know or accept."""

    def as_click(self) -> click.BadParameter:
        import click  # only to word the refusal exactly as the CLI's own flags are refused

        return click.BadParameter(str(self), param_hint="--limit")


def build_options(spec: dict[str, Any]) -> SidecarOptions:
    """The :class:`SidecarOptions` from the plain values ``trustmesh sidecar`` read."""
    from .audit import STDOUT, AuditSettings
    from .http.server import ServerLimits
    from .runtime import SidecarOptions

    spec = dict(spec)
    try:
        limits = ServerLimits().with_overrides(spec.pop("limits"))
    except ValueError as exc:
        raise BadLimit(str(exc)) from None
    audit = dict(spec.pop("audit"))
    where = audit.pop("where")
    if where is None:
        destination: Path | str | None = (
            spec["home"] / "audit" / f"{spec['namespace']}.{spec['app_id']}.jsonl"
        )
    elif where in ("none", STDOUT):
        destination = None if where == "none" else STDOUT
    else:
        destination = Path(where)
    return SidecarOptions(**spec, audit=AuditSettings(destination, **audit), limits=limits)


def serve(spec: dict[str, Any]) -> None:
    """Run the sidecar until it is drained; raise what stopped it otherwise."""
    import trio

    from .runtime import print_ready_line, run_sidecar

    opts = build_options(spec)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_sidecar, opts)
            # Everything loaded so far lives as long as the process: keep the collector off it.
            gc.collect()
            gc.freeze()
            _release_startup_memory()
            print_ready_line(running)

    trio.run(main)


def interpreter_options() -> list[str]:
    """The interpreter flags this process was started with, for the one that replaces it (and
    for the sidecar's own children, :mod:`.ca_worker`)."""
    flags = sys.flags
    options = ["-I"] if flags.isolated else []
    options += ["-E"] if flags.ignore_environment and not flags.isolated else []
    options += ["-s"] if flags.no_user_site and not flags.isolated else []
    if not flags.isolated and (flags.safe_path or not _imported_from_working_directory()):
        # ``-m`` puts the working directory first on sys.path: a ``sidecar`` package planted
        # there (by the app beside us, say) would run as the sidecar, holding its private key.
        # The serving process imports the package this one did; only a process that itself
        # loaded it from the working directory (``python -m sidecar`` in a source tree) may.
        options.append("-P")
    options += ["-B"] if flags.dont_write_bytecode else []
    options += ["-O"] * flags.optimize
    options += [f"-W{w}" for w in sys.warnoptions]
    options += [f"-X{k}" if v is True else f"-X{k}={v}" for k, v in sys._xoptions.items()]
    return options


def _imported_from_working_directory() -> bool:
    """Whether this process's own ``sidecar`` package is the one in the working directory."""
    try:
        return Path(__file__).resolve().parent.parent == Path.cwd().resolve()
    except OSError:
        return False


def started_as_the_cli() -> bool:
    """True in a process started to run the CLI (``python -m sidecar`` or the ``trustmesh``
    script), where replacing the process is what the user asked for; False when the command
    runs inside another program (a test's CliRunner), which must keep its process."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "sidecar.__main__":
        return True
    return os.path.basename(sys.argv[0]) == "trustmesh"


def hand_over(spec: dict[str, Any], log_level: str) -> None:
    """Replace this process with the lean serving one; return (having changed nothing) only if
    that cannot be done, and the caller then serves in this process."""
    data = pickle.dumps((spec, log_level), protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_OPTIONS_BYTES:
        return
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    argv = [sys.executable, *interpreter_options(), "-m", "sidecar.serve", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, {**os.environ, OPTIONS_FD_ENV: str(read_end)})  # noqa: S606
    except OSError:
        os.close(read_end)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"trustmesh: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


def main() -> None:
    fd = os.environ.pop(OPTIONS_FD_ENV, "")
    if not fd.isdigit():
        _fail("sidecar.serve is started by 'trustmesh sidecar' (run that instead)", 2)
    # The pipe was written by hand_over in this very process before it exec'd: whoever could
    # write it could run any code as this user anyway, so unpickling it trusts no one new.
    with os.fdopen(int(fd), "rb") as pipe:
        spec, log_level = pickle.load(pipe)  # noqa: S301
    from .logsetup import configure_logging

    configure_logging(log_level)
    try:
        serve(spec)
    except BadLimit as exc:
        refusal = exc.as_click()
        _fail(refusal.format_message(), refusal.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from .cli import known_error_message  # the CLI's wording, loaded only on the way out

        known = first_known_error(exc)
        message = str(known) if known is not None else known_error_message(exc)
        if message is not None:
            _fail(message, 1)
        _fail(
            f"internal error: {type(exc).__name__}: {exc} "
            "(a bug: please report it with the command that caused it)",
            70,
        )


if __name__ == "__main__":
    main()
