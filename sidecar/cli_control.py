"""``trustmesh configuration|apply|appid``: the control plane, as the hosted CLI spells it.

Every writing command validates first and then writes the whole change at once (one store
version), so a refused command changes nothing. ``--wait`` returns when every running sidecar
reports that version.
"""

from __future__ import annotations

import click
import yaml

from identity import IdentityError, validate_app_id, validate_namespace

from .cli_home import home_option
from .cli_support import (
    admin_status,
    change_line,
    closest,
    expiry_text,
    fail,
    known_app_ids,
    looked_in,
    open_store,
    report_change,
    report_replaced,
    wait_options,
    warn_unknown_app_ids,
)
from .errors import ResourceInvalid
from .policy.configuration import (
    build_configuration,
    configuration_to_document,
)
from .registry import Registry
from .state.apply import read_documents, store_documents
from .state.documents import DocumentError
from .state.store import AppBinding


# -- configuration -------------------------------------------------------------------------------
@click.group("configuration")
def configuration_group() -> None:
    """Access-control configurations (Dapr Configuration resources)."""


def _parse_policy_option(values: tuple[str, ...]) -> list[tuple[str, str]]:
    policies = []
    for value in values:
        app_id, sep, action = value.rpartition(":")
        if not sep or not app_id or action.lower() not in ("allow", "deny"):
            raise click.BadParameter(
                f"{value!r}: use APPID:allow or APPID:deny", param_hint="--policy"
            )
        policies.append((app_id, action.lower()))
    return policies


@configuration_group.command("create")
@click.argument("name")
@click.option("--default-action", type=click.Choice(["allow", "deny"]), required=True)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="APPID:allow|deny",
    help="A per-caller default; repeatable.",
)
@click.option("--trust-domain", default="public", show_default=True)
@click.option(
    "--namespace",
    default="default",
    show_default=True,
    help="Namespace of the callers named by --policy.",
)
@home_option
@wait_options
def configuration_create(
    name, default_action, policies, trust_domain, namespace, home, wait, wait_timeout
) -> None:
    """Create (or replace) configuration NAME."""
    try:
        config = build_configuration(
            name, default_action, _parse_policy_option(policies), trust_domain, namespace
        )
    except ResourceInvalid as exc:
        raise fail(exc) from None
    path, store = open_store(home)
    callers = [app_id for app_id, _ in _parse_policy_option(policies)]
    warn_unknown_app_ids(path, store, callers, namespace)
    with store.change() as change:
        change.put("Configuration", name, configuration_to_document(config))
    report_replaced(change.replaced)
    report_change(path, change.generation, wait, wait_timeout)


@configuration_group.command("get")
@click.argument("name")
@home_option
def configuration_get(name, home) -> None:
    """Print configuration NAME as YAML."""
    path, store = open_store(home)
    doc = store.get("Configuration", name)
    if doc is None:
        raise click.ClickException(f"configuration {name!r} not found {looked_in(path)}")
    click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)


@configuration_group.command("list")
@home_option
def configuration_list(home) -> None:
    """List configurations and the App IDs they are attached to."""
    path, store = open_store(home)
    if not store.names("Configuration"):
        click.echo(f"no configurations {looked_in(path)}")
        return
    bound: dict[str, list[str]] = {}
    for binding in store.bindings():
        if binding.configuration:
            bound.setdefault(binding.configuration, []).append(binding.app_id)
    rows = [("NAME", "DEFAULT ACTION", "POLICIES", "APP IDS")]
    for name in store.names("Configuration"):
        spec = (store.get("Configuration", name) or {}).get("spec") or {}
        acl = spec.get("accessControl") or {}
        rows.append(
            (
                name,
                str(acl.get("defaultAction", "-")),
                str(len(acl.get("policies") or [])),
                ",".join(bound.get(name, [])) or "-",
            )
        )
    _table(rows)


@configuration_group.command("delete")
@click.argument("name")
@home_option
@wait_options
def configuration_delete(name, home, wait, wait_timeout) -> None:
    """Delete configuration NAME (refused while an App ID uses it)."""
    path, store = open_store(home)
    users = [b.app_id for b in store.bindings() if b.configuration == name]
    if users:
        raise click.ClickException(
            f"configuration {name!r} is attached to {', '.join(users)}; "
            "attach another one with 'trustmesh appid update' first"
        )
    if store.get("Configuration", name) is None:  # checked first: a miss writes nothing
        raise click.ClickException(f"configuration {name!r} not found {looked_in(path)}")
    with store.change() as change:
        if not change.delete("Configuration", name):
            raise click.ClickException(f"configuration {name!r} not found {looked_in(path)}")
    report_change(path, change.generation, wait, wait_timeout)


# -- apply ---------------------------------------------------------------------------------------
@click.command("apply")
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file; repeatable.",
)
@home_option
@wait_options
def apply_command(files, home, wait, wait_timeout) -> None:
    """Apply Configuration, Component and MCPServerAccessPolicy documents.

    All documents are validated before any is written; re-applying a name replaces it.
    """
    try:
        accepted = read_documents(files)
    except DocumentError as exc:
        raise fail(exc) from None
    if not accepted:
        raise click.ClickException("no documents to apply")
    path, store = open_store(home)
    replaced: dict[tuple[str, str], int] = {}
    generation = store_documents(store, accepted, replaced=replaced)
    for document in accepted:
        click.echo(change_line(document.kind, document.name, replaced))
    report_change(path, generation, wait, wait_timeout)


# -- appid ---------------------------------------------------------------------------------------
@click.group("appid")
def appid_group() -> None:
    """App IDs: attach configurations, inspect running sidecars."""


def _check_app(app_id: str, namespace: str) -> None:
    try:
        validate_app_id(app_id)
        validate_namespace(namespace)
    except IdentityError as exc:
        raise fail(exc) from None


@appid_group.command("update")
@click.argument("app_id")
@click.option("--app-config", required=True, help="Configuration to attach ('' to detach).")
@click.option("--namespace", default="default", show_default=True)
@home_option
@wait_options
def appid_update(app_id, app_config, namespace, home, wait, wait_timeout) -> None:
    """Attach configuration --app-config to APP_ID."""
    _check_app(app_id, namespace)
    path, store = open_store(home)
    if app_config and store.get("Configuration", app_config) is None:
        raise click.ClickException(
            f"configuration {app_config!r} not found {looked_in(path)}; create it with "
            "'trustmesh configuration create' or 'trustmesh apply -f'"
        )
    warn_unknown_app_ids(path, store, [app_id], namespace)
    with store.change() as change:
        binding = store.binding(app_id, namespace) or AppBinding(app_id, namespace)
        binding.configuration = app_config or None
        change.put_binding(binding)
    report_change(path, change.generation, wait, wait_timeout)


def _app_rows(home, store, only: str | None, namespace: str | None):
    from .cli_mcp import mcp_column

    registry = Registry(home)
    running = {(r.namespace, r.app_id): r for r in registry.records()}
    bindings = {(b.namespace, b.app_id): b for b in store.bindings()}
    keys = sorted(set(running) | set(bindings))
    if only is not None:
        keys = [k for k in keys if k == (namespace, only)] or [(namespace, only)]
    rows = []
    for key in keys:
        record, binding = running.get(key), bindings.get(key)
        status = admin_status(record) if record is not None else None
        svid = (status or {}).get("svid") or {}
        cell, sentence = _policy_in_force(record, status)
        rows.append(
            {
                "app_id": key[1],
                "namespace": key[0],
                "configuration": (binding.configuration if binding else None) or "-",
                "mcp_server": mcp_column(store, key[1], binding, record, status),
                "running": f"pid {record.pid}" if record else "no",
                "http": record.http if record else "-",
                "inbound": (record.inbound or "-") if record else "-",
                "svid_expiry": expiry_text(svid.get("not_after")),
                "policy": sentence,
                "policy_cell": cell,
            }
        )
    return rows


def _policy_in_force(record, status: dict | None) -> tuple[str, str]:
    """What the app's sidecar enforces, said plainly, as (table cell, full sentence).

    A stored policy no sidecar runs is not in force, and a sidecar refusing a newer version
    still enforces the older one: both are said, never left for the reader to infer.
    """
    if record is None:
        return "not enforced", "not enforced: no running sidecar"
    if status is None:
        return "unknown", "unknown: the sidecar does not answer"
    policy = status.get("policy") or {}
    version, error = policy.get("generation"), policy.get("error")
    enforced = f"version {version}" if isinstance(version, int) else "none: denies every call"
    if not error:
        return enforced, enforced
    refused = policy.get("error_generation")
    what = f"version {refused}" if isinstance(refused, int) else "a newer version"
    return f"{enforced}; refusing {what}", f"{enforced}; refusing {what}: {error}"


@appid_group.command("get")
@click.argument("app_id")
@click.option("--namespace", default="default", show_default=True)
@home_option
def appid_get(app_id, namespace, home) -> None:
    """Show one App ID: configuration, running sidecar, SVID expiry."""
    _check_app(app_id, namespace)
    path, store = open_store(home)
    known = known_app_ids(path, store, namespace)
    if app_id not in known:
        close = closest(app_id, known)
        hint = f"; did you mean {close!r}?" if close else ""
        raise click.ClickException(
            f"App ID {app_id!r} not found {looked_in(path)} in namespace {namespace!r} "
            f"(no binding, running sidecar or MCP server){hint}"
        )
    (row,) = _app_rows(path, store, app_id, namespace)
    del row["policy_cell"]  # the table's short form of "policy"
    width = max(len(k) for k in row)
    for key, value in row.items():
        click.echo(f"{key.replace('_', ' '):<{width}}  {value}")


@appid_group.command("list")
@home_option
def appid_list(home) -> None:
    """List App IDs known to the store or running."""
    path, store = open_store(home)
    rows = _app_rows(path, store, None, None)
    if not rows:
        click.echo(f"no App IDs {looked_in(path)}")
        return
    header = (
        "APP ID",
        "NAMESPACE",
        "CONFIGURATION",
        "MCP",
        "RUNNING",
        "HTTP",
        "SVID EXPIRY",
        "POLICY IN FORCE",
    )
    _table(
        [header]
        + [
            (
                r["app_id"],
                r["namespace"],
                r["configuration"],
                r["mcp_server"],
                r["running"],
                r["http"],
                r["svid_expiry"],
                r["policy_cell"],
            )
            for r in rows
        ]
    )


def _table(rows) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
