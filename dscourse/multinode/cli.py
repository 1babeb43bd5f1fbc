"""``python -m dscourse.multinode``: check a multi-node setup, or print the launch commands for it.

    python -m dscourse.multinode preflight --hostfile hostfile --master-addr 10.0.0.1
    python -m dscourse.multinode preflight --hosts node1,node2 --launcher torchrun
    python -m dscourse.multinode commands --launcher torchrun --nodes 2 --gpus 8 --master-addr 10.0.0.1

preflight: one line per check (``ok``, ``warn``, ``FAIL`` with ``-> fix:``). Exit codes: 0 every check passed,
1 a check failed, 2 bad arguments or an unreadable hostfile (one line on stderr). Never a traceback, never a hang.
commands: exit 0, or 1 when the setup has errors (printed as ``# ERROR:`` lines).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..cli_util import OneLineParser, UsageError, positive_int
from .commands import LAUNCHERS, build_plan
from .preflight import BACKENDS, PreflightUsage, preflight

PROG = "python -m dscourse.multinode"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1-65535, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"use 1-60 seconds, not {value:g}")
    return value


def build_parser():
    p = OneLineParser(prog=PROG, description="Multi-node DeepSpeed: preflight checks and launch commands.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{preflight,commands}")
    pf = sub.add_parser("preflight", help="check hostfile, names, SSH, versions, master port; each failure with a fix")
    where = pf.add_mutually_exclusive_group(required=True)
    where.add_argument("--hostfile", help="DeepSpeed hostfile ('HOST slots=N' lines)")
    where.add_argument("--hosts", help="comma-separated host names (for launchers without a hostfile)")
    pf.add_argument("--launcher", choices=sorted(BACKENDS), default="pdsh",
                    help="pdsh (deepspeed's default), openmpi, mvapich, slurm, nossh (deepspeed --no_ssh), torchrun")
    pf.add_argument("--master-addr", default=None, help="the address of node 0 (default: the first host)")
    pf.add_argument("--master-port", type=_port, default=29500)
    pf.add_argument("--ssh-timeout", type=_seconds, default=5, help="ssh ConnectTimeout in seconds (default 5)")
    pf.add_argument("--probe-timeout", type=_seconds, default=10,
                    help="seconds each host gets to run the version probe once connected (default 10)")
    pf.add_argument("--ssh-port", type=_port, default=None)
    pf.add_argument("--ssh-command", default="ssh", help="the ssh client to use (default: ssh)")
    pf.add_argument("--python", default=None, help="the interpreter the nodes must have (default: this one)")
    pf.add_argument("--no-versions", action="store_true", help="skip the version comparison")
    pf.add_argument("--check-ssh", action="store_true",
                    help="reach every host over SSH (and compare versions) even for a launcher that needs no SSH")
    cmd = sub.add_parser("commands", help="print the command for every node")
    cmd.add_argument("--launcher", choices=list(LAUNCHERS), default="deepspeed")
    cmd.add_argument("--nodes", type=positive_int, required=True)
    cmd.add_argument("--gpus", type=positive_int, required=True, help="GPUs per node")
    cmd.add_argument("--master-addr", default="")
    cmd.add_argument("--master-port", type=_port, default=29500)
    cmd.add_argument("--hosts", default=None, help="comma-separated host names (default worker-1..worker-N)")
    cmd.add_argument("script", nargs="?", default="train.py")
    cmd.add_argument("script_args", nargs=argparse.REMAINDER, help="the script's own arguments")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "preflight":
            hosts = None
            if args.hosts is not None:
                hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
                if not hosts:
                    raise UsageError("--hosts names no host")
            ssh = shlex.split(args.ssh_command)
            if not ssh:
                raise UsageError("--ssh-command is empty")
            checks = preflight(args.hostfile, hosts, launcher=args.launcher, master_addr=args.master_addr,
                               master_port=args.master_port, ssh_command=ssh, ssh_timeout=args.ssh_timeout,
                               ssh_port=args.ssh_port, python=args.python, versions=not args.no_versions,
                               check_ssh=True if args.check_ssh else None, command_timeout=args.probe_timeout)
            for c in checks:
                print(c)
            failed = sum(c.status == "FAIL" for c in checks)
            print(f"{failed} check(s) failed" if failed else "all checks passed")
            return 1 if failed else 0
        hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts else None
        plan = build_plan(args.launcher, args.nodes, args.gpus, args.master_addr, args.master_port, hosts=hosts,
                          script=args.script, script_args=args.script_args)
        print(plan.text())
        return 0 if plan.ok else 1
    except (UsageError, PreflightUsage) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 2
