"""The two local-door tokens of an app started by ``trustmesh run`` (Dapr's names and headers).

* ``DAPR_API_TOKEN``: the app sends it as ``dapr-api-token`` to its sidecar's outbound port;
  the sidecar refuses (401) any request without it, so another local process cannot borrow the
  app's identity by calling its sidecar.
* ``APP_API_TOKEN``: the sidecar sends it to the app as ``dapr-api-token`` on every forwarded
  request, so the app can refuse whatever reached its port without going through the sidecar.

Both are fresh random values per app and per run, handed to the sidecar and the app through
their environments only: never on a command line (``ps`` shows those to every user) and never
in a file. An inherited ``DAPR_API_TOKEN``/``APP_API_TOKEN`` in the runner's own environment is
never passed on: one app's token must not become another's.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_NAMES = ("DAPR_API_TOKEN", "APP_API_TOKEN")


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiTokens:
    dapr: str
    app: str

    @classmethod
    def generate(cls) -> ApiTokens:
        return cls(new_token(), new_token())

    def sidecar_env(self) -> dict[str, str]:
        return {"DAPR_API_TOKEN": self.dapr, "APP_API_TOKEN": self.app}

    def app_env(self) -> dict[str, str]:
        # The app calls its sidecar with DAPR_API_TOKEN and refuses, with APP_API_TOKEN, any
        # request that did not come through its sidecar (which sends it as dapr-api-token).
        return {"DAPR_API_TOKEN": self.dapr, "APP_API_TOKEN": self.app}


def scrub_tokens(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without any inherited token."""
    return {k: v for k, v in environ.items() if k not in TOKEN_NAMES}
