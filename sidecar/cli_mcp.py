"""``trustmesh mcpserver …``: register MCP servers and edit who may use which tools.

The verbs are the hosted product's (``reference/hosted-tool-access.txt``) so its tutorials
translate word for word. ``access test`` evaluates with :func:`sidecar.mcp.authorize_item`, the
very function the sidecar calls for every ``tools/call``.
"""

from __future__ import annotations

import click
import yaml

from identity import IdentityError, validate_app_id, validate_namespace

from .cli_support import (
    fail,
    home_option,
    looked_in,
    open_store,
    report_change,
    wait_options,
)
from .errors import ResourceInvalid
from .http.path import normalize_method
from .mcp import (
    MCPServerAccessPolicy,
    authorize_item,
    grant,
    parse_policy,
    revoke,
    revoke_all,
    to_document,
)
from .state.store import AppBinding

KIND = "MCPServerAccessPolicy"


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise click.BadParameter(f"{value!r}: give a comma-separated list of names, or '*'")
    return names


def _load(store, name: str) -> MCPServerAccessPolicy:
    document = store.get(KIND, name)
    if document is None:
        raise click.ClickException(
            f"MCP server {name!r} is not registered {looked_in(store.home)}; "
            f"run 'trustmesh mcpserver create {name}'"
        )
    try:
        return parse_policy(document)
    except ResourceInvalid as exc:
        raise click.ClickException(f"the stored policy of {name!r} is invalid: {exc}") from None


@click.group("mcpserver")
def mcpserver_group() -> None:
    """MCP servers and their tool-level access policies."""


@mcpserver_group.command("create")
@click.argument("name")
@click.option("--path", default="/mcp", show_default=True, help="The app's MCP endpoint.")
@click.option("--namespace", default="default", show_default=True)
@home_option
@wait_options
def mcpserver_create(name, path, namespace, home, wait, wait_timeout) -> None:
    """Register App ID NAME as an MCP server, with a deny-all access policy."""
    try:
        validate_app_id(name)
        validate_namespace(namespace)
        normalize_method(path.lstrip("/"))
    except (IdentityError, ResourceInvalid) as exc:
        raise fail(exc) from None
    except Exception as exc:  # InvalidPath and friends: one line, no traceback
        raise click.ClickException(f"invalid --path {path!r}: {exc}") from None
    home_path, store = open_store(home)
    with store.change() as change:
        binding = store.binding(name, namespace) or AppBinding(name, namespace)
        binding.mcp_server = {"path": "/" + normalize_method(path.lstrip("/"))}
        change.put_binding(binding)
        if store.get(KIND, name) is None:
            change.put(KIND, name, to_document(MCPServerAccessPolicy.deny_all(name)))
    click.echo(f"MCP server {name} registered at {binding.mcp_server['path']} (deny-all policy)")
    report_change(home_path, change.generation, wait, wait_timeout)


@mcpserver_group.group("access")
def access_group() -> None:
    """Inspect and change which caller App IDs may use which tools."""


def _describe(policy: MCPServerAccessPolicy) -> str:
    if not policy.rules:
        return f"{policy.name}: deny-all (no rules)"
    lines = [f"{policy.name}: {len(policy.rules)} rule(s)"]
    for index, rule in enumerate(policy.rules):
        callers = ", ".join(rule.callers)
        for g in rule.grants:
            scopes = f" (scopes: {' '.join(g.required_scopes)})" if g.required_scopes else ""
            lines.append(
                f"  rules[{index}] callers={callers} {g.capability}={','.join(g.names)}{scopes}"
            )
    return "\n".join(lines)


@access_group.command("get")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "yaml"]), default="text")
@home_option
def access_get(name, output, home) -> None:
    """Show the access policy of MCP server NAME."""
    _, store = open_store(home)
    policy = _load(store, name)
    if output == "yaml":
        click.echo(yaml.safe_dump(to_document(policy), sort_keys=False), nl=False)
    else:
        click.echo(_describe(policy))


@access_group.command("list")
@home_option
def access_list(home) -> None:
    """Show every MCP server's access policy."""
    path, store = open_store(home)
    names = store.names(KIND)
    if not names:
        click.echo(f"no MCP servers registered {looked_in(path)}")
    for name in names:
        click.echo(_describe(_load(store, name)))


def _edit(home, name, edit, wait, wait_timeout) -> None:
    home_path, store = open_store(home)
    with store.change() as change:
        before = _load(store, name)
        try:
            after = edit(before)
        except ResourceInvalid as exc:
            raise fail(exc) from None
        if after != before:
            change.put(KIND, name, to_document(after))
    if after != before:
        click.echo(_describe(after))
    report_change(home_path, change.generation, wait, wait_timeout)


@access_group.command("grant")
@click.argument("name")
@click.option("--caller", required=True, help="Caller App ID, or '*' for any caller.")
@click.option("--allow-tools", help="Comma-separated tool names, or '*'.")
@click.option("--allow-resources", help="Comma-separated resource URIs, or '*'.")
@click.option("--allow-prompts", help="Comma-separated prompt names, or '*'.")
@click.option("--required-scopes", help="OAuth scopes a bearer token must carry for these items.")
@home_option
@wait_options
def access_grant(
    name,
    caller,
    allow_tools,
    allow_resources,
    allow_prompts,
    required_scopes,
    home,
    wait,
    wait_timeout,
) -> None:
    """Allow CALLER to discover and use the named tools, resources or prompts of NAME."""
    wanted = {
        "tools": _names(allow_tools),
        "resources": _names(allow_resources),
        "prompts": _names(allow_prompts),
    }
    if not any(wanted.values()):
        raise click.UsageError(
            "give at least one of --allow-tools, --allow-resources, --allow-prompts"
        )
    if caller != "*":
        try:
            validate_app_id(caller)
        except IdentityError as exc:
            raise fail(exc) from None
    scopes = tuple(_names(required_scopes) or ())

    def edit(policy):
        for capability, names in wanted.items():
            if names:
                policy = grant(policy, caller, capability, names, required_scopes=scopes)
        return policy

    _edit(home, name, edit, wait, wait_timeout)


@access_group.command("revoke")
@click.argument("name")
@click.option("--caller", required=True)
@click.option("--allow-tools", help="Tool names to take away.")
@click.option("--allow-resources", help="Resource URIs to take away.")
@click.option("--allow-prompts", help="Prompt names to take away.")
@click.option("--all", "everything", is_flag=True, help="Remove the caller's whole rule.")
@home_option
@wait_options
def access_revoke(
    name, caller, allow_tools, allow_resources, allow_prompts, everything, home, wait, wait_timeout
) -> None:
    """Take grants away from CALLER on NAME."""
    wanted = {
        "tools": _names(allow_tools),
        "resources": _names(allow_resources),
        "prompts": _names(allow_prompts),
    }
    if everything == any(wanted.values()):
        raise click.UsageError("give either --all or names with --allow-tools/-resources/-prompts")

    def edit(policy):
        if everything:
            return revoke_all(policy, caller)
        for capability, names in wanted.items():
            if names:
                policy = revoke(policy, caller, capability, names)
        return policy

    _edit(home, name, edit, wait, wait_timeout)


@access_group.command("test")
@click.argument("name")
@click.option("--caller", required=True)
@click.option("--tool")
@click.option("--resource")
@click.option("--prompt")
@home_option
def access_test(name, caller, tool, resource, prompt, home) -> None:
    """Preview a verdict with the sidecar's own decision function (exit 0 allowed, 1 denied)."""
    asked = [
        (c, n) for c, n in (("tools", tool), ("resources", resource), ("prompts", prompt)) if n
    ]
    if len(asked) != 1:
        raise click.UsageError("give exactly one of --tool, --resource, --prompt")
    _, store = open_store(home)
    capability, item = asked[0]
    decision = authorize_item(_load(store, name), caller, capability, item)
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    rule = f" [{decision.rule}]" if decision.rule else ""
    click.echo(f"{verdict}: {decision.message or f'{caller} may use {item}'}{rule}")
    raise SystemExit(0 if decision.allowed else 1)
