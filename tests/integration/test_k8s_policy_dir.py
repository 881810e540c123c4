"""``--policy-dir``: policy from a ConfigMap-shaped directory that kubelet swaps atomically.

Pins: a set is read whole from the one directory ``..data`` names (never half of one update and
half of the next, however fast updates come); a broken set is refused and the sidecar keeps the
last good policy; and a real sidecar enforces each published set, the upstream's request counter
proving refused calls never arrived.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import trio
import yaml

from identity import AppIdentity
from sidecar.state.policy_builder import deny_all_policy
from sidecar.state.policy_dir import PolicyDirStore
from sidecar.state.store import StoreBusy
from sidecar.state.watcher import PolicyHolder, watch_policy
from tests._support import k8s_quickstart as qs
from tests._support.k8s_configmap import publish

ME = AppIdentity("public", "default", "server")


def _docs(*documents: dict) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)


def _app_id(name: str, configuration: str | None = None, mcp: bool = False) -> dict:
    spec: dict = {}
    if configuration:
        spec["configuration"] = configuration
    if mcp:
        spec["mcpServer"] = {"path": "/mcp"}
    return {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "AppID",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def _set(configuration: dict, generation: int) -> dict[str, str]:
    name = configuration["metadata"]["name"]
    return {
        "configurations.yaml": _docs(configuration),
        "appids.yaml": _docs(_app_id("server", name)),
        "generation": f"{generation}\n",
    }


def test_snapshot_reads_every_kind_and_the_generation(tmp_path) -> None:
    binding = {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "AppIdentityBinding",
        "metadata": {"name": "runner"},
        "spec": {"spiffeID": "spiffe://public/ns/default/sa/runner", "appID": "client"},
    }
    state_store = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []},
    }
    files = _set(qs.configuration("deny-client", "allow", deny="client"), 7)
    files["identity.yaml"] = _docs(binding, state_store)
    publish(tmp_path / "cm", files)
    snapshot = PolicyDirStore(tmp_path / "cm").snapshot("server", "default")
    assert snapshot.generation == 7
    assert snapshot.binding is not None and snapshot.binding.configuration == "deny-client"
    assert set(snapshot.resources) == {
        ("Configuration", "deny-client"),
        ("AppIdentityBinding", "runner"),
    }
    assert PolicyDirStore(tmp_path / "cm").snapshot("other", "default").binding is None


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "kind: [unclosed"}, "not valid YAML"),
        ({"a.yaml": _docs({"kind": "Secret", "metadata": {"name": "x"}})}, "unsupported kind"),
        (
            {"a.yaml": _docs(qs.configuration("c", "allow"), qs.configuration("c", "deny"))},
            "given twice",
        ),
        ({"a.yaml": _docs({**_app_id("server"), "spec": {"config": "x"}})}, "unknown field"),
        ({"generation": "seven"}, "not an integer"),
    ],
    ids=["bad-yaml", "unknown-kind", "duplicate-resource", "bad-appid", "bad-generation"],
)
def test_a_broken_set_is_refused_whole(tmp_path, files, message) -> None:
    publish(tmp_path / "cm", files)
    with pytest.raises(Exception, match=message):
        PolicyDirStore(tmp_path / "cm").snapshot("server", "default")


def test_never_reads_half_of_one_update_and_half_of_the_next(tmp_path) -> None:
    directory = tmp_path / "cm"

    def version(n: int) -> dict[str, str]:
        return {
            f"{part}.yaml": _docs(qs.configuration(f"{part}-{n}", "allow")) for part in "abcd"
        } | {"generation": str(n)}

    publish(directory, version(0))
    store = PolicyDirStore(directory)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            publish(directory, version(n))

    thread = threading.Thread(target=writer)
    thread.start()
    seen, busy = set(), 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                snapshot = store.snapshot("server", "default")
            except StoreBusy:
                busy += 1
                continue
            names = {name for (_, name) in snapshot.resources}
            suffixes = {name.rsplit("-", 1)[1] for name in names}
            assert len(names) == 4 and suffixes == {str(snapshot.generation)}, names
            seen.add(snapshot.generation)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 10, f"the reader saw too few distinct sets ({len(seen)}, busy {busy})"


async def test_watcher_applies_swaps_and_keeps_the_last_good_set(tmp_path) -> None:
    directory = tmp_path / "cm"
    publish(directory, _set(qs.configuration("deny-client", "allow", deny="client"), 1))
    holder = PolicyHolder(deny_all_policy("not loaded yet"))
    store = PolicyDirStore(directory)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: watch_policy(
                holder, store, ME, None, poll_interval=0.01, task_status=task_status
            )
        )
        assert holder.generation == 1 and holder.current.sources["configuration"] == "'deny-client'"
        publish(directory, {"configurations.yaml": "kind: [broken", "generation": "2"})
        with trio.fail_after(5):
            while holder.error is None:
                await trio.sleep(0.01)
        assert "not valid YAML" in holder.error
        assert holder.generation == 1  # still the last good set
        publish(directory, _set(qs.configuration("open", "allow"), 3))
        with trio.fail_after(5):
            while holder.generation != 3:
                await trio.sleep(0.01)
        assert holder.error is None and holder.current.sources["configuration"] == "'open'"
        nursery.cancel_scope.cancel()


def test_a_sidecar_enforces_each_published_set(mesh) -> None:
    directory = mesh.root / "cm"
    publish(directory, _set(qs.configuration("open", "allow"), 1))
    app = mesh.procs.app()
    server = mesh.sidecar(
        "server", app_port=app.ready["port"], extra=["--policy-dir", str(directory)]
    )
    client = mesh.sidecar("client")
    url = f"{client.url()}/v1.0/invoke/server/method/echo"
    count = lambda: httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]  # noqa: E731

    def status() -> dict:
        return httpx.get(f"http://{server.ready['admin']}/v1/status").json()["policy"]

    def await_generation(generation: int) -> None:
        deadline = time.monotonic() + 10
        while status()["generation"] != generation:
            assert time.monotonic() < deadline, status()
            time.sleep(0.02)

    assert httpx.post(url, content=b"x").status_code == 200
    publish(directory, _set(qs.configuration("deny-client", "allow", deny="client"), 2))
    await_generation(2)
    before = count()
    assert httpx.post(url, content=b"x").status_code == 403
    # A broken update is refused: the deny stays in force, and status says why.
    publish(directory, {"configurations.yaml": "kind: [broken", "generation": "3"})
    deadline = time.monotonic() + 10
    while status()["error"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status()["generation"] == 2
    assert httpx.post(url, content=b"x").status_code == 403
    assert count() == before
    publish(directory, _set(qs.configuration("open", "allow"), 4))
    await_generation(4)
    assert httpx.post(url, content=b"x").status_code == 200
    assert count() == before + 1
