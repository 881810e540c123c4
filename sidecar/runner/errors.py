"""Errors of the runner: every one is a single line a user can act on."""

from __future__ import annotations

from ..errors import SidecarError


class RunnerError(SidecarError):
    code = "ERR_RUN"


class RunFileError(RunnerError):
    """The run template cannot be used; the message starts with ``file:line:``."""

    code = "ERR_RUN_FILE"


class StartupFailed(RunnerError):
    """A child did not come up; names the app and the reason."""

    code = "ERR_RUN_STARTUP"
