"""Nodes × GPUs per node × launcher → the exact command for every node, and what is wrong with the setup.

    plan = build_plan("torchrun", nodes=2, gpus_per_node=8, master_addr="10.0.0.1")
    print(plan.text())

Launchers (what runs where):

========================  ===============================================================================
``deepspeed``             one command, on node 0: pdsh logs into every host of the hostfile over SSH
``deepspeed-openmpi``     one command, on node 0: ``mpirun`` (``--launcher openmpi``)
``deepspeed-mvapich``     one command, on node 0: MVAPICH2-GDR's ``mpirun`` (``--launcher mvapich``)
``deepspeed-slurm``       one command, inside a Slurm allocation: ``srun`` (``--launcher slurm``)
``deepspeed-nossh``       one command per node (``--no_ssh --node_rank i``), the same hostfile on each
``torchrun``              one command per node, static rendezvous (``--node_rank i --master_addr``)
``torchrun-c10d``         one identical command per node, c10d rendezvous (``--rdzv_endpoint``)
``accelerate``            one command per node (``--machine_rank i``, ``--deepspeed_multinode_launcher standard``)
``slurm-sbatch``          a batch script: ``srun`` starts one torchrun per node with c10d rendezvous
========================  ===============================================================================

The flags are those of DeepSpeed 0.19.8 (``deepspeed/launcher/runner.py``, ``multinode_runner.py``),
torch's ``torch.distributed.run`` and accelerate 1.15's ``accelerate launch``; the tests run the commands'
argument lists through those parsers.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

LAUNCHERS = {
    "deepspeed": "deepspeed + pdsh over SSH (default)",
    "deepspeed-openmpi": "deepspeed --launcher openmpi",
    "deepspeed-mvapich": "deepspeed --launcher mvapich",
    "deepspeed-slurm": "deepspeed --launcher slurm (inside salloc/sbatch)",
    "deepspeed-nossh": "deepspeed --no_ssh, one command per node",
    "torchrun": "torchrun, static rendezvous, one command per node",
    "torchrun-c10d": "torchrun, c10d rendezvous, one command per node",
    "accelerate": "accelerate launch --use_deepspeed, one command per node",
    "slurm-sbatch": "a Slurm batch script (sbatch job.sbatch)",
}
PER_NODE = ("deepspeed-nossh", "torchrun", "torchrun-c10d", "accelerate")
DEFAULT_PORT = 29500  # torch's and DeepSpeed's default (TORCH_DISTRIBUTED_DEFAULT_PORT)


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    what: str
    fix: str

    def __str__(self):
        return f"{self.what}. Fix: {self.fix}"


@dataclass
class NodeCommand:
    where: str
    argv: list[str]
    env: dict = field(default_factory=dict)

    def shell(self) -> str:
        exports = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in self.env.items())
        return (exports + " " if exports else "") + shlex.join(self.argv)


@dataclass
class Plan:
    launcher: str
    nodes: int
    gpus_per_node: int
    hosts: list[str]
    master_addr: str
    master_port: int
    commands: list[NodeCommand]
    files: dict[str, str]
    problems: list[Problem]
    notes: list[str]
    active: dict | None = None  # {host: [GPU ids]} after --include/--exclude (DeepSpeed's active_resources)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def world_size(self) -> int:
        if self.active is not None:
            return sum(len(slots) for slots in self.active.values())
        return self.nodes * self.gpus_per_node

    def text(self) -> str:
        lines = [f"# {LAUNCHERS[self.launcher]}: {self.nodes} node(s) x {self.gpus_per_node} GPU(s)"
                 + (f", filtered to {len(self.active)} node(s)" if self.active is not None else "")
                 + f" = {self.world_size} ranks, master {self.master_addr or '?'}:{self.master_port}"]
        for p in self.problems:
            lines.append(f"# {p.severity.upper()}: {p}")
        for name, content in self.files.items():
            lines.append(f"\n# --- file {name} ---")
            lines.extend(content.rstrip("\n").splitlines())
        for c in self.commands:
            lines.append(f"\n# {c.where}:")
            lines.append(c.shell())
        if self.notes:
            lines.append("")
            lines.extend(f"# {n}" for n in self.notes)
        return "\n".join(lines)


def _is_loopback(addr: str) -> bool:
    if addr.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


HOST_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def validate(launcher: str, nodes: int, gpus_per_node: int, master_addr: str, master_port: int,
             hosts: list[str], same_machine: bool = False) -> list[Problem]:
    """Errors (the launch cannot work) and warnings (it may not), each with its fix.

    ``same_machine``: every "node" runs on this machine (the course's simulation), so a loopback master is fine.
    """
    probs = []
    if launcher not in LAUNCHERS:
        probs.append(Problem("error", f"unknown launcher {launcher!r}", f"use one of {', '.join(LAUNCHERS)}"))
        return probs
    if nodes < 1:
        probs.append(Problem("error", f"{nodes} nodes", "a job needs at least 1 node"))
    if gpus_per_node < 1:
        probs.append(Problem("error", f"{gpus_per_node} GPUs per node", "each node needs at least 1 GPU (slot)"))
    if not 1 <= master_port <= 65535:
        probs.append(Problem("error", f"master port {master_port} is not a TCP port",
                             f"use a free port in 1024-65535, e.g. {DEFAULT_PORT}"))
    elif master_port < 1024:
        probs.append(Problem("warning", f"master port {master_port} is privileged (below 1024)",
                             f"only root may listen on it; use e.g. {DEFAULT_PORT}"))
    if len(set(hosts)) != len(hosts):
        dup = sorted({h for h in hosts if hosts.count(h) > 1})
        probs.append(Problem("error", f"host {dup[0]} listed twice", "one line per host; DeepSpeed refuses repeats"))
    for h in hosts:
        if not HOST_RE.match(h):
            probs.append(Problem("error", f"host name {h!r} has characters a hostfile cannot carry",
                                 "use letters, digits, '.', '-' and '_' (alias it in ~/.ssh/config)"))
    if nodes > 1:
        if not master_addr:
            if launcher.startswith("deepspeed") and launcher != "deepspeed-nossh":
                probs.append(Problem("warning", "no --master_addr: DeepSpeed runs 'ssh HOST hostname -I' on the first "
                                                "host and takes its first address",
                                     "pass --master_addr explicitly: the first address is often a docker or "
                                     "management interface"))
            elif launcher != "slurm-sbatch":
                probs.append(Problem("error", "no master address",
                                     "give the address of node 0 that the other nodes can reach"))
        elif _is_loopback(master_addr) and not same_machine:
            probs.append(Problem("error", f"master address {master_addr} is a loopback address",
                                 "on every other node it means that node itself, so they wait for a master that "
                                 "never answers (a hang); use node 0's network address"))
        if hosts and master_addr and not _is_ip(master_addr) and master_addr != hosts[0]:
            probs.append(Problem("warning", f"master address {master_addr} is not node 0 ({hosts[0]})",
                                 f"rank 0 runs on node 0, the first host; use --master_addr {hosts[0]} "
                                 "(or its address)"))
    if launcher in ("deepspeed-mvapich",) and nodes > 1:
        probs.append(Problem("warning", "mvapich needs MVAPICH2-GDR ('mpiname' must print MVAPICH2-GDR)",
                             "otherwise DeepSpeed says \"launcher 'mvapich' not installed\"; check with 'mpiname'"))
    if launcher in PER_NODE and nodes > 1 and hosts and len(hosts) != nodes:
        probs.append(Problem("error", f"{len(hosts)} host names for {nodes} nodes", "name every node once"))
    return probs


def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
        return True
    except ValueError:
        return False


def _filter_problems(plan: Plan, launcher: str, include: str, exclude: str) -> list[Problem]:
    """Resolve --include/--exclude as DeepSpeed does (sets ``plan.active``); what the backend refuses."""
    from .hostfile import HostfileError, resolve

    if not launcher.startswith("deepspeed"):
        return [Problem("error", f"--include/--exclude are deepspeed launcher flags, not {launcher}'s",
                        "start the launcher only on the nodes you want, with the GPU count you want")]
    if launcher in ("deepspeed-openmpi", "deepspeed-mvapich"):
        backend = launcher.split("-")[1]
        return [Problem("error", f"the {backend} backend refuses --include/--exclude (DeepSpeed: 'does not support "
                                 "worker include/exclusion')", "list only the wanted hosts and slots in the hostfile")]
    try:
        plan.active = resolve({h: plan.gpus_per_node for h in plan.hosts[:plan.nodes]}, include, exclude)
    except HostfileError as e:
        return [Problem("error", f"--include/--exclude: {e}", "name hosts from the hostfile and GPU ids below slots")]
    if launcher == "deepspeed-slurm":  # SlurmRunner.validate_active_resources
        counts = {len(s) for s in plan.active.values()}
        if any(list(s) != list(range(len(s))) for s in plan.active.values()) or len(counts) > 1:
            return [Problem("error", "srun cannot pin particular GPU ids or give hosts different GPU counts",
                            "filter whole hosts, or keep the first N GPUs on every host")]
    return []


def build_plan(launcher: str, nodes: int, gpus_per_node: int, master_addr: str = "", master_port: int = DEFAULT_PORT,
               hosts: list[str] | None = None, script: str = "train.py", script_args: list[str] | None = None,
               module: bool = False, python: str | None = None, hostfile: str = "hostfile",
               env: dict | None = None, zero_stage: int = 2, job_name: str = "ds-train",
               same_machine: bool = False, include: str = "", exclude: str = "") -> Plan:
    """The commands (and files) that start ``script`` on ``nodes`` × ``gpus_per_node`` ranks.

    ``hosts`` defaults to ``worker-1 .. worker-N``. ``python`` replaces the ``torchrun``/``deepspeed``/``accelerate``
    entry points with ``python -m ...`` (what the notebook's real run uses); ``module`` runs ``script`` as
    ``python -m script``. ``env`` is shown as ``.deepspeed_env`` for the DeepSpeed launchers that forward it,
    and as exports for the others. ``include``/``exclude`` (DeepSpeed launchers only) are resolved against the
    hostfile exactly as DeepSpeed resolves them, with the backends' own restrictions.
    """
    hosts = list(hosts) if hosts else [f"worker-{i + 1}" for i in range(max(nodes, 0))]
    script_args = list(script_args or [])
    env = dict(env or {})
    problems = validate(launcher, nodes, gpus_per_node, master_addr, master_port, hosts, same_machine)
    plan = Plan(launcher, nodes, gpus_per_node, hosts, master_addr, master_port, [], {}, problems, [])
    if (include or exclude) and not any(p.severity == "error" for p in problems):
        problems += _filter_problems(plan, launcher, include, exclude)
    if any(p.severity == "error" for p in problems):
        return plan
    flt = (["--include", include] if include else []) + (["--exclude", exclude] if exclude else [])
    hostfile_text = "".join(f"{h} slots={gpus_per_node}\n" for h in hosts[:nodes])
    ds = [python, "-m", "deepspeed.launcher.runner"] if python else ["deepspeed"]
    tr = [python, "-m", "torch.distributed.run"] if python else ["torchrun"]
    acc = [python, "-m", "accelerate.commands.launch"] if python else ["accelerate", "launch"]
    target = (["--module", script] if module else [script]) + script_args  # deepspeed's form
    tr_target = (["-m", script] if module else [script]) + script_args
    addr = ["--master_addr", master_addr] if master_addr else []
    port = ["--master_port", str(master_port)]

    if launcher.startswith("deepspeed"):
        plan.files[hostfile] = hostfile_text
        if env and launcher != "deepspeed-nossh":
            plan.files[".deepspeed_env"] = "".join(f"{k}={v}\n" for k, v in env.items())
    if launcher == "deepspeed":
        plan.commands.append(NodeCommand(f"on node 0 ({hosts[0]}), once", [*ds, "--hostfile", hostfile, *flt, *addr,
                                                                           *port, *target]))
        plan.notes += ["pdsh starts 'cd <this directory>; <this python> -u -m deepspeed.launcher.launch "
                       "--node_rank=%n ...' on every host over SSH: the same python path, the same directory and "
                       "passwordless SSH from node 0 to every host (itself included) are required",
                       "forwarded to the other nodes: variables starting with PYTHON, MV2, UCX, MLFLOW (and NCCL on "
                       "GPUs) plus every line of ~/.deepspeed_env and ./.deepspeed_env; nothing else"]
    elif launcher in ("deepspeed-openmpi", "deepspeed-mvapich", "deepspeed-slurm"):
        backend = launcher.split("-")[1]
        plan.commands.append(NodeCommand(f"on node 0 ({hosts[0]}), once" if backend != "slurm"
                                         else "inside the Slurm allocation (salloc/sbatch), once",
                                         [*ds, "--hostfile", hostfile, "--launcher", backend, *flt, *addr, *port,
                                          *target]))
        if backend in ("openmpi", "mvapich"):
            plan.notes.append(f"the {backend} backend refuses --include/--exclude/--num_nodes/--num_gpus: "
                              "edit the hostfile instead; it runs one process per slot itself (no local launcher)")
        if backend == "openmpi":
            plan.notes.append("DeepSpeed adds '--mca btl_tcp_if_include eth0' unless --launcher_args names "
                              "btl_tcp_if_include: set it to your interface if it is not eth0")
        if backend == "slurm":
            plan.notes.append("srun starts the ranks; DeepSpeed passes --export=ALL plus .deepspeed_env")
    elif launcher == "deepspeed-nossh":
        for i, host in enumerate(plan.active if plan.active is not None else hosts[:nodes]):
            plan.commands.append(NodeCommand(f"on node {i} ({host})",
                                             [*ds, "--hostfile", hostfile, *flt, "--no_ssh", "--node_rank", str(i),
                                              *addr, *port, *target], dict(env)))
        plan.notes.append("no SSH: start the same command on every node with its own --node_rank (the hostfile must "
                          "be the same everywhere); .deepspeed_env is NOT read on this path: export variables yourself")
    elif launcher == "torchrun":
        for i in range(nodes):
            plan.commands.append(NodeCommand(f"on node {i} ({hosts[i]})",
                                             [*tr, "--nnodes", str(nodes), "--nproc_per_node", str(gpus_per_node),
                                              "--node_rank", str(i), *addr, *port, *tr_target], dict(env)))
    elif launcher == "torchrun-c10d":
        for i in range(nodes):
            plan.commands.append(NodeCommand(f"on node {i} ({hosts[i]})",
                                             [*tr, "--nnodes", str(nodes), "--nproc_per_node", str(gpus_per_node),
                                              "--rdzv_backend", "c10d", "--rdzv_endpoint",
                                              f"{master_addr}:{master_port}", "--rdzv_id", job_name, *tr_target],
                                             dict(env)))
        plan.notes.append("c10d rendezvous: the same command on every node, no --node_rank; node ranks are "
                          "assigned in arrival order, so rank 0 is not necessarily on the endpoint's host")
    elif launcher == "accelerate":
        for i in range(nodes):
            plan.commands.append(NodeCommand(
                f"on node {i} ({hosts[i]})",
                [*acc, "--use_deepspeed", "--zero_stage", str(zero_stage), "--deepspeed_multinode_launcher", "standard",
                 "--num_machines", str(nodes), "--num_processes", str(nodes * gpus_per_node), "--machine_rank", str(i),
                 "--main_process_ip", master_addr, "--main_process_port", str(master_port),
                 *(["-m"] if module else []), script, *script_args], dict(env)))
        plan.notes.append("--num_processes counts every process of every machine; without "
                          "--deepspeed_multinode_launcher standard, accelerate calls the deepspeed launcher with "
                          "pdsh (SSH) from machine 0 instead")
    elif launcher == "slurm-sbatch":
        exports = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
        run = (shlex.join([*tr, "--nnodes", str(nodes), "--nproc_per_node", str(gpus_per_node),
                           "--rdzv_backend", "c10d", "--rdzv_id", job_name])
               + ' --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" ' + shlex.join(tr_target))
        plan.files["job.sbatch"] = (
            "#!/bin/bash\n"
            f"#SBATCH --job-name={job_name}\n"
            f"#SBATCH --nodes={nodes}\n"
            "#SBATCH --ntasks-per-node=1          # one launcher per node; it starts the GPU ranks\n"
            f"#SBATCH --gpus-per-node={gpus_per_node}\n"
            "#SBATCH --time=01:00:00\n"
            "set -euo pipefail\n"
            "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
            f"export MASTER_PORT={master_port}\n"
            f"{exports}"
            "# c10d rendezvous needs no node rank: a $SLURM_NODEID on this line would be expanded here, once, as 0\n"
            f"srun {run}\n")
        plan.commands.append(NodeCommand("on the login node", ["sbatch", "job.sbatch"]))
        plan.notes.append("sbatch's environment (--export=ALL by default) reaches every task that srun starts")
    return plan
