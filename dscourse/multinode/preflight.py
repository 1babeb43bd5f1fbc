"""Check a multi-node setup before launching, so that the launch does not hang: every failure with its fix.

    python -m dscourse.multinode preflight --hostfile hostfile --master-addr 10.0.0.1

Checks, in order (later checks need earlier ones):

1. the hostfile parses as DeepSpeed parses it, and nothing in it is a likely mistake;
2. every host name resolves (through ``ssh -G``, so ``~/.ssh/config`` aliases count);
3. the launcher's backend is installed here (``pdsh`` for the default launcher, ``ompi_info`` for openmpi,
   ``mpiname`` for mvapich, ``sinfo`` for slurm: what DeepSpeed's ``backend_exists()`` looks for);
4. every host answers SSH non-interactively (``BatchMode=yes``, ``ConnectTimeout``), and has this Python
   (pdsh runs ``<sys.executable> -u -m deepspeed.launcher.launch`` there, after ``cd <this directory>``);
5. the same Python, torch and DeepSpeed versions everywhere;
6. the master address is not a loopback address, and the master port is free on the master;
7. ``.deepspeed_env`` has one ``NAME=value`` a line (DeepSpeed crashes on blank lines and exports comments).

Every subprocess runs with a timeout and every host is probed in parallel, so the whole check ends in about
``ssh_timeout + 10`` seconds whatever the network does. Exit code 0: all checks passed (warnings allowed);
1: at least one failed; 2: bad arguments or an unreadable hostfile.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .hostfile import HostfileError, lint_hostfile, parse_hostfile

BACKENDS = {"pdsh": "pdsh", "openmpi": "ompi_info", "mvapich": "mpiname", "slurm": "sinfo", "nossh": None,
            "torchrun": None}
INSTALL = {"pdsh": "install it on node 0 (apt-get install pdsh / yum install pdsh), or launch without SSH: "
                   "deepspeed --no_ssh --node_rank i on every node, or torchrun",
           "ompi_info": "install Open MPI (and put its bin/ on PATH) or use --launcher pdsh",
           "mpiname": "install MVAPICH2-GDR (mpiname must report it) or use --launcher pdsh",
           "sinfo": "run inside a Slurm allocation where the Slurm client tools are on PATH"}
PROBE = ("import importlib.metadata as m, json, platform, socket, sys\n"
         "def v(p):\n"
         "    try:\n"
         "        return m.version(p)\n"
         "    except m.PackageNotFoundError:\n"
         "        return None\n"
         "port = int(sys.argv[1])\n"
         "free = None\n"
         "if port:\n"
         "    s = socket.socket()\n"
         "    try:\n"
         "        s.bind(('', port)); free = True\n"
         "    except OSError:\n"
         "        free = False\n"
         "    s.close()\n"
         "print('DSCOURSE-PROBE ' + json.dumps({'python': platform.python_version(), 'torch': v('torch'), "
         "'deepspeed': v('deepspeed'), 'port_free': free}))\n")


class PreflightUsage(Exception):
    """Bad arguments or an unreadable hostfile (exit code 2)."""


@dataclass
class Check:
    status: str  # "ok" | "warn" | "FAIL"
    what: str
    detail: str
    fix: str = ""

    def __str__(self):
        line = f"{self.status:<4}  {self.what:<22} {self.detail}"
        return line + (f" -> fix: {self.fix}" if self.fix and self.status != "ok" else "")


def _run(argv: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(exit code or None on timeout, stdout, stderr); the process and its children are killed on timeout."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    except OSError as e:
        return 127, "", str(e)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        return None, out or "", err or ""


def _in_threads(fn, items: list, timeout: float) -> dict:
    """fn(item) for every item in parallel daemon threads; items still running after ``timeout`` map to None."""
    results: dict = {}
    threads = []
    for item in items:
        t = threading.Thread(target=lambda i=item: results.__setitem__(i, fn(i)), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout)
    return {item: results.get(item) for item in items}


def ssh_failure(stderr: str, host: str, user: str | None = None) -> tuple[str, str]:
    """(what went wrong, the fix) for an ``ssh`` that exited 255, from its message."""
    msg = " ".join(stderr.strip().split())
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    who = f"{user}@{host}" if user else host
    if "Permission denied" in msg:
        return last, (f"passwordless SSH is not set up: on node 0 run 'ssh-keygen -t ed25519' (no passphrase, or "
                      f"load it into ssh-agent) and 'ssh-copy-id {who}'")
    if "Host key verification failed" in msg or "REMOTE HOST IDENTIFICATION HAS CHANGED" in msg:
        return last, (f"{host}'s host key is unknown or changed: run 'ssh {host}' once interactively to accept "
                      f"it, or 'ssh-keyscan {host} >> ~/.ssh/known_hosts'")
    if "Could not resolve hostname" in msg:
        return last, f"add {host} to /etc/hosts (or DNS), or a 'Host {host}' + 'HostName <address>' in ~/.ssh/config"
    if "Connection refused" in msg:
        return last, f"no SSH server listens there: start sshd on {host}, or give its port (--ssh-port)"
    if "timed out" in msg or "No route to host" in msg or "Network is unreachable" in msg:
        return last, f"{host} is unreachable from here: check the address, the firewall and the network"
    return last, "run 'ssh -v " + host + " true' to see why"


class Preflight:
    def __init__(self, hosts: dict, launcher: str = "pdsh", master_addr: str | None = None, master_port: int = 29500,
                 ssh_command: list[str] | None = None, ssh_timeout: float = 5, ssh_port: int | None = None,
                 python: str | None = None, cwd: str | None = None, env_files: list[Path] | None = None,
                 versions: bool = True, check_ssh: bool | None = None, command_timeout: float = 10):
        self.hosts = hosts
        self.launcher = launcher
        self.master_addr = master_addr or (next(iter(hosts)) if hosts else "")
        self.master_port = master_port
        self.ssh = list(ssh_command or ["ssh"])
        self.ssh_timeout = ssh_timeout
        self.ssh_port = ssh_port
        self.python = python or sys.executable
        self.cwd = cwd or os.getcwd()
        self.env_files = env_files if env_files is not None else [Path.home() / ".deepspeed_env",
                                                                  Path(".deepspeed_env")]
        self.versions = versions
        self.command_timeout = command_timeout  # for the remote probe, on top of ssh's ConnectTimeout
        # pdsh and the MPI launchers need SSH; for the others, SSH is only how we reach the nodes to compare versions
        self.use_ssh = launcher in ("pdsh", "openmpi", "mvapich") if check_ssh is None else check_ssh
        self.checks: list[Check] = []
        self._first_addr: str | None = None  # the first host's address, once resolved

    # -- helpers -----------------------------------------------------------------------------------------------
    def add(self, status, what, detail, fix=""):
        self.checks.append(Check(status, what, detail, fix))

    def ssh_argv(self, host: str, command: str | None = None, config: bool = False) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.ssh_timeout)}", "-T"]
        if self.ssh_port:
            opts += ["-p", str(self.ssh_port)]
        if config:
            return [*self.ssh, "-G", *(["-p", str(self.ssh_port)] if self.ssh_port else []), host]
        return [*self.ssh, *opts, host, *([command] if command else [])]

    # -- checks ------------------------------------------------------------------------------------------------
    def check_resolve(self) -> dict:
        """host -> the address it resolves to (following ~/.ssh/config's HostName), or None."""
        def one(host):
            code, out, _ = _run(self.ssh_argv(host, config=True), timeout=5)
            name = host
            if code == 0:
                for line in out.splitlines():
                    if line.lower().startswith("hostname "):
                        name = line.split(None, 1)[1].strip()
            try:
                return name, socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
            except (socket.gaierror, UnicodeError, OSError):
                return name, None

        found = _in_threads(one, list(self.hosts), timeout=10)
        addresses = {}
        for host, res in found.items():
            if res is None:
                self.add("FAIL", f"resolve {host}", "name lookup did not answer in 10 s",
                         "check /etc/resolv.conf, or put the host in /etc/hosts")
                addresses[host] = None
                continue
            name, addr = res
            via = f" (ssh config HostName {name})" if name != host else ""
            if addr is None:
                self.add("FAIL", f"resolve {host}", f"'{name}' does not resolve{via}",
                         f"add '<address> {name}' to /etc/hosts on node 0, or a 'Host {host}' / 'HostName <address>' "
                         "block to ~/.ssh/config")
            else:
                self.add("ok", f"resolve {host}", f"{addr}{via}")
            addresses[host] = addr
        return addresses

    def check_backend(self):
        tool = BACKENDS.get(self.launcher)
        if tool is None:
            self.add("ok", "launcher", f"{self.launcher}: no SSH fan-out tool needed (start one command per node)")
        elif shutil.which(tool):
            self.add("ok", "launcher", f"{self.launcher}: {tool} found at {shutil.which(tool)}")
        else:
            self.add("FAIL", "launcher", f"{self.launcher}: '{tool}' is not on PATH (DeepSpeed would stop with "
                                         f"\"launcher '{self.launcher}' not installed\")", INSTALL[tool])

    def check_ssh(self, hosts: list[str]) -> dict:
        """host -> probe result dict, for the hosts that answered."""
        first = next(iter(self.hosts)) if self.hosts else None

        def one(host):
            port = self.master_port if host == first and self.master_is_first() else 0
            remote = (f"cd {shlex.quote(self.cwd)} 2>/dev/null || echo DSCOURSE-NO-CWD; "
                      f"{shlex.quote(self.python)} -c {shlex.quote(PROBE)} {port} || echo DSCOURSE-NO-PYTHON")
            return _run(self.ssh_argv(host, remote), timeout=self.ssh_timeout + self.command_timeout)

        answers = _in_threads(one, hosts, timeout=self.ssh_timeout + self.command_timeout + 10)
        probes = {}
        for host in hosts:
            res = answers.get(host)
            if res is None or res[0] is None:
                self.add("FAIL", f"ssh {host}", f"no answer in {self.ssh_timeout + self.command_timeout:.0f} s (killed)",
                         "a firewall silently dropping packets, or a login that waits for input: try "
                         f"'ssh -o BatchMode=yes {host} true' by hand")
                continue
            code, out, err = res
            if code == 255:
                what, fix = ssh_failure(err, host)
                self.add("FAIL", f"ssh {host}", f"exit 255: {what}", fix)
                continue
            if "DSCOURSE-NO-PYTHON" in out or "DSCOURSE-PROBE" not in out:
                self.add("FAIL", f"ssh {host}", f"reachable, but {self.python} does not run there",
                         "pdsh runs this exact interpreter path on every node: install the same environment at the "
                         "same path on every node (or pass --python)")
                continue
            probe = json.loads(out.split("DSCOURSE-PROBE ", 1)[1].splitlines()[0])
            if "DSCOURSE-NO-CWD" in out:
                self.add("warn", f"ssh {host}", f"reachable, but {self.cwd} does not exist there",
                         "pdsh runs 'cd <this directory>' first: use a shared filesystem or the same path everywhere")
            else:
                self.add("ok", f"ssh {host}", "passwordless SSH works")
            probes[host] = probe
        return probes

    def master_is_first(self) -> bool:
        first = next(iter(self.hosts)) if self.hosts else None
        return self.master_addr in (first, self._first_addr)

    def check_versions(self, probes: dict):
        here = {"python": sys.version.split()[0], "torch": _version("torch"), "deepspeed": _version("deepspeed")}
        for key in ("python", "torch", "deepspeed"):
            seen = {host: p.get(key) for host, p in probes.items()}
            bad = {h: v for h, v in seen.items() if v != here[key]}
            if not bad:
                self.add("ok", f"{key} version", f"{here[key]} on this node and {len(seen)} host(s)")
            else:
                listing = ", ".join(f"{h}: {v or 'not installed'}" for h, v in bad.items())
                pin = {"python": "the same Python", "torch": f"pip install torch=={here[key]}",
                       "deepspeed": f"pip install deepspeed=={here[key]}"}[key]
                self.add("FAIL", f"{key} version", f"this node has {here[key] or 'none'}, but {listing}",
                         f"{pin} on those hosts (ranks with different versions hang or fail in the first collective)")

    def check_master(self, probes: dict, addresses: dict):
        addr = self.master_addr
        loop = _is_loopback(addr) or (addresses.get(addr) and _is_loopback(addresses[addr]))
        if len(self.hosts) > 1 and loop:
            self.add("FAIL", "master address", f"{addr} is a loopback address",
                     "on the other nodes it means themselves: they wait for a master that never answers. Use node "
                     "0's network address (hostname -I) as --master_addr")
        elif addr:
            self.add("ok", "master address", f"{addr}")
        if not 1024 <= self.master_port <= 65535:
            self.add("FAIL", "master port", f"{self.master_port}", "use a port in 1024-65535, e.g. 29500")
            return
        first = next(iter(self.hosts)) if self.hosts else None
        free = probes.get(first, {}).get("port_free") if self.master_is_first() else None
        if free is None and _is_local(addr):
            free = _port_free_here(self.master_port)
        if free is None:
            self.add("warn", "master port", f"{self.master_port}: not checked (master is not node 0 and not here)",
                     f"run 'ss -ltn | grep :{self.master_port}' on the master")
        elif free:
            self.add("ok", "master port", f"{self.master_port} is free on the master")
        else:
            self.add("FAIL", "master port", f"{self.master_port} is already in use on the master (another job?)",
                     "pick another --master_port, or stop the job that holds it "
                     f"('ss -ltnp | grep :{self.master_port}')")

    def check_env_files(self):
        reads = self.launcher in ("pdsh", "openmpi", "mvapich", "slurm")
        for path in self.env_files:
            if not path.is_file():
                continue
            if not reads:
                self.add("warn", ".deepspeed_env", f"{path} exists but {self.launcher} does not read it",
                         "export the variables in each node's command (only the SSH/MPI launchers forward it)")
            bad = []
            text = path.read_text(errors="replace")
            lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")  # = readlines()
            for number, line in enumerate(lines, 1):
                if line.lstrip().startswith("#"):
                    bad.append(f"line {number} is a comment (DeepSpeed does not skip comments)")
                elif "=" not in line:
                    bad.append(f"line {number} {'is blank' if not line.strip() else 'has no ='}")
            if bad:
                self.add("FAIL", ".deepspeed_env", f"{path}: {'; '.join(bad)}",
                         "one NAME=value per line, no blank lines, no comments: DeepSpeed splits every line at '=' "
                         "(ValueError on a blank line)")
            elif reads:
                self.add("ok", ".deepspeed_env", f"{path}: forwarded to every node")

    # -- all ---------------------------------------------------------------------------------------------------
    def run(self) -> list[Check]:
        self.add("ok", "hostfile", f"{len(self.hosts)} host(s), {sum(self.hosts.values())} slot(s): "
                                   + ", ".join(f"{h}={n}" for h, n in self.hosts.items()))
        addresses = self.check_resolve()
        self._first_addr = addresses.get(next(iter(self.hosts))) if self.hosts else None
        self.check_backend()
        probes = {}
        if self.use_ssh:
            reachable = [h for h, a in addresses.items() if a is not None]
            probes = self.check_ssh(reachable)
            if self.versions and probes:
                self.check_versions(probes)
        self.check_master(probes, addresses)
        self.check_env_files()
        return self.checks


def _version(pkg: str):
    import importlib.metadata as m

    try:
        return m.version(pkg)
    except m.PackageNotFoundError:
        return None


def _is_loopback(addr: str) -> bool:
    if addr.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def _is_local(addr: str) -> bool:
    if not addr:
        return False
    if _is_loopback(addr):
        return True
    try:
        s = socket.socket()
        s.bind((addr, 0))
        s.close()
        return True
    except OSError:
        return False


def _port_free_here(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def read_hosts(hostfile: str | None, hosts: list[str] | None, checks: list[Check]) -> dict | None:
    """The host pool from a hostfile (parse failures become a FAIL check) or from ``--hosts``."""
    if hostfile:
        try:
            text = Path(hostfile).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise PreflightUsage(f"{hostfile}: not UTF-8 text") from None
        except OSError as e:
            raise PreflightUsage(f"{hostfile}: {e.strerror or e}") from None
        try:
            pool = parse_hostfile(text)
        except HostfileError as e:
            checks.append(Check("FAIL", "hostfile", f"{hostfile}: {e}", "fix the line as shown; DeepSpeed would "
                                                                         "refuse this file"))
            return None
        for lint in lint_hostfile(text):
            checks.append(Check("warn", "hostfile", f"{hostfile}: {lint}"))
        return pool
    return {h: 1 for h in hosts}


def preflight(hostfile: str | None = None, hosts: list[str] | None = None, **kw) -> list[Check]:
    early: list[Check] = []
    pool = read_hosts(hostfile, hosts, early)
    if pool is None:
        return early
    pf = Preflight(pool, **kw)
    checks = pf.run()
    return checks[:1] + early + checks[1:]  # the hostfile summary first, then its warnings
