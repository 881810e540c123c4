"""Hosts on one machine: network namespaces joined by a bridge, each with its own hosts file.

Everything is made by :class:`Hosts` and removed by its ``close`` (also on failure):

* a "switch" namespace holding a bridge, and one namespace per host, all named
  ``tm<unique>-<label>`` so nothing collides with what exists or with a parallel run;
* one veth pair per host, created with both ends already inside namespaces (one end in the host,
  the other on the switch's bridge), so no interface ever appears in the machine's own namespace;
* addresses from one private /24 (``10.<random>.<random>.0/24``) that exist only inside those
  namespaces and are routed nowhere else;
* ``/etc/netns/<namespace>/hosts`` for each host (``ip netns exec`` bind-mounts it over
  ``/etc/hosts``): the cluster DNS names of every sidecar and of the CA. ``/etc/netns`` itself is
  created only if missing, and then removed again.

:func:`unavailable_reason` says why namespaces cannot be used here (not root, no ``ip``, a
sandbox that refuses them), for a clear skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def unavailable_reason() -> str | None:
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"tmprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except OSError as exc:
        return f"network namespaces are not permitted here ({exc})"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except OSError as exc:
        return f"bridges cannot be made in a network namespace here ({exc})"
    finally:
        with contextlib.suppress(OSError):
            _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class Host:
    label: str
    netns: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Run a command on this host."""
        return ["ip", "netns", "exec", self.netns]


class Hosts:
    def __init__(self, labels: list[str]) -> None:
        self.tag = f"tm{secrets.token_hex(3)}"
        octets = secrets.randbelow(50) + 200, secrets.randbelow(250) + 1
        self.network = ipaddress.ip_network(f"10.{octets[0]}.{octets[1]}.0/24")
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._made_netns_etc = False
        self._labels = labels

    def __enter__(self) -> Hosts:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        addresses = self.network.hosts()
        next(addresses)  # .1 stays unused: no gateway, nothing routes out
        for index, label in enumerate(self._labels):
            netns = f"{self.tag}-{label}"
            self._add_netns(netns)
            inside, port = f"{self.tag}h{index}", f"{self.tag}p{index}"
            _ip("link", "add", inside, "netns", netns, "type", "veth",
                "peer", "name", port, "netns", self.switch)  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            address = str(next(addresses))
            _ip("-n", netns, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", inside)
            _ip("-n", netns, "link", "set", inside, "up")
            self.hosts[label] = Host(label, netns, address)

    def write_hosts_files(self, names: dict[str, str], only: str | None = None) -> None:
        """``names``: DNS name → host label. Every host sees every name (one cluster DNS), or
        just host ``only`` gets them. Written in place: processes already running on a host
        (whose /etc/hosts is a bind mount of this file) see the change on their next lookup."""
        if not NETNS_ETC.exists():
            NETNS_ETC.mkdir(mode=0o755)
            self._made_netns_etc = True
        lines = ["127.0.0.1 localhost"]
        lines += [f"{self.hosts[label].address} {name}" for name, label in sorted(names.items())]
        for host in self.hosts.values():
            if only is not None and host.label != only:
                continue
            directory = NETNS_ETC / host.netns
            directory.mkdir(exist_ok=True)
            with (directory / "hosts").open("r+" if (directory / "hosts").exists() else "w") as f:
                f.seek(0)
                f.truncate()
                f.write("\n".join(lines) + "\n")

    def close(self) -> None:
        for name in reversed(self._namespaces):
            with contextlib.suppress(OSError):
                _ip("netns", "del", name)  # takes its veth ends (and the bridge) with it
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        self._namespaces.clear()
        if self._made_netns_etc:
            with contextlib.suppress(OSError):
                NETNS_ETC.rmdir()  # only if empty: another user's entries stay
            self._made_netns_etc = False
