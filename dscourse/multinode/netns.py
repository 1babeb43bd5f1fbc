"""Two (or more) "hosts" on one machine, each with its own network stack and address: Linux network namespaces.

Each node gets a namespace of its own; a Linux bridge inside a hub namespace joins their veth interfaces,
so node i has address ``10.10.0.(i+1)`` on interface ``eth0``, exactly like separate machines on one subnet
(nothing of the host's own network is touched). Needs root (``ip netns add``); :func:`available` probes for it.
Without it, :func:`nodes` falls back to loopback addresses (127.0.0.1, 127.0.0.2, ...) on the host's stack.

    with nodes(2) as cluster:
        cluster.mode          # "netns" or "loopback"
        cluster.addresses     # ["10.10.0.1", "10.10.0.2"]
        cluster.prefix(1)     # ["ip", "netns", "exec", "<name>"]: run a command "on" node 1
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field

SUBNET = "10.10.0"
IFNAME = "eth0"  # inside each node's namespace, like a real host's first NIC


def _ip(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)


def available() -> tuple[bool, str]:
    """Whether this machine lets us create network namespaces with veth pairs (root, no seccomp block)."""
    if os.environ.get("DSCOURSE_NETNS", "").strip() == "0":
        return False, "disabled by DSCOURSE_NETNS=0"
    if shutil.which("ip") is None:
        return False, "no 'ip' command (iproute2)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return False, "not root"
    name = f"dscourse-probe-{secrets.token_hex(3)}"
    try:
        r = _ip("netns", "add", name)
        if r.returncode != 0:
            return False, (r.stderr.strip().splitlines() or ["ip netns add failed"])[-1]
        veth = f"dsp{secrets.token_hex(3)}"
        r = _ip("-n", name, "link", "add", veth, "type", "veth", "peer", "name", veth + "p")
        if r.returncode != 0:
            return False, (r.stderr.strip().splitlines() or ["veth failed"])[-1]
        return True, "root, ip netns and veth work"
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    finally:
        try:
            _ip("netns", "del", name)
        except (OSError, subprocess.TimeoutExpired):
            pass


@dataclass
class Cluster:
    mode: str  # "netns" | "loopback"
    addresses: list[str]
    namespaces: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def ifname(self) -> str:
        """The interface the nodes talk over (what GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME must name)."""
        return IFNAME if self.mode == "netns" else "lo"

    def prefix(self, node: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[node]] if self.mode == "netns" else []


def _create(n: int) -> Cluster:
    tag = secrets.token_hex(3)
    hub = f"dscourse-{tag}-hub"
    names = [f"dscourse-{tag}-n{i}" for i in range(n)]
    created = []
    try:
        for ns in [hub, *names]:
            r = _ip("netns", "add", ns)
            if r.returncode != 0:
                raise OSError(r.stderr.strip())
            created.append(ns)
        steps = [("-n", hub, "link", "add", "br0", "type", "bridge"), ("-n", hub, "link", "set", "br0", "up")]
        for i, ns in enumerate(names):
            port = f"p{i}"
            steps += [("-n", hub, "link", "add", port, "type", "veth", "peer", "name", IFNAME, "netns", ns),
                      ("-n", hub, "link", "set", port, "master", "br0"), ("-n", hub, "link", "set", port, "up"),
                      ("-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", IFNAME),
                      ("-n", ns, "link", "set", IFNAME, "up"), ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            r = _ip(*step)
            if r.returncode != 0:
                raise OSError(f"ip {' '.join(step)}: {r.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired):
        _delete(created)
        raise
    return Cluster("netns", [f"{SUBNET}.{i + 1}" for i in range(n)], names + [hub], "root: network namespaces")


def _delete(namespaces: list[str]) -> None:
    for ns in namespaces:
        try:
            _ip("netns", "del", ns)  # deleting a namespace deletes its veth ends, and with them their peers
        except (OSError, subprocess.TimeoutExpired):
            pass


@contextmanager
def nodes(n: int = 2, use_netns: bool | None = None):
    """``n`` nodes with their own addresses; the namespaces are deleted on exit, whatever happens."""
    ok, why = available() if use_netns in (None, True) else (False, "loopback requested")
    if use_netns and not ok:
        raise OSError(f"network namespaces unavailable: {why}")
    cluster = None
    if ok:
        try:
            cluster = _create(n)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"namespace setup failed: {e}"
    if cluster is None:
        cluster = Cluster("loopback", [f"127.0.0.{i + 1}" for i in range(n)], [], why)
    try:
        yield cluster
    finally:
        _delete(cluster.namespaces)
