"""``trustmesh audit verify|tail``: check a sidecar's audit trail, and read it.

``verify`` asks the running sidecar for its head *before* reading the files, so records flushed
meanwhile only make the files longer than the head, never shorter: a log that ends before the
head was truncated. Exit 0 only when everything checked holds.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import click

from .audit import log_files, verify_files
from .audit.sinks import SEGMENT_DIGITS
from .audit.tail import Filter, format_line, parse_duration
from .audit.verify import check_head, verify_copied_checkpoint
from .cli_home import home_option, resolve_cli_home


def _current_path(home: Path, app_id: str, namespace: str) -> Path:
    return home / "audit" / f"{namespace}.{app_id}.jsonl"


def _is_segment(path: Path) -> bool:
    parts = path.name.split(".")
    return len(parts) >= 3 and len(parts[-2]) == SEGMENT_DIGITS and parts[-2].isdigit()


def _log_files_for(files: tuple[str, ...], app_id: str | None, namespace: str, home: Path):
    if files and app_id:
        raise click.UsageError("give FILE… or --app-id, not both")
    return _log_files(files, app_id, namespace, home)


def _log_files(files: tuple[str, ...], app_id: str | None, namespace: str, home: Path):
    if app_id and not files:
        current = _current_path(home, app_id, namespace)
        found = log_files(current)
        if not found:
            raise click.ClickException(f"no audit log for {namespace}/{app_id} under {home}")
        return found, current
    if not files:
        raise click.UsageError("name the log: FILE… or --app-id ID")
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise click.ClickException(f"no such audit log file: {path}")
    if len(paths) == 1 and not _is_segment(paths[0]):
        return log_files(paths[0]), paths[0]  # the current file and its rotated segments
    return paths, None


def _named_owner(paths: list[Path]) -> tuple[str, str]:
    """(namespace, App ID) that the sidecar's file names say (``<ns>.<app-id>[.<n>].jsonl``)."""
    owners = set()
    for path in paths:
        parts = path.name.removesuffix(".jsonl").split(".")
        if _is_segment(path):
            parts = parts[:-1]
        if len(parts) != 2 or not all(parts):
            raise click.ClickException(
                f"cannot tell whose log {path} is: its name is not <namespace>.<app-id>.jsonl; "
                "pass --app-id (and --namespace) to say whose it must be"
            )
        owners.add((parts[0], parts[1]))
    if len(owners) != 1:
        raise click.ClickException(
            "the files named are the logs of different apps: "
            + ", ".join(f"{ns}/{app}" for ns, app in sorted(owners))
        )
    return owners.pop()


def _expected_owner(app_id: str, namespace: str, home: Path, policy_dir: str | None):
    """The App the log must belong to, with the identity map of the home (or policy dir) that
    says which SPIFFE IDs hold it."""
    from identity import IdentityError, validate_app_id, validate_namespace

    from .audit import AppOwner
    from .errors import SidecarError
    from .identity_source import identity_map_from_resources
    from .state.policy_dir import PolicyDirStore
    from .state.store import MeshStore

    try:
        validate_app_id(app_id)
        validate_namespace(namespace)
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None
    store = PolicyDirStore(Path(policy_dir)) if policy_dir else MeshStore(home)
    try:
        identity_map = identity_map_from_resources(store.snapshot(app_id, namespace).resources)
    except (SidecarError, IdentityError, OSError) as exc:
        raise click.ClickException(f"cannot read the identity map: {exc}") from None
    return AppOwner(namespace, app_id, identity_map)


def _running_head(home: Path, current: Path | None) -> tuple[dict | None, str | None]:
    """The running sidecar's audit head, when it writes ``current``; else (None, why not)."""
    if current is None:
        return None, "several files named: the running sidecar's head was not checked"
    from .cli_support import admin_status
    from .registry import Registry

    namespace, _, app_id = current.name.removesuffix(".jsonl").partition(".")
    try:
        record = Registry(home).lookup(app_id, namespace)
    except Exception:  # a broken registry must not hide the verdict on the files
        record = None
    if record is None:
        return None, "no running sidecar for this log: its head was not checked"
    status = admin_status(record, timeout=3.0)
    if status is None:
        return None, "the running sidecar did not answer: its head was not checked"
    audit = status.get("audit") or {}
    destination = audit.get("destination")
    if not destination or Path(destination).resolve() != current.resolve():
        return None, "the running sidecar writes another file: its head was not checked"
    return audit.get("head"), None


@click.group("audit")
def audit_group() -> None:
    """Verify and read the audit trail of decisions."""


@audit_group.command("verify")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--app-id",
    help="Verify this app's log under <home>/audit (with its rotated files). With FILE…: the "
    "app whose log they must be (default: the one their name <ns>.<app-id>.jsonl says).",
)
@click.option("--namespace", default="default", show_default=True)
@click.option(
    "--policy-dir",
    type=click.Path(file_okay=False),
    help="Read App ID bindings (who may own the log) from this directory instead of the home.",
)
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False),
    help="Trust bundle the checkpoint signatures must chain to (default <home>/ca/bundle.pem).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(dir_okay=False),
    help="A checkpoint line copied off the host: the log must still hold it.",
)
@click.option("--no-live", is_flag=True, help="Do not compare with the running sidecar's head.")
@home_option
def verify_command(
    files, app_id, namespace, policy_dir, bundle, checkpoint_file, no_live, home
) -> None:
    """Check sequence, hash chain and signed checkpoints, and that the log is the app's own
    (signed by a SPIFFE ID the identity map gives that App ID); name the first line that
    breaks."""
    from identity import IdentityError, TrustBundle

    home_path = resolve_cli_home(home, create=False)
    paths, current = _log_files(files, app_id, namespace, home_path)
    if not app_id:
        namespace, app_id = _named_owner(paths)
    owner = _expected_owner(app_id, namespace, home_path, policy_dir)
    bundle_path = Path(bundle) if bundle else home_path / "ca" / "bundle.pem"
    try:
        trust = TrustBundle.load(bundle_path)
    except IdentityError as exc:
        raise click.ClickException(f"{exc} (pass --bundle with the mesh's trust bundle)") from None
    copied = _load_checkpoint(checkpoint_file) if checkpoint_file else None
    head, why_not = (None, "--no-live given") if no_live else _running_head(home_path, current)
    watch = [int(head["seq"])] if head is not None else []
    if copied is not None:
        watch.append(int(copied["seq"]))
    report = verify_files(paths, trust, expected_owner=owner, watch=watch)
    if head is not None:
        check_head(report, int(head["seq"]), str(head["hash"]), "the running sidecar")
    if copied is not None:
        verify_copied_checkpoint(report, copied, trust)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.error is not None:
        raise click.ClickException(f"audit log broken: {report.error}")
    checked = ["chain", "sequence", f"{report.checkpoints} signed checkpoint(s)"]
    if head is not None:
        checked.append("the running sidecar's head")
    if copied is not None:
        checked.append("the copied checkpoint")
    click.echo(
        f"intact: {report.records} records in {len(paths)} file(s), head seq {report.head_seq} "
        f"({report.head_hash[:16]}…), owner {report.owner or '-'} (App {owner}); checked "
        + ", ".join(checked)
    )
    if why_not and not no_live:
        click.echo(f"note: {why_not}", err=True)


def _load_checkpoint(path: str) -> dict:
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        entry = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read checkpoint {path}: {exc}") from None
    if (
        not isinstance(entry, dict)
        or entry.get("kind") != "checkpoint"
        or not isinstance(entry.get("seq"), int)
    ):
        raise click.ClickException(f"{path} does not hold a checkpoint record")
    return entry


@audit_group.command("tail")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--app-id", help="This app's log under <home>/audit (default: every log there).")
@click.option("--namespace", default="default", show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new decisions as they arrive.")
@click.option("--denied", is_flag=True, help="Only denials.")
@click.option("--caller", help="Only requests from this caller (App ID or SPIFFE ID).")
@click.option("--tool", help="Only tools/call requests naming this tool.")
@click.option("--since", help="Only decisions newer than this (e.g. 90s, 10m, 2h, 1d).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@home_option
def tail_command(
    files, app_id, namespace, follow, denied, caller, tool, since, output, home
) -> None:
    """Print decisions, one line each (or the JSON records with -o json)."""
    home_path = resolve_cli_home(home, create=False)
    if files or app_id:
        paths, _ = _log_files_for(files, app_id, namespace, home_path)
    else:
        paths = sorted((home_path / "audit").glob("*.jsonl"))
        if not paths:
            raise click.ClickException(f"no audit logs under {home_path / 'audit'}")
    try:
        window = parse_duration(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    cutoff = None
    if window is not None:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window)
    wanted = Filter(denied=denied, caller=caller, tool=tool, since=cutoff)
    records = [r for path in paths for r in _read_records(path)]
    records.sort(key=lambda r: str(r.get("time", "")))
    for record in records:
        if wanted.matches(record):
            _emit(record, output)
    if follow:
        _follow(paths, wanted, output)


def _read_records(path: Path) -> list[dict]:
    out = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    for raw in data.split(b"\n")[:-1]:  # a torn last line is not a record
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _emit(record: dict, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(record, separators=(",", ":")))
    else:
        click.echo(format_line(record))
    sys.stdout.flush()


def _follow(paths: list[Path], wanted: Filter, output: str) -> None:
    """Poll the current files for appended lines; start over on one that rotated."""
    currents = [p for p in paths if not _is_segment(p)]
    positions = {p: (p.stat().st_ino, p.stat().st_size) if p.exists() else (0, 0) for p in currents}
    partial: dict[Path, bytes] = {p: b"" for p in currents}
    while True:
        time.sleep(0.2)
        for path in currents:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            inode, offset = positions[path]
            if stat.st_ino != inode or stat.st_size < offset:
                offset, partial[path] = 0, b""
            if stat.st_size == offset:
                positions[path] = (stat.st_ino, offset)
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                data = partial[path] + handle.read()
                offset = handle.tell()
            positions[path] = (stat.st_ino, offset)
            *complete, partial[path] = data.split(b"\n")
            for raw in complete:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(entry, dict) and wanted.matches(entry):
                    _emit(entry, output)
