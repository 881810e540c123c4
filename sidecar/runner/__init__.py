"""``trustmesh run -f``: Dapr's multi-app run template, with a sidecar per app and a bundled CA.

* :mod:`.runfile` parses and validates the template (pure: text in, :class:`RunFile` out);
* :mod:`.prepare` makes the state directory ready (CA, documents, bindings, tokens);
* :mod:`.supervisor` starts children in their own process groups and stops them;
* :mod:`.output` re-emits their lines with ``== APP - id ==`` style prefixes;
* :mod:`.runner` orders it all in one trio nursery;
* :mod:`.runstate` and :mod:`.control` let ``trustmesh stop`` and ``trustmesh list`` find runs.
"""

from .errors import RunFileError, RunnerError
from .runfile import AppSpec, RunFile, load_run_file, parse_run_file

__all__ = ["AppSpec", "RunFile", "RunFileError", "RunnerError", "load_run_file", "parse_run_file"]
