"""A real multi-node run on one machine: N "nodes", each a launcher of its own, rendezvous over TCP.

    from dscourse.multinode.simulate import run_nodes_job
    job = run_nodes_job("torchrun", "dscourse.scripts.train_step", ["--config", "ds.json", "--steps", "3"])
    job.cluster.mode, job.plan.commands, job.result.ranks

The commands are the ones :func:`dscourse.multinode.commands.build_plan` prints for the reader (with
``python -m ...`` in place of the entry points), started by :func:`dscourse.launch.run_nodes`. Where the
machine allows it (root), each node lives in a network namespace of its own with its own address
(:mod:`dscourse.multinode.netns`); elsewhere the nodes share the loopback interface.
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import netns
from .commands import Plan, build_plan


@dataclass
class Job:
    cluster: netns.Cluster
    plan: Plan
    result: object  # dscourse.launch.NodesResult


def run_nodes_job(launcher: str, module: str, args: list[str], nodes: int = 2, gpus_per_node: int = 1,
                  timeout: float = 600, out_dir: str | Path | None = None, use_netns: bool | None = None,
                  env: dict | None = None, wrong_master: dict | None = None) -> Job:
    """Run ``python -m module args --out OUT`` on ``nodes`` × ``gpus_per_node`` ranks through ``launcher``
    (``torchrun``, ``torchrun-c10d``, ``deepspeed-nossh`` or ``accelerate``), one launcher process per node.

    ``wrong_master={1: "10.10.0.99"}`` gives node 1 another ``--master_addr`` than the plan's, to reproduce the
    classic hang (the other nodes wait for it until the timeout).

    Within a test session a job that ran to the end is run once (``dscourse.runcache``, as ``run_ranks`` does): the
    same job again gets the stored one, with its output folder copied to ``out_dir`` (its plan and commands still
    name the first run's folder)."""
    from dscourse import runcache

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="dscourse-nodes-"))
    out.mkdir(parents=True, exist_ok=True)
    root = runcache.cache_root()
    if root is None or wrong_master:  # a reproduced failure is the point of its own test
        return _run_nodes_job(launcher, module, args, nodes, gpus_per_node, timeout, out, use_netns, env, wrong_master)
    key, _ = runcache.launch_key(f"nodes:{module}", args, env=env, launcher=launcher, nodes=nodes,
                                 gpus_per_node=gpus_per_node, use_netns=use_netns)
    with runcache.claim(key):
        stored = runcache.load(key, args, [], out)  # the output folder copied to ``out``
        if stored is not None:
            runcache.record(key, f"nodes:{module}", args, reused=True, seconds=0.0)
            return pickle.loads(base64.b64decode(stored["job"]))
        t0 = time.monotonic()
        job = _run_nodes_job(launcher, module, args, nodes, gpus_per_node, timeout, out, use_netns, env, wrong_master)
        runcache.record(key, f"nodes:{module}", args, reused=False, seconds=time.monotonic() - t0)
        runcache.store(key, args, [], out, {"job": base64.b64encode(pickle.dumps(job)).decode()})
        return job


def _run_nodes_job(launcher, module, args, nodes, gpus_per_node, timeout, out: Path, use_netns, env,
                   wrong_master) -> Job:
    from dscourse.launch import free_port, run_nodes

    with netns.nodes(nodes, use_netns) as cluster:
        # A fresh namespace has every port free; on the shared loopback we need a free one.
        port = 29500 if cluster.mode == "netns" else free_port()
        hosts = [f"node{i}" for i in range(nodes)]
        plan = build_plan(launcher, nodes, gpus_per_node, master_addr=cluster.addresses[0], master_port=port,
                          hosts=hosts, script=module, script_args=[*args, "--out", str(out)], module=True,
                          python=sys.executable, hostfile=str(out / "hostfile"), same_machine=cluster.mode != "netns")
        if not plan.ok:
            raise ValueError("; ".join(str(p) for p in plan.problems if p.severity == "error"))
        for name, content in plan.files.items():
            path = Path(name) if Path(name).is_absolute() else out / name
            path.write_text(content)
        # gloo (and NCCL) pick their interface from the hostname unless told: name the nodes' interface.
        # (env={"GLOO_SOCKET_IFNAME": "lo"} reproduces the wrong-interface hang.)
        node_env = [{} if "GLOO_SOCKET_IFNAME" in (env or {}) else {"GLOO_SOCKET_IFNAME": cluster.ifname}
                    for _ in range(nodes)]
        argvs = [list(c.argv) for c in plan.commands]
        for node, addr in (wrong_master or {}).items():
            argvs[node][argvs[node].index("--master_addr") + 1] = addr
        result = run_nodes(argvs, out, world_size=nodes * gpus_per_node, timeout=timeout,
                           env=env, node_env=node_env, prefixes=[cluster.prefix(i) for i in range(nodes)])
    (out / "job.json").write_text(json.dumps({"mode": cluster.mode, "addresses": cluster.addresses,
                                              "launcher": launcher}, indent=1))
    return Job(cluster, plan, result)
