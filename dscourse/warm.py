"""Warm interpreters for a test session's launchers and ranks: torch, DeepSpeed and transformers imported once.

A rank of the course's scripts spends about 5 CPU-seconds importing torch, DeepSpeed and transformers before it
does anything, a launcher (torchrun, the deepspeed launcher, accelerate launch) about 2 importing torch, and a test
session starts some 200 of them on two cores. Where ``DSCOURSE_WARM_RANKS`` names a socket (the test session's
``conftest.py`` starts the server and sets it; notebooks run by nbval inherit it), a rank of a ``dscourse.scripts``
module, and a launcher that ``dscourse.launch`` starts (through ``python -m dscourse.warm --exec``), hands itself to
a server process that has made those imports once: the server forks, and the child becomes that process (its argv,
environment, working folder, stdin/stdout/stderr) and runs the module as ``__main__``. The launchers are real and
unchanged, and so is everything the ranks do; only the interpreter start is shared. Readers' runs, scripts and
benchmarks never set the variable: their processes start cold.

Every environment variable that a module may read at import time (``HF_*``, ``TORCH*``, ``CUDA*``, ``OMP_*``,
``DS_*`` and the like, less those a launcher sets for each rank, which are read at run time) is the one the process
imported under: a process whose values differ from the server's is redirected to a server started with its own
environment (one per environment). Three differences do not count: the GPU stack's variables on a PyTorch built
for the CPU only, ``DS_ACCELERATOR`` naming the accelerator DeepSpeed chose anyway, and the value of
``OMP_NUM_THREADS`` (the served process sets its threads from it). A launcher that a served launcher starts (the
deepspeed runner's per-node ``deepspeed.launcher.launch``) is served too. A rank of a simulated node
(``ip netns exec``) is forked into that node's network and mount namespaces. Where the server cannot be reached, or cannot enter a namespace (it is not root), the process
starts cold as usual, and the session's summary says so. A served process dies with its client (the process its
launcher started), and so does what it started: killing a launch's process tree kills its launcher and its ranks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

SOCKET_VARIABLE = "DSCOURSE_WARM_RANKS"
# Read at import time by torch, DeepSpeed, transformers, huggingface_hub, accelerate or the OpenMP runtime
# (not ACCELERATE_*: accelerate launch sets them for its ranks, and accelerate 1.15 reads them when an Accelerator or
# its state is made, not when it is imported; USE_TORCH_XLA is the one it reads at import)
_IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "DS_", "DEEPSPEED", "CUDA",
                         "NVIDIA", "OMP_", "MKL", "KMP_", "GOMP", "NCCL", "USE_TORCH_XLA", "PYTHON", "LD_",
                         "TOKENIZERS", "DSCOURSE", "XDG_", "HOME", "TMPDIR", "PATH")
# What launchers set per rank or per launch, read at run time (torch.distributed, torchelastic, the deepspeed launcher)
_RUN_TIME = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
             "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
             "CROSS_RANK", "CROSS_SIZE", "LOCAL_SIZE",
             # torchrun's, per launch: read when CUDA is first asked for, and when inductor first caches
             "PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_CACHE_DIR",
             "DSCOURSE_RUN_CACHE",  # read by dscourse.runcache when a launch is made
             SOCKET_VARIABLE}  # which server, not how to import
_RUN_TIME_PREFIXES = ("TORCHELASTIC_",)
# Read by the GPU stack only: on a PyTorch built without CUDA or ROCm (the CPU wheel) they change nothing a process
# imports, and a server takes clients whatever their values (launches set them for every GPU run)
_GPU_ONLY_PREFIXES = ("CUDA", "NCCL", "NVIDIA", "NVSHMEM", "TORCH_SYMM_MEM", "TORCH_CUDA", "PYTORCH_CUDA", "TORCH_NCCL",
                      "HIP_", "ROCR_", "ROCM", "HSA_")
# OpenMP reads it when it starts; a served process applies it instead (torch.set_num_threads), so only whether it is
# set counts: a process without it has torch choose its threads itself
_THREADS = "OMP_NUM_THREADS"
_SCRIPTS = Path(__file__).resolve().parent / "scripts"
_serving = False  # True in the server and in the ranks it forks: they never hand off again


def import_time_environment(env) -> dict:
    """The part of an environment that must match for a rank to be served by a server started with another one."""
    return {k: v for k, v in env.items()
            if k.startswith(_IMPORT_TIME_PREFIXES) and k not in _RUN_TIME and not k.startswith(_RUN_TIME_PREFIXES)}


def _as_served(env: dict) -> dict:
    """An import-time environment as a server in this process compares it with its own (see _GPU_ONLY_PREFIXES,
    _THREADS; ``DS_ACCELERATOR`` naming the accelerator DeepSpeed chose here is the same as not naming one)."""
    import torch

    cpu_only = torch.version.cuda is None and getattr(torch.version, "hip", None) is None
    out = {k: v for k, v in env.items() if not (cpu_only and k.startswith(_GPU_ONLY_PREFIXES))}
    if "DS_ACCELERATOR" in out:
        from deepspeed.accelerator import get_accelerator

        if out["DS_ACCELERATOR"] == get_accelerator().device_name():
            del out["DS_ACCELERATOR"]
    if _threads(out) is not None:
        out[_THREADS] = "(applied by the served process)"
    return out


def _threads(env: dict) -> int | None:
    value = env.get(_THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _script_of_this_process() -> dict | None:
    """The dscourse script this interpreter was asked to run, from the command line the kernel holds (sys.argv is
    not yet set while ``-m`` imports the package)."""
    try:
        return script_of(Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1])
    except OSError:
        return None


def script_of(argv: list[str]) -> dict | None:
    """``{"module", "argv"}`` of an interpreter's command line that runs a dscourse script (``python -u -m
    dscourse.scripts.X ...`` or ``python .../dscourse/scripts/X.py ...``), None for any other."""
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
        i += 1  # interpreter options (-u, -X ...)
    if i + 1 < len(argv) and argv[i] == "-m" and argv[i + 1].startswith("dscourse.scripts."):
        return {"module": argv[i + 1], "argv": [str(_SCRIPTS / (argv[i + 1].rsplit(".", 1)[1] + ".py")), *argv[i + 2:]]}
    if i < len(argv) and Path(argv[i]).resolve().parent == _SCRIPTS:
        return {"module": None, "argv": [argv[i], *argv[i + 1:]]}
    return None


def _socket() -> str | None:
    """The session server's socket, or None where none is named (unset, or ``off``: every process starts cold)."""
    path = os.environ.get(SOCKET_VARIABLE)
    return None if not path or path == "off" else path


def hand_off() -> None:
    """In a rank of a dscourse script, with a server named: let the server's fork be the rank, and exit as it exits.
    Returns (the rank goes on cold) when there is no server or it does not answer."""
    path = _socket()
    if not path or _serving:
        return
    script = _script_of_this_process()
    if script is not None:
        _served(path, {**script, "kind": "rank"})


# The launchers a test session's launches start (dscourse.launch): each imports torch before it starts anything
LAUNCHERS = ("torch.distributed.run", "deepspeed.launcher.runner", "deepspeed.launcher.launch",
             "accelerate.commands.launch")


def launcher_command(cmd: list[str]) -> list[str]:
    """``cmd`` (``python -m <launcher> ...``) as started in a test session with a server named: through
    ``python -m dscourse.warm --exec``, which hands the launcher to the server (it runs the same module with the same
    arguments, in a fork of an interpreter that has imported torch) or, where none takes it, executes ``cmd`` as is."""
    flags = 2 if cmd[1:2] == ["-u"] else 1  # the deepspeed runner starts the per-node launcher unbuffered
    if not _socket() or len(cmd) < flags + 2 or cmd[flags] != "-m" or cmd[flags + 1] not in LAUNCHERS:
        return cmd
    return [*cmd[:flags], "-m", "dscourse.warm", "--exec", *cmd[flags:]]


def _start_launchers_warm() -> None:
    """In a served launcher: a launcher it starts in turn (the deepspeed runner starts ``deepspeed.launcher.launch``
    on each node) is started through ``--exec`` too, as :func:`launcher_command` has it."""
    import subprocess

    popen = subprocess.Popen.__init__

    def __init__(self, args, *rest, **kwargs):
        if isinstance(args, (list, tuple)) and args:
            args = launcher_command([str(a) for a in args])
        popen(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = __init__


def _exec_launcher(argv: list[str]) -> None:
    """``--exec -m MODULE ARGS``: the launcher served warm, or started here as usual."""
    module, args = argv[1], argv[2:]
    path = _socket()
    if path:  # argv[0] becomes the module's file in the served process (runpy), as with -m
        _served(path, {"module": module, "argv": [module, *args], "kind": "launcher"})
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _served(path: str, script: dict) -> None:
    """Ask the server at ``path`` (and the one it redirects to) to become this process; exit as it exits. Returns
    when none takes it."""
    request = json.dumps({**script, "env": dict(os.environ), "cwd": os.getcwd(),
                          "namespaces": _namespaces()}).encode()
    for _ in range(2):  # the server, and at most one server of another environment that it names
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(ANSWER_SECONDS)
            conn.connect(path)
            socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
            answer = _read_line(conn)
        except OSError as e:
            _started_cold(path, script, f"no answer from the server: {type(e).__name__}: {e}")
            return
        if not answer.startswith("redirect "):
            break
        conn.close()
        path = answer.split(" ", 1)[1]
        if not _wait_for(path, ZYGOTE_START_SECONDS):
            _started_cold(path, script, f"the server of its environment did not start in {ZYGOTE_START_SECONDS} s")
            return
    if answer != "forked":
        conn.close()
        _started_cold(path, script, f"the server answered {answer!r}")
        return
    conn.settimeout(None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(1))  # closes the connection: the served process kills itself
    status = _read_line(conn)
    code = int(status) if status.lstrip("-").isdigit() else 1
    if code < 0:  # it died of a signal: so does this process, for the launcher to see
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _started_cold(path: str, script: dict, why: str) -> None:
    """Say in the session's list of cold starts (next to the session server's socket) which process started cold and
    why (``path``: the server that was asked, the session's or one it redirected to)."""
    try:
        with open(f"{_socket()}.cold", "a", encoding="utf-8") as f:
            f.write(json.dumps({"module": script.get("module") or script["argv"][0], "server": path, "why": why})
                    + "\n")
    except OSError:
        pass


def _wait_for(path: str, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _namespaces() -> dict:
    """This process's network and mount namespaces: a rank of a simulated node (``ip netns exec``) runs in its
    node's, and so does the fork that becomes it."""
    found = {}
    for kind in _NAMESPACES:
        try:
            found[kind] = os.readlink(f"/proc/self/ns/{kind}")
        except OSError:
            pass
    return found


_NAMESPACES = {"net": 0x40000000, "mnt": 0x00020000}  # CLONE_NEWNET, CLONE_NEWNS (setns(2))


def _enter_namespaces(pid: int, kinds: list[str]) -> None:
    """Move this (single-threaded, just forked) process into process ``pid``'s namespaces, as ``ip netns exec``
    put that process there: the network first, then the mounts (which needs a single thread)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for kind in kinds:
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            if libc.setns(fd, _NAMESPACES[kind]) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the {kind} namespace of process {pid}: {os.strerror(err)}")
        finally:
            os.close(fd)


def _read_line(conn) -> str:
    """One line of the server's, and not a byte more: a process that exits at once sends its exit status right
    after "forked", and a reader that took both as one answer would run the process a second time, cold."""
    data = b""
    while not data.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        data += byte
    return data.decode().strip()


def serve(path: str, ledger: str | None = None, main: bool = True) -> None:
    """A server: import what every rank imports, then fork a rank (or launcher) for each client that connects.

    The session's server (``main``) also has DeepSpeed's CPU ops built, and for a client whose import-time
    environment differs from its own it starts another server with that environment (one per environment, next to
    its socket) and redirects the client there: such a rank then also starts warm, and the environment it imports
    under is its own."""
    global _serving
    _serving = True
    import hashlib
    import importlib
    import subprocess
    import time

    # dscourse.scripts first: it answers DeepSpeed's CPU-feature query from the session's file (cpuinfo_once)
    for name in ("dscourse.scripts", "torch", "deepspeed", "deepspeed.runtime.engine", "deepspeed.runtime.zero.stage3",
                 "deepspeed.runtime.zero.stage_1_and_2", "transformers.models.gpt2.modeling_gpt2",
                 "transformers.models.llama.modeling_llama", "dscourse.models", "torch.distributed.run",
                 "deepspeed.launcher.runner", "deepspeed.launcher.launch", "accelerate.commands.launch", "psutil"):
        importlib.import_module(name)

    # meanwhile the server serves: a rank that needs an op waits on its lock
    if main:
        clear_stale_build_locks()  # left by an earlier session stopped in the middle of a build
    stage, builders = 0, (_build_ops(0) if main else [])
    expected, own = _as_served(import_time_environment(os.environ)), _namespaces()
    may_enter = os.geteuid() == 0  # setns(2) needs CAP_SYS_ADMIN; without it a rank in another namespace starts cold
    ledger = Path(ledger or f"{path}.jsonl")
    others: dict[str, str] = {}  # import-time environment -> the socket of the server started with it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)  # clients see the socket only once it listens
    open_conns: set = set()
    listener.settimeout(1.0)
    swept = 0.0
    while True:
        if main and time.monotonic() > swept + 5:
            swept = time.monotonic()
            clear_stale_build_locks()
        if builders and all(b.poll() is not None for b in builders):
            _load_ops(OP_STAGES[stage])  # built: every rank served from now on finds them loaded
            stage += 1
            builders = _build_ops(stage) if stage < len(OP_STAGES) else []
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        try:
            head, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            size = int.from_bytes(head[:8], "big")
            body = head[8:]
            while len(body) < size:
                body += conn.recv(size - len(body))
            request = json.loads(body)
            client = _peer_pid(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        what = request["module"] or request["argv"][0]
        asked = _as_served(import_time_environment(request["env"]))
        enter = [k for k in _NAMESPACES if request.get("namespaces", {}).get(k) != own.get(k)]
        answer = None
        if asked != expected:
            key = hashlib.sha256(json.dumps(sorted(asked.items())).encode()).hexdigest()[:12]
            if main and (key in others or len(others) < MAX_OTHER_SERVERS):
                if key not in others:
                    others[key] = f"{path}.{key}"
                    differ = sorted(k for k in asked.keys() | expected.keys() if asked.get(k) != expected.get(k))
                    print(f"server for {', '.join(differ)} as {what} has them: {others[key]}", flush=True)
                    subprocess.Popen([sys.executable, "-m", "dscourse.warm", others[key], "--ledger", str(ledger),
                                      "--other"], env=request["env"], stdin=subprocess.DEVNULL)
                answer = f"redirect {others[key]}"
            else:
                answer = "cold"
        elif enter and not may_enter:
            answer = "cold"
        if answer is not None:
            print(f"{answer.split()[0]}: {what}", flush=True)
            conn.sendall(f"{answer}\n".encode())
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            for other in open_conns:
                other.close()
            _become_the_rank(conn, request, fds, client, enter)  # never returns
        for fd in fds:
            os.close(fd)
        conn.sendall(b"forked\n")
        open_conns.add(conn)
        threading.Thread(target=_report_exit, args=(pid, conn, open_conns, ledger, request), daemon=True).start()


# Distinct import-time environments served in one session (the course's tests and notebooks have about a dozen):
# a server costs about what two cold processes do, and most environments start a launcher and two ranks
MAX_OTHER_SERVERS = 16
ZYGOTE_START_SECONDS = 120  # how long a redirected client waits for that server to listen before it starts cold
# How long a client waits for the server's answer: on a busy machine the server may be loading a freshly built op, and
# a cold start (some 6 CPU-seconds of imports) is worse than a wait of a few seconds
ANSWER_SECONDS = 60


def _peer_pid(conn) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


# How far below the op builds a test session's other processes run (conftest.py, and the processes served here): the
# builds are what the first launches wait for, and on 2 cores they otherwise share the CPU with everything else
BELOW_OP_BUILDS = 5


# DeepSpeed's CPU ops that the course's ranks load (shared-memory all-reduce at init, CPU Adam for offload, the CPU
# accelerator's fused Adam, async I/O for NVMe offload): compiled on first use, behind a lock file that a rank killed while it holds it leaves
# behind for every later rank to wait on. The server has them compiled at once, side by side, by processes no test
# kills, then loads them itself, so that a rank served after that finds them loaded (DeepSpeed's OpBuilder keeps
# loaded ops) and takes no lock at all.
# The shared-memory all-reduce first and alone: every rank loads it when its process group starts. The async I/O op
# of NVMe offload (notebook 07; it needs libaio, and loads the pin-memory op with it) last: one notebook cell uses it.
OP_STAGES = (("ShareMemCommBuilder",), ("CPUAdamBuilder", "FusedAdamBuilder"), ("AsyncIOBuilder",))
OPS = tuple(name for stage in OP_STAGES for name in stage)


def clear_stale_build_locks() -> list[str]:
    """Remove each build lock of torch's JIT extensions that no process holds; the ones removed.

    torch's ``FileBaton`` creates ``<extensions>/<op>/lock`` and keeps it open until the build (or load) is done,
    then deletes it; a process killed in between leaves the file, and every later load of that op waits for it to
    go, forever. A lock that no live process has open is such a leftover."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    locks = {}
    for lock in root.glob("*/*/lock") if root.is_dir() else ():
        try:
            st = lock.stat()
            locks[(st.st_dev, st.st_ino)] = lock  # by inode: a lock made anew meanwhile is another file
        except OSError:
            pass
    if not locks:
        return []
    held = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd).endswith("/lock"):
                    st = os.stat(fd)
                    held.add((st.st_dev, st.st_ino))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    stale = []
    for key, lock in locks.items():
        try:
            st = lock.stat()
            if key not in held and (st.st_dev, st.st_ino) == key:
                lock.unlink()
                stale.append(str(lock))
                print(f"removed a build lock nobody held: {lock}", flush=True)
        except OSError:
            pass
    return stale


def _build_ops(stage: int = 0) -> list:
    import subprocess

    return [subprocess.Popen([sys.executable, "-m", "dscourse.warm", "--load-op", name], stdin=subprocess.DEVNULL)
            for name in OP_STAGES[stage]]


def _load_ops(names=OPS) -> None:
    from deepspeed.accelerator import get_accelerator

    for name in names:
        try:
            builder = get_accelerator().create_op_builder(name)
            if builder is not None:
                builder.load()
                print(f"loaded {name}", flush=True)
        except Exception as e:  # a rank that needs it meets the same error itself, with DeepSpeed's own message
            print(f"could not load {name}: {type(e).__name__}: {e}", flush=True)


def _report_exit(pid: int, conn, open_conns: set, ledger: Path, request: dict) -> None:
    _, status, usage = os.wait4(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    with open(ledger, "a", encoding="utf-8") as f:  # the served ranks' CPU, which no launcher's rusage counts
        f.write(json.dumps({"pid": pid, "kind": request.get("kind", "rank"), "module": request.get("module"),
                            "argv": request.get("argv", [])[:12], "code": code,
                            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}) + "\n")
    try:
        conn.sendall(f"{code}\n".encode())
    except OSError:
        pass
    open_conns.discard(conn)
    conn.close()


def _become_the_rank(conn, request: dict, fds: list[int], client: int, enter: list[str]) -> None:
    import runpy
    import traceback

    code = 1
    try:
        if enter:  # first, while this process has one thread
            _enter_namespaces(client, enter)
        os.nice(BELOW_OP_BUILDS)  # as the test session's own processes: DeepSpeed's op builds come first
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("kind") == "launcher":
            _start_launchers_warm()
        threads = _threads(request["env"])
        if threads is not None:  # what OpenMP would have read at the start of a cold process
            import torch

            torch.set_num_threads(threads)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Thread(target=_die_with_the_client, args=(conn,), daemon=True).start()
        sys.argv = list(request["argv"])
        # as a cold start has it: the working folder first for ``-m``, the script's folder for a path
        sys.path[0] = request["cwd"] if request["module"] else str(Path(request["argv"][0]).resolve().parent)
        try:
            if request["module"]:
                sys.modules.pop(request["module"], None)  # imported by the server: run afresh, as -m would
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(request["argv"][0], run_name="__main__")
            code = 0
        except SystemExit as e:  # as the interpreter itself turns sys.exit(x) into an exit status
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
            if code == 1 and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with_the_client(conn) -> None:
    """The client is the process the launch started and will kill: when it is gone, so is this process, and what it
    started (a served launcher's ranks: torchrun starts each in a session of its own, as dscourse.launch.kill_tree
    knows)."""
    try:
        while conn.recv(64):
            pass
    except OSError:
        pass
    import psutil

    try:
        for child in psutil.Process().children(recursive=True):
            child.kill()
    except psutil.Error:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def served() -> tuple[int, float] | None:
    """(processes served, their CPU seconds) of this session's server, or None without one."""
    path = _socket()
    ledger = Path(f"{path}.jsonl") if path else None
    if ledger is None or not ledger.exists():
        return None
    rows = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(rows), sum(r["cpu_seconds"] for r in rows)


def started_cold() -> list[dict]:
    """The processes of this session that asked the server and started cold, each with why."""
    path = _socket()
    cold = Path(f"{path}.cold") if path else None
    if cold is None or not cold.exists():
        return []
    return [json.loads(line) for line in cold.read_text(encoding="utf-8").splitlines() if line.strip()]


def start_server(folder: Path, env: dict | None = None):
    """Start a server whose socket is in ``folder``: (socket path, process). The caller sets SOCKET_VARIABLE to the
    path for the launches that should use it, and kills the process's group when done."""
    import subprocess

    path = folder / "warm-ranks.sock"
    log = open(folder / "warm-ranks.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "dscourse.warm", str(path)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    log.close()
    return path, proc


if __name__ == "__main__":
    if sys.argv[1] == "--exec":
        _exec_launcher(sys.argv[2:])
    elif sys.argv[1] == "--build-ops":  # every op, stage after stage, as a session's server has them built
        failed = 0
        for stage in range(len(OP_STAGES)):
            failed += sum(builder.wait() != 0 for builder in _build_ops(stage))
        sys.exit(1 if failed else 0)
    elif sys.argv[1] == "--load-op":
        from dscourse.cpuinfo_once import use_saved

        use_saved()  # DeepSpeed's CPU-feature query answered from the session's file, as in a rank

        _load_ops([sys.argv[2]])
    else:
        serve(sys.argv[1], ledger=sys.argv[3] if "--ledger" in sys.argv else None, main="--other" not in sys.argv)
