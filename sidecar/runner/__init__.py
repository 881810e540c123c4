"""``trustmesh run -f``: Dapr's multi-app run template, with a sidecar per app and a bundled CA.

* :mod:`.runfile` parses and validates the template (pure: text in, :class:`RunFile` out), or
  builds the one-app run of ``run --app-id ID -- CMD``;
* :mod:`.preflight` refuses taken ports and held App IDs before anything starts;
* :mod:`.users` decides who each app runs as (never the mesh's user, when root);
* :mod:`.tokens` makes each app's ``DAPR_API_TOKEN``/``APP_API_TOKEN``;
* :mod:`.prepare` makes the state directory ready (CA, documents, bindings, join tokens);
* :mod:`.supervisor` starts children in their own process groups and stops them;
* :mod:`.guard` stops them if the runner dies, even by SIGKILL;
* :mod:`.output` re-emits their lines with ``== APP - id ==`` style prefixes, and writes
  ``<home>/logs/<app-id>.log``;
* :mod:`.runner` orders it all in one trio nursery;
* :mod:`.runstate` and :mod:`.control` let ``trustmesh stop`` and ``trustmesh list`` find runs,
  including what a dead runner left behind.
"""

from .errors import RunFileError, RunnerError
from .runfile import AppSpec, RunFile, load_run_file, parse_run_file

__all__ = ["AppSpec", "RunFile", "RunFileError", "RunnerError", "load_run_file", "parse_run_file"]
