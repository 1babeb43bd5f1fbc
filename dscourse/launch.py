"""Launch a ``dscourse.scripts`` module on several ranks through a real launcher, safely.

Every launch gets a free port, ``OMP_NUM_THREADS=1`` (two ranks on two cores would otherwise
oversubscribe), gloo on the loopback interface (the ranks share one machine), a timeout after which the whole
process group is killed, and a fresh output folder from which the ranks' JSON results are read back.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import runcache

LAUNCHERS = ("torchrun", "deepspeed", "accelerate")


class LaunchError(RuntimeError):
    """A launch failed or timed out; the message carries the end of its log, ``.log`` all of it."""

    def __init__(self, message: str, log: str = "", timed_out: bool = False):
        super().__init__(message)
        self.log, self.timed_out = log, timed_out


@dataclass
class LaunchResult:
    ranks: list[dict]
    log: str
    command: list[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(module: str, args: list[str], nproc: int | None, launcher: str = "torchrun",
                     port: int | None = None, launcher_args: list[str] = ()) -> list[str]:
    """The command line that starts ``python -m module args`` on ``nproc`` local ranks.

    ``launcher_args`` go to the launcher itself (``--use_deepspeed --zero_stage 2``, ``--config_file F``).
    ``accelerate`` is given the module's file, as a reader gives it ``train.py``; its ``--num_processes``
    comes from ``nproc`` unless ``launcher_args`` name it, or ``nproc`` is None (accelerate then decides).
    """
    if nproc is None and launcher != "accelerate":
        raise ValueError(f"{launcher} needs a number of processes; only accelerate can decide it itself")
    if nproc is not None and nproc < 1:
        raise ValueError(f"need at least one process, not {nproc}")
    port = port or free_port()
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={port}", *launcher_args, "-m", module, *args]
    if launcher == "deepspeed":
        # The deepspeed launcher takes a script path; --module runs it as `python -m`.
        return [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_gpus={nproc}",
                "--master_addr=127.0.0.1", f"--master_port={port}", *launcher_args, "--module", module, *args]
    if launcher == "accelerate":
        import importlib.util

        script = importlib.util.find_spec(module).origin
        named = nproc is None or any(a.startswith("--num_processes") for a in launcher_args)
        nprocs = [] if named else [f"--num_processes={nproc}"]
        return [sys.executable, "-m", "accelerate.commands.launch", *launcher_args, *nprocs,
                f"--main_process_port={port}", script, *args]
    raise ValueError(f"unknown launcher {launcher!r}: use one of {LAUNCHERS}")


def run_ranks(module: str, args: list[str], nproc: int | None = 2, launcher: str = "torchrun",
              timeout: float = 600, env: dict | None = None, out_dir: str | Path | None = None,
              launcher_args: list[str] = (), expect_ranks: int | None = None, reuse: bool = True) -> LaunchResult:
    """Run ``module`` on ``nproc`` ranks; return the ``rank<N>.json`` each wrote to ``--out``.

    ``expect_ranks``: how many results to expect when the launcher decides the number of processes
    itself (``accelerate launch`` with ``nproc=None``); default ``nproc``. Within a test session an identical
    launch is done once (``dscourse.runcache``); ``reuse=False`` always launches (a test comparing two runs of
    the same thing must).
    """
    if nproc is None and expect_ranks is None:
        raise ValueError("with nproc=None (the launcher decides), say how many results to expect: expect_ranks")
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="dscourse-"))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rank*.json"):
        old.unlink()
    launch = dict(nproc=nproc, launcher=launcher, env=env, launcher_args=list(launcher_args), expect_ranks=expect_ranks)
    if reuse and runcache.cache_root():
        return _reused_or_launched(module, list(args), out, timeout, **launch)
    return _launch(module, args, timeout=timeout, out=out, **launch)


def _reused_or_launched(module: str, args: list[str], out: Path, timeout: float, **launch) -> LaunchResult:
    """The session's stored result of this launch (its outputs copied here), or the launch, stored for next time."""
    key, outputs = runcache.launch_key(module, args, **launch)
    with runcache.claim(key):
        return _stored_or_launched(key, outputs, module, args, out, timeout, **launch)


def _stored_or_launched(key: str, outputs: list[int], module: str, args: list[str], out: Path, timeout: float,
                        **launch) -> LaunchResult:
    stored = runcache.load(key, args, outputs, out)
    if stored is not None and stored.get("timed_out_after", timeout) < timeout:
        runcache.forget(key)  # it timed out under a shorter limit than this one's: try again
        stored = None
    if stored is not None:
        runcache.record(key, module, args, reused=True, seconds=0.0)
        if "error" in stored:
            raise LaunchError(stored["error"], stored["log"], timed_out="timed_out_after" in stored)
        cmd = launcher_command(module, [*args, "--out", str(out)], launch["nproc"], launch["launcher"],
                               launcher_args=launch["launcher_args"])
        return LaunchResult(ranks=stored["ranks"], log=stored["log"], command=cmd)
    t0, cpu0 = time.monotonic(), _children_cpu()
    try:
        result = _launch(module, args, timeout=timeout, out=out, **launch)
    except LaunchError as exc:
        # A time-out is stored too: the same launch again in this session would most likely wait as long again,
        # and on a slow machine a chain of such retries is what runs a test session past any limit.
        runcache.store(key, args, outputs, out, {"error": str(exc), "log": exc.log,
                                                 **({"timed_out_after": timeout} if exc.timed_out else {})})
        raise
    finally:
        runcache.record(key, module, args, reused=False, seconds=time.monotonic() - t0,
                        cpu_seconds=_children_cpu() - cpu0, nproc=launch["nproc"])
    runcache.store(key, args, outputs, out, {"ranks": result.ranks, "log": result.log})
    return result


def _children_cpu() -> float:
    """CPU seconds of this process's finished children and theirs (a launcher waits for its ranks): one launch's
    cost where launches in a process run one after the other."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _launch(module: str, args: list[str], nproc, launcher, timeout, env, out: Path, launcher_args,
            expect_ranks) -> LaunchResult:
    port = free_port()
    _remove_shm(port)
    cmd = launcher_command(module, [*args, "--out", str(out)], nproc, launcher, port=port,
                           launcher_args=list(launcher_args))
    full_env = _launch_env(env)
    if launcher == "torchrun":
        full_env.update(cpu_ranks_if_gpus_short(nproc, env))
    if launcher == "deepspeed" and "CUDA_VISIBLE_DEVICES" not in full_env:
        # On a CPU-only machine the deepspeed launcher needs to be told how many "devices" there are.
        full_env.setdefault("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(nproc)))
    from .warm import launcher_command as warm_launcher  # in a test session: the launcher itself starts warm

    proc = subprocess.Popen(warm_launcher(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full_env, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        try:
            log, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            log = ""
        raise LaunchError(f"{module} on {nproc} ranks did not finish in {timeout:.0f} s and was killed.\n"
                          + _stale_build_locks() + _tail(log), log, timed_out=True) from None
    finally:
        kill_tree(proc)
        _remove_shm(port)
    if proc.returncode != 0:
        raise LaunchError(f"{module} on {nproc} ranks exited with code {proc.returncode}.\n" + _tail(log), log)
    expected = nproc if expect_ranks is None else expect_ranks
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(expected)
             if (out / f"rank{r}.json").exists()]
    if len(ranks) != expected:
        raise LaunchError(f"{module}: {len(ranks)} of {expected} ranks wrote results.\n" + _tail(log), log)
    return LaunchResult(ranks=ranks, log=log, command=cmd)


def _launch_env(env: dict | None) -> dict:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    # Ranks on one machine talk over loopback. Left to itself gloo binds to the address the host name resolves to,
    # which a sandboxed or firewalled machine may not let a process reach, even its own: every rank then waits for
    # its peers until the timeout. (Simulated nodes in network namespaces name their own interface.)
    full_env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # Multicast over NVLink stays off on every GPU run (shared hosts; see the device notes).
    full_env.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"})
    if full_env.get("TORCH_CUDA_ARCH_LIST"):
        full_env["TORCH_CUDA_ARCH_LIST"] = deepspeed_arch_list(full_env["TORCH_CUDA_ARCH_LIST"])
    return full_env


def start_warm_ranks(folder: str | Path):
    """Start a server of warm interpreters (``dscourse.warm``) with the environment every launch gives its ranks:
    (socket path, process). Set ``dscourse.warm.SOCKET_VARIABLE`` to the path where launches should use it."""
    from . import warm

    return warm.start_server(Path(folder), _launch_env(None))


def deepspeed_arch_list(value: str) -> str:
    """``TORCH_CUDA_ARCH_LIST`` in a form DeepSpeed 0.19.8's JIT op builder can read.

    PyTorch accepts arch-specific targets such as ``9.0a`` (and images set them); the builder sorts the
    list with ``int()`` on each part and fails before compiling, in the rank, with "invalid literal for
    int() with base 10: '0a'" (deepspeedai/DeepSpeed PR #8619, open). Seen on the lent H100 when the
    Trainer built FusedAdam. The plain target (``9.0``) is enough for the ops the course builds.
    """
    targets = []
    for target in value.replace(";", " ").split():
        ptx = "+PTX" if target.endswith("+PTX") else ""
        plain = target.removesuffix("+PTX").rstrip("af") + ptx
        if plain not in targets:
            targets.append(plain)
    return ";".join(targets)


@dataclass
class NodesResult:
    ranks: list[dict]
    logs: list[str]
    commands: list[list[str]]


def run_nodes(commands: list[list[str]], out_dir: str | Path, world_size: int, timeout: float = 600,
              env: dict | None = None, node_env: list[dict] | None = None,
              prefixes: list[list[str]] | None = None, grace: float = 5) -> NodesResult:
    """Start one launcher per "node" (each a full command line, e.g. from ``dscourse.multinode.commands``),
    wait for all of them, and read back the ``rank<N>.json`` that the ``world_size`` ranks wrote to ``out_dir``.

    ``prefixes[i]`` goes in front of node i's command (``ip netns exec NAME`` runs it "on" another host).
    All nodes share one deadline; when one node fails, the others get ``grace`` seconds before they are killed
    (they would otherwise wait for their lost peer until the timeout). Every process tree is killed on exit.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rank*.json"):
        old.unlink()
    from .warm import launcher_command as warm_launcher  # in a test session: the launchers start warm

    full = [[*(prefixes[i] if prefixes else []), *cmd] for i, cmd in enumerate(commands)]  # what each node runs
    logs = [tempfile.TemporaryFile(mode="w+", prefix="dscourse-node-") for _ in full]
    procs = []
    try:
        for i, cmd in enumerate(commands):
            node = {**(env or {}), **(node_env[i] if node_env else {})}
            started = [*(prefixes[i] if prefixes else []), *warm_launcher(cmd)]
            procs.append(subprocess.Popen(started, stdout=logs[i], stderr=subprocess.STDOUT, text=True,
                                          env={**_launch_env(node), **cpu_ranks_if_gpus_short(world_size, node)},
                                          start_new_session=True))
        deadline = time.monotonic() + timeout
        failed_at = None
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = now
            if now > deadline or (failed_at is not None and now > failed_at + grace):
                break
            time.sleep(0.2)
        running = [i for i, p in enumerate(procs) if p.poll() is None]
    finally:
        for p in procs:
            kill_tree(p)
    texts = []
    for f in logs:
        f.seek(0)
        texts.append(f.read())
        f.close()
    report = "\n".join(f"--- node {i} ({'killed' if i in running else f'exit {procs[i].returncode}'}) ---\n"
                       + _tail(t, 15) for i, t in enumerate(texts))
    if running and not any(p.returncode not in (None, 0) for i, p in enumerate(procs) if i not in running):
        raise LaunchError(f"{len(running)} of {len(procs)} nodes did not finish in {timeout:.0f} s and were "
                          f"killed.\n" + report)
    if any(p.returncode != 0 for p in procs):
        codes = ", ".join(f"node {i}: {'killed' if i in running else p.returncode}" for i, p in enumerate(procs))
        raise LaunchError(f"nodes failed ({codes}).\n" + report)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)
             if (out / f"rank{r}.json").exists()]
    if len(ranks) != world_size:
        raise LaunchError(f"{len(ranks)} of {world_size} ranks wrote results.\n" + report)
    return NodesResult(ranks=ranks, logs=texts, commands=full)


def isolated_hf_home(folder: str | Path) -> dict:
    """The environment of a launch that must not see this machine's Hugging Face settings (an ``accelerate config``
    default file above all): ``HF_HOME`` an empty folder, ``folder``. In a test session the session's own instead
    (``conftest.py`` gives it to every process), the same for every launch: each distinct ``HF_HOME`` would cost the
    session another warm server (``dscourse.warm``), since the Hugging Face libraries read it when imported."""
    root = runcache.cache_root()
    home = root / "hf_home" if root else Path(folder)
    home.mkdir(parents=True, exist_ok=True)
    return {"HF_HOME": str(home)}


def cpu_ranks_if_gpus_short(ranks: int, env: dict | None = None) -> dict:
    """The environment that moves ``ranks`` ranks onto the CPU when this machine has GPUs, but fewer than ranks.

    A 2-rank demo (or two simulated "nodes") on a one-GPU machine: NCCL refuses two ranks on one GPU
    ("invalid usage"), so such ranks run on the CPU with gloo, as on a machine without a GPU. Nothing
    changes where the caller chose the devices (``CUDA_VISIBLE_DEVICES`` in ``env``) or there is no GPU.
    """
    if "CUDA_VISIBLE_DEVICES" in (env or {}) or not visible_gpus() or not gpus_short(ranks):
        return {}
    return {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}


def gpus_short(ranks: int) -> bool:
    """Whether ``ranks`` ranks outnumber this machine's GPUs, so that they run on CPU ranks (none at all counts)."""
    return visible_gpus() < ranks


def visible_gpus() -> int:
    """CUDA devices the ranks would see (0 without a GPU, cheaply: torch is imported only where one may be)."""
    if os.environ.get("DS_ACCELERATOR") == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    if "torch" not in sys.modules and not shutil.which("nvidia-smi"):
        return 0
    import torch

    return torch.cuda.device_count()


def _remove_shm(port: int) -> None:
    """Remove the shared-memory segments of DeepSpeed's CPU all-reduce for this port.

    DeepSpeed names them /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> and does not
    unlink them; a later job that draws the same port would attach to the stale ones and abort.
    """
    for stale in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{port}_*"):
        try:
            stale.unlink()
        except OSError:
            pass


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill the launcher and every process below it.

    torchrun starts each rank in a session of its own, so killing the launcher's process group
    would leave the ranks running (and holding the output pipe open).
    """
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stale_build_locks() -> str:
    """A hint when torch's JIT build lock of a DeepSpeed op is left behind: a build killed half-way (a test run
    stopped with Ctrl-C, say) leaves ``<extension>/lock``, and every later rank waits on it until its timeout."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    locks = sorted(str(p) for p in root.glob("*/*/lock")) if root.is_dir() else []
    if not locks:
        return ""
    return ("The ranks may have waited on a build lock that a killed build left behind; if no build is running, "
            f"delete it and launch again: {', '.join(locks)}\n")


def _tail(log: str, lines: int = 25) -> str:
    """The end of a log, preceded by the lines that name the root cause (a rank's exception or abort)."""
    all_lines = log.strip().splitlines()
    cause = [ln for ln in all_lines[:-lines]
             if any(w in ln for w in ("Error", "what()", "terminate called", "Aborted", "Exception"))][-10:]
    return "\n".join(cause + (["..."] if cause else []) + all_lines[-lines:])
