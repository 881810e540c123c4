"""Applying an ``MCPServerAccessPolicy`` document: which server it is for, and its registration.

A policy is enforced only by the sidecar of an App ID registered as an MCP server, and that
sidecar looks its policy up by its own App ID. So a policy on disk whose server is not
registered, or whose ``metadata.name`` is not its server's App ID, is a policy nobody enforces
— while ``access test`` would happily evaluate it (#14). ``apply`` therefore refuses the second
and registers the server for the first, in the same store change as the policy. Pure: plain
documents and bindings in, bindings out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from identity import DEFAULT_NAMESPACE

from ..errors import ResourceInvalid
from .policy import KIND, parse_policy

DEFAULT_ENDPOINT = "/mcp"


def check_policy_document(document: Mapping[str, Any]):
    """``parse_policy`` plus the rule that a policy is named after the server it governs."""
    policy = parse_policy(document)
    if policy.server_ref != policy.name:
        raise ResourceInvalid(
            f"the policy is named {policy.name!r} but governs MCP server {policy.server_ref!r}; "
            f"trustmesh keeps one policy per server, named after it: set metadata.name to "
            f"{policy.server_ref!r}",
            "spec.mcpServerRef",
        )
    return policy


def servers_to_register(documents: Iterable[Any], bindings: Iterable[Any]) -> list[Any]:
    """The App ID bindings to write so that every applied policy has a registered server.

    ``documents`` carry ``kind`` and ``body``; ``bindings`` are the store's and those written in
    the same change (``AppBinding``). The server's namespace is the policy's
    ``metadata.namespace``, else ``default``; it gets the default endpoint. A server registered
    in any namespace counts as registered.
    """
    from ..state.store import AppBinding

    known = {(b.namespace, b.app_id): b for b in bindings}
    out = []
    for document in documents:
        if document.kind != KIND:
            continue
        policy = parse_policy(document.body)
        if any(a == policy.server_ref and b.mcp_server is not None for (_, a), b in known.items()):
            continue  # registered already (in whichever namespace it runs)
        metadata = document.body.get("metadata") or {}
        key = (str(metadata.get("namespace") or DEFAULT_NAMESPACE), policy.server_ref)
        binding = known.get(key)
        binding = binding or AppBinding(key[1], key[0])
        binding.mcp_server = {"path": DEFAULT_ENDPOINT, "paths": [DEFAULT_ENDPOINT]}
        known[key] = binding
        out.append(binding)
    return out
