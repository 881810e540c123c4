"""Pure policy decisions: no sockets, no files, no clocks read behind the caller's back."""

from .decision import Decision

__all__ = ["Decision"]
