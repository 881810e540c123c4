"""``trustmesh mcpserver …``: register MCP servers and edit who may use which tools.

The verbs are the hosted product's (``reference/hosted-tool-access.txt``) so its tutorials
translate word for word. ``access test`` evaluates with :func:`sidecar.mcp.authorize_item`, the
very function the sidecar calls for every ``tools/call``, and checks ``--scopes`` with the bearer
layer's own ``scope_decision``.

What you see is what is enforced (#14): ``access get/list/test`` and ``mcpserver list`` say on
stderr when nothing enforces the policy they show (the server is not registered, no sidecar runs
for it, or its sidecar is behind the store or reports an error); ``grant`` refuses to add a grant
that an older one would shadow (``--replace`` moves the names); an App ID nobody in the mesh has
is accepted — apps may start later — with a warning naming the closest known one.
"""

from __future__ import annotations

import difflib

import click
import yaml

from identity import IdentityError, validate_app_id, validate_namespace

from .cli_home import home_option
from .cli_support import (
    admin_status,
    fail,
    looked_in,
    open_store,
    report_change,
    wait_options,
)
from .errors import ResourceInvalid
from .http.path import normalize_method
from .mcp import (
    Caller,
    CallerRef,
    MCPServerAccessPolicy,
    authorize_item,
    caller_ref,
    grant,
    parse_policy,
    required_scopes,
    revoke,
    revoke_all,
    to_document,
)
from .mcp.sessions import read_seen_tools, seen_tools_path
from .registry import Registry
from .state.store import AppBinding

KIND = "MCPServerAccessPolicy"
WILDCARD = "*"


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise click.BadParameter(f"{value!r}: give a comma-separated list of names, or '*'")
    return names


def _registration(store, name: str) -> AppBinding | None:
    """The binding that registers App ID ``name`` as an MCP server, in any namespace."""
    for binding in store.bindings():
        if binding.app_id == name and binding.mcp_server is not None:
            return binding
    return None


def _server_namespace(store, name: str) -> str | None:
    """The namespace MCP server ``name`` is registered in (what a bare caller means)."""
    binding = _registration(store, name)
    return binding.namespace if binding is not None else None


def _endpoints(binding: AppBinding) -> list[str]:
    server = binding.mcp_server or {}
    paths = server.get("paths")
    if isinstance(paths, list) and paths:
        return [str(p) for p in paths]
    return [str(server.get("path", "/mcp"))]


def not_enforced(home, store, name: str, *, check_version: bool = True) -> list[str]:
    """Why the policy of ``name`` is not what runs right now (empty: it is enforced).

    ``check_version=False`` right after a change made without ``--wait``: the sidecar has not
    had time to load it, which is no news; an error it reports still is.
    """
    binding = _registration(store, name)
    if binding is None:
        return [
            f"{name} is not registered as an MCP server, so no sidecar enforces this policy; "
            f"run 'trustmesh mcpserver create {name}'"
        ]
    who = f"{binding.namespace}/{name}"
    record = Registry(home).lookup(name, binding.namespace)
    if record is None:
        return [f"no sidecar for {who} is running: nothing enforces this policy until one starts"]
    status = admin_status(record)
    if status is None:
        return [f"the sidecar of {who} (pid {record.pid}) does not answer on its admin port"]
    policy = status.get("policy") or {}
    problems = []
    seen, current = policy.get("generation"), store.generation()
    if check_version and (not isinstance(seen, int) or seen < current):
        problems.append(
            f"the sidecar of {who} enforces version {seen}, not the stored version {current}"
        )
    if policy.get("error"):
        problems.append(f"the sidecar of {who} reports: {policy['error']}")
    return problems


def missing_scopes(needed, held) -> list[str]:
    """The bearer layer's rule (``scope_decision``): the token must hold every scope the grant
    requires; nothing else counts (``tests/unit/test_cli_mcp_scopes.py`` pins the two together)."""
    return [s for s in dict.fromkeys(needed) if s not in set(held)]


def mcp_column(store, app_id: str, binding, record, status) -> str:
    """``appid list/get``'s MCP column: registered or not, and whether that is enforced now."""
    if binding is None or binding.mcp_server is None:
        if store.get(KIND, app_id) is not None and _registration(store, app_id) is None:
            return "no (a policy is stored but the app is not registered: nothing enforces it)"
        return "no"
    if record is None:
        return "yes (not enforced: no sidecar running)"
    if status is None:
        return "yes (not enforced: its sidecar does not answer)"
    policy = status.get("policy") or {}
    if policy.get("error"):
        return f"yes (sidecar reports: {policy['error']})"
    seen, current = policy.get("generation"), store.generation()
    if not isinstance(seen, int) or seen < current:
        return f"yes (sidecar at version {seen}, store at {current})"
    return "yes"


def _warn(lines) -> None:
    for line in lines:
        click.echo(f"warning: {line}", err=True)


def _known_app_ids(home, store) -> set[str]:
    known = {b.app_id for b in store.bindings()}
    known |= {r.app_id for r in Registry(home).records()}
    for name in store.names(KIND):
        known.add(name)
        document = store.get(KIND, name) or {}
        for rule in (document.get("spec") or {}).get("rules") or []:
            for caller in rule.get("callers") or []:
                if isinstance(caller, dict) and isinstance(caller.get("appID"), str):
                    known.add(caller["appID"])
    known.discard(WILDCARD)
    return known


def _warn_unknown_tools(home, store, server: str, names) -> None:
    """Tool names the server has never listed (as its sidecar last saw them) are probably typos;
    kept, since a server may add tools later."""
    binding = _registration(store, server)
    seen = read_seen_tools(
        seen_tools_path(home, binding.namespace if binding else "default", server)
    )
    if not seen:
        return
    for name in names:
        if name == WILDCARD or name in seen:
            continue
        close = difflib.get_close_matches(name, seen, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _warn(
            [f"{server} has not listed a tool {name!r} (it listed: {', '.join(seen)}) (kept){hint}"]
        )


def _warn_unknown_caller(home, store, ref: CallerRef) -> None:
    if ref.app_id == WILDCARD:
        return
    known = _known_app_ids(home, store)
    if ref.app_id in known:
        return
    close = difflib.get_close_matches(ref.app_id, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    _warn([f"no app {ref.app_id!r} is known to this mesh yet (kept: it may start later){hint}"])


def _caller(caller: str, caller_namespace: str | None) -> CallerRef:
    """``--caller app``, ``--caller ns/app`` or ``--caller app --caller-namespace ns``."""
    if caller_namespace is not None:
        if "/" in caller:
            raise click.UsageError("give the namespace once: --caller NS/APP or --caller-namespace")
        caller = f"{caller_namespace}/{caller}"
    try:
        return caller_ref(caller)
    except ResourceInvalid as exc:
        raise fail(exc) from None


caller_namespace_option = click.option(
    "--caller-namespace",
    help="The caller's namespace (default: the MCP server's own; '*' for any namespace).",
)


def _load(store, name: str) -> MCPServerAccessPolicy:
    document = store.get(KIND, name)
    if document is None:
        raise click.ClickException(
            f"MCP server {name!r} is not registered {looked_in(store.home)}; "
            f"run 'trustmesh mcpserver create {name}'"
        )
    try:
        return parse_policy(document, server_namespace=_server_namespace(store, name))
    except ResourceInvalid as exc:
        raise click.ClickException(f"the stored policy of {name!r} is invalid: {exc}") from None


@click.group("mcpserver")
def mcpserver_group() -> None:
    """MCP servers and their tool-level access policies."""


@mcpserver_group.command("create")
@click.argument("name")
@click.option(
    "--endpoint",
    "--path",
    "endpoints",
    multiple=True,
    help="The app's MCP endpoint (default /mcp); repeat for several (e.g. /mcp and /sse).",
)
@click.option("--namespace", default="default", show_default=True)
@home_option
@wait_options
def mcpserver_create(name, endpoints, namespace, home, wait, wait_timeout) -> None:
    """Register App ID NAME as an MCP server, with a deny-all access policy."""
    paths = []
    try:
        validate_app_id(name)
        validate_namespace(namespace)
    except IdentityError as exc:
        raise fail(exc) from None
    for endpoint in endpoints or ("/mcp",):
        try:
            path = "/" + normalize_method(endpoint.lstrip("/"))
        except Exception as exc:  # InvalidPath and friends: one line, no traceback
            raise click.ClickException(f"invalid --endpoint {endpoint!r}: {exc}") from None
        if path not in paths:
            paths.append(path)
    home_path, store = open_store(home)
    with store.change() as change:
        binding = store.binding(name, namespace) or AppBinding(name, namespace)
        binding.mcp_server = {"path": paths[0], "paths": paths}
        change.put_binding(binding)
        if store.get(KIND, name) is None:
            change.put(KIND, name, to_document(MCPServerAccessPolicy.deny_all(name)))
    click.echo(f"MCP server {name} registered at {', '.join(paths)} (deny-all policy)")
    report_change(home_path, change.generation, wait, wait_timeout)


@mcpserver_group.command("delete")
@click.argument("name")
@home_option
@wait_options
def mcpserver_delete(name, home, wait, wait_timeout) -> None:
    """Unregister MCP server NAME and delete its access policy."""
    home_path, store = open_store(home)
    with store.change() as change:
        registered = [b for b in store.bindings() if b.app_id == name and b.mcp_server]
        had_policy = change.delete(KIND, name)
        for binding in registered:
            binding.mcp_server = None
            change.put_binding(binding)
    if not registered and not had_policy:
        raise click.ClickException(f"MCP server {name!r} is not registered")
    click.echo(
        f"MCP server {name} deleted: its tool policy is gone, and requests to it are judged by "
        "the App ID ACL alone"
    )
    report_change(home_path, change.generation, wait, wait_timeout)


@mcpserver_group.command("list")
@home_option
def mcpserver_list(home) -> None:
    """List the registered MCP servers, their endpoints, and whether their policy is enforced."""
    home_path, store = open_store(home)
    servers = [b for b in store.bindings() if b.mcp_server is not None]
    names = sorted({b.app_id for b in servers} | set(store.names(KIND)))
    if not names:
        click.echo("no MCP servers registered")
        return
    rows = [("NAME", "NAMESPACE", "ENDPOINTS", "RULES", "ENFORCED")]
    for name in names:
        binding = next((b for b in servers if b.app_id == name), None)
        document = store.get(KIND, name)
        rules = len((document or {}).get("spec", {}).get("rules") or []) if document else "-"
        problems = not_enforced(home_path, store, name)
        rows.append(
            (
                name,
                binding.namespace if binding else "-",
                ",".join(_endpoints(binding)) if binding else "-",
                str(rules),
                "yes" if not problems else "no: " + "; ".join(problems),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@mcpserver_group.group("access")
def access_group() -> None:
    """Inspect and change which caller App IDs may use which tools."""


def _describe(policy: MCPServerAccessPolicy) -> str:
    """One line per rule (its grants joined), so no rule ever shows twice."""
    if not policy.rules:
        return f"{policy.name}: deny-all (no rules)"
    lines = [f"{policy.name}: {len(policy.rules)} rule(s)"]
    for index, rule in enumerate(policy.rules):
        callers = ", ".join(c.label() for c in rule.callers)
        grants = []
        for g in rule.grants:
            scopes = f" (scopes: {' '.join(g.required_scopes)})" if g.required_scopes else ""
            grants.append(f"{g.capability}={','.join(g.names)}{scopes}")
        lines.append(f"  rules[{index}] callers={callers} {'; '.join(grants) or '(no grants)'}")
    return "\n".join(lines)


@access_group.command("get")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "yaml"]), default="text")
@home_option
def access_get(name, output, home) -> None:
    """Show the access policy of MCP server NAME."""
    home_path, store = open_store(home)
    policy = _load(store, name)
    if output == "yaml":
        click.echo(yaml.safe_dump(to_document(policy), sort_keys=False), nl=False)
    else:
        click.echo(_describe(policy))
    _warn(not_enforced(home_path, store, name))


@access_group.command("list")
@home_option
def access_list(home) -> None:
    """Show every MCP server's access policy."""
    home_path, store = open_store(home)
    names = store.names(KIND)
    if not names:
        click.echo(f"no MCP servers registered {looked_in(home_path)}")
    for name in names:
        click.echo(_describe(_load(store, name)))
        _warn(not_enforced(home_path, store, name))


class Shadowed(click.ClickException):
    """A new grant that an older one would keep deciding: refused, nothing written."""


def _shadowed(policy, ref: CallerRef, capability: str, names, scopes) -> list[str]:
    """The names whose first matching grant for ``ref`` does not carry exactly ``scopes``."""
    who = Caller(*ref.effective(policy.server_namespace))
    return [n for n in names if required_scopes(policy, who, capability, n) != tuple(scopes)]


def _shadow_message(before, ref: CallerRef, capability: str, names, scopes) -> str:
    who = Caller(*ref.effective(before.server_namespace))
    word = {"tools": "tool", "resources": "resource", "prompts": "prompt"}[capability]
    held = []
    for name in names:
        decision = authorize_item(before, who, capability, name)
        held_scopes = required_scopes(before, who, capability, name) or ()
        how = f"with scopes {' '.join(held_scopes)}" if held_scopes else "without required scopes"
        held.append(f"{word} {name!r} {how} ({decision.rule})")
    wanted = f"scopes {' '.join(scopes)}" if scopes else "no scopes"
    return (
        f"caller {ref.label()!r} already holds {', '.join(held)}; that grant comes first and "
        f"would keep deciding, so the new one ({wanted}) would never apply. Run the same "
        "command with --replace to move these names to the new grant."
    )


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
    _warn(not_enforced(home_path, store, name, check_version=wait))


@access_group.command("grant")
@click.argument("name")
@click.option(
    "--caller", required=True, help="Caller App ID (or NS/APP-ID), or '*' for any caller."
)
@caller_namespace_option
@click.option("--allow-tools", help="Comma-separated tool names, or '*'.")
@click.option("--allow-resources", help="Comma-separated resource URIs, or '*'.")
@click.option("--allow-prompts", help="Comma-separated prompt names, or '*'.")
@click.option("--required-scopes", help="OAuth scopes a bearer token must carry for these items.")
@click.option(
    "--replace",
    "replace_existing",
    is_flag=True,
    help="Move the names out of the caller's other grants (e.g. to add --required-scopes).",
)
@home_option
@wait_options
def access_grant(
    name,
    caller,
    caller_namespace,
    allow_tools,
    allow_resources,
    allow_prompts,
    required_scopes,
    replace_existing,
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
    ref = _caller(caller, caller_namespace)
    scopes = tuple(_names(required_scopes) or ())
    home_path, store = open_store(home)
    _warn_unknown_caller(home_path, store, ref)
    if wanted["tools"]:
        _warn_unknown_tools(home_path, store, name, wanted["tools"])

    def edit(policy):
        for capability, names in wanted.items():
            if not names:
                continue
            before = policy
            if replace_existing:
                policy = revoke(policy, ref, capability, names)
            policy = grant(policy, ref, capability, names, required_scopes=scopes)
            shadowed = _shadowed(policy, ref, capability, names, scopes)
            if shadowed:
                raise Shadowed(_shadow_message(before, ref, capability, shadowed, scopes))
        return policy

    _edit(home, name, edit, wait, wait_timeout)


@access_group.command("revoke")
@click.argument("name")
@click.option("--caller", required=True, help="Caller App ID (or NS/APP-ID), or '*'.")
@caller_namespace_option
@click.option("--allow-tools", help="Tool names to take away.")
@click.option("--allow-resources", help="Resource URIs to take away.")
@click.option("--allow-prompts", help="Prompt names to take away.")
@click.option("--all", "everything", is_flag=True, help="Remove the caller's whole rule.")
@home_option
@wait_options
def access_revoke(
    name,
    caller,
    caller_namespace,
    allow_tools,
    allow_resources,
    allow_prompts,
    everything,
    home,
    wait,
    wait_timeout,
) -> None:
    """Take grants away from CALLER on NAME."""
    wanted = {
        "tools": _names(allow_tools),
        "resources": _names(allow_resources),
        "prompts": _names(allow_prompts),
    }
    if everything == any(wanted.values()):
        raise click.UsageError("give either --all or names with --allow-tools/-resources/-prompts")
    ref = _caller(caller, caller_namespace)

    def edit(policy):
        if everything:
            return revoke_all(policy, ref)
        for capability, names in wanted.items():
            if names:
                policy = revoke(policy, ref, capability, names)
        return policy

    _edit(home, name, edit, wait, wait_timeout)


@access_group.command("test")
@click.argument("name")
@click.option("--caller", required=True, help="Caller App ID, or NS/APP-ID.")
@caller_namespace_option
@click.option("--tool")
@click.option("--resource")
@click.option("--prompt")
@click.option("--scopes", help="The OAuth scopes the caller's token carries (comma-separated).")
@home_option
def access_test(name, caller, caller_namespace, tool, resource, prompt, scopes, home) -> None:
    """Preview a verdict with the sidecar's own decision function (exit 0 allowed, 1 denied)."""
    asked = [
        (c, n) for c, n in (("tools", tool), ("resources", resource), ("prompts", prompt)) if n
    ]
    if len(asked) != 1:
        raise click.UsageError("give exactly one of --tool, --resource, --prompt")
    ref = _caller(caller, caller_namespace)
    if WILDCARD in (ref.app_id, ref.namespace):
        raise click.UsageError("--caller names one caller for a test, not '*'")
    held = None if scopes is None else tuple(_names(scopes) or ()) if scopes else ()
    home_path, store = open_store(home)
    capability, item = asked[0]
    policy = _load(store, name)
    who = Caller(*ref.effective(policy.server_namespace))
    decision = authorize_item(policy, who, capability, item)
    rule = f" [{decision.rule}]" if decision.rule else ""
    needed = required_scopes(policy, who, capability, item) or ()
    if not decision.allowed:
        verdict, allowed = "DENIED", False
    elif not needed:
        verdict, allowed = "ALLOWED", True
    elif held is None:
        verdict, allowed = f"ALLOWED only with scope {' '.join(needed)}", True
    else:
        missing = missing_scopes(needed, held)
        allowed = not missing
        verdict = "ALLOWED" if allowed else "DENIED"
        if not allowed:
            carried = " ".join(held) or "none"
            decision = type(decision)(
                False, "bearer", "insufficient_scope",
                f"{decision.message}, but it requires scope {' '.join(needed)}: the token lacks "
                f"{' '.join(missing)} (it carries: {carried})", 403, decision.rule,
            )  # fmt: skip
    click.echo(f"{verdict}: {decision.message or f'{caller} may use {item}'}{rule}")
    _warn(not_enforced(home_path, store, name))
    raise SystemExit(0 if allowed else 1)
