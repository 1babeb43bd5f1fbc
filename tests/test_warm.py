"""Warm interpreters for a test session's ranks and launchers (dscourse.warm): the same results as a cold start, a
server of its own for another import-time environment, and no served process outliving its launch."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from dscourse import warm
from dscourse.launch import LaunchError, run_ranks, start_warm_ranks

SCRIPTS = os.path.join(os.path.dirname(warm.__file__), "scripts")


def test_only_a_dscourse_script_is_handed_off():
    assert warm.script_of(["python", "-u", "-m", "dscourse.scripts.zero_memory", "--stage", "2"]) == {
        "module": "dscourse.scripts.zero_memory", "argv": [os.path.join(SCRIPTS, "zero_memory.py"), "--stage", "2"]}
    path = os.path.join(SCRIPTS, "accelerate_train.py")
    assert warm.script_of(["python", path, "--shape", "gpt2-tiny"]) == {"module": None,
                                                                       "argv": [path, "--shape", "gpt2-tiny"]}
    assert warm.script_of(["python", "-m", "torch.distributed.run", "-m", "dscourse.scripts.zero_memory"]) is None
    assert warm.script_of(["python", "-m", "pytest"]) is None and warm.script_of(["python"]) is None


def test_what_a_launcher_sets_per_rank_does_not_count_but_import_time_settings_do():
    env = {"RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x", "GLOO_SOCKET_IFNAME": "lo",
           "HF_HOME": "/h", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0", "TORCH_CUDA_ARCH_LIST": "9.0"}
    assert warm.import_time_environment(env) == {"HF_HOME": "/h", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "0",
                                                 "TORCH_CUDA_ARCH_LIST": "9.0"}


@pytest.mark.engine
def test_what_cannot_change_the_imports_here_does_not_count():
    """On the CPU build of PyTorch the GPU stack's variables change nothing; DS_ACCELERATOR naming the accelerator
    DeepSpeed picks anyway is no difference; OMP_NUM_THREADS counts by being set, its value is applied when served."""
    import torch
    from deepspeed.accelerator import get_accelerator

    base = {"HF_HOME": "/h", "OMP_NUM_THREADS": "1"}
    same = {**base, "OMP_NUM_THREADS": "4", "DS_ACCELERATOR": get_accelerator().device_name()}
    assert warm._as_served(same) == warm._as_served(base)
    assert warm._as_served({"HF_HOME": "/h"}) != warm._as_served(base)  # torch would pick its own thread count
    assert warm._as_served({**base, "HF_HOME": "/other"}) != warm._as_served(base)
    assert warm._as_served({**base, "OMP_NUM_THREADS": "many"}) != warm._as_served(base)
    gpu = {**base, "CUDA_VISIBLE_DEVICES": "", "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    cpu_only = torch.version.cuda is None and getattr(torch.version, "hip", None) is None
    assert (warm._as_served(gpu) == warm._as_served(base)) == cpu_only


@pytest.fixture
def server(tmp_path, monkeypatch):
    """This test's own server (not the session's), so that what it served is this test's alone."""
    path, proc = start_warm_ranks(tmp_path)
    monkeypatch.setenv(warm.SOCKET_VARIABLE, str(path))
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "warm-ranks.log").read_text()
        time.sleep(0.2)
    yield proc
    os.killpg(proc.pid, 9)
    proc.wait()


def _children(server) -> list:
    """The server's live children (a served process that has just exited is a zombie until the server reaps it)."""
    import psutil

    alive = []
    for p in psutil.Process(server.pid).children():
        try:
            p.cmdline()
            alive.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return alive


def _results(ranks):
    """What a rank computed, less how long it took."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k and "time" not in k}
        return [strip(v) for v in value] if isinstance(value, list) else value
    return json.dumps(strip(ranks), sort_keys=True)


@pytest.mark.engine
def test_a_warm_rank_computes_what_a_cold_one_does(server, tmp_path, monkeypatch):
    args = ["--shape", "gpt2-tiny", "--stage", "3", "--steps", "2"]
    warm_run = run_ranks("dscourse.scripts.zero_memory", args, nproc=2, timeout=600, out_dir=tmp_path / "w",
                         reuse=False)
    assert warm.served()[0] == 3  # torchrun and two ranks
    monkeypatch.setenv(warm.SOCKET_VARIABLE, "off")  # no such socket: cold
    cold_run = run_ranks("dscourse.scripts.zero_memory", args, nproc=2, timeout=600, out_dir=tmp_path / "c",
                         reuse=False)
    assert _results(warm_run.ranks) == _results(cold_run.ranks)  # counted bytes and fp32 losses, exactly
    assert not list(Path.cwd().glob("off*"))  # off asks no server at all (and leaves nothing where a rank runs)
    assert "stage 3 step 1: loss" in warm_run.log  # the rank's own output reaches the launcher


@pytest.mark.engine
def test_another_import_time_environment_is_served_by_a_server_started_with_it(server, tmp_path):

    hf = str(tmp_path / "hf")
    run_ranks("dscourse.scripts.allreduce_bench", ["--sizes", "1e3", "--iters", "1"], nproc=2, timeout=600,
              env={"HF_HOME": hf}, out_dir=tmp_path / "o", reuse=False)
    log = (tmp_path / "warm-ranks.log").read_text()
    assert "server for HF_HOME" in log, log
    others = [p for p in _children(server) if "--other" in p.cmdline()]
    assert len(others) == 1 and others[0].environ()["HF_HOME"] == hf  # the ranks imported under their own HF_HOME
    kinds = sorted(json.loads(line)["kind"] for line in open(f"{os.environ[warm.SOCKET_VARIABLE]}.jsonl"))
    assert kinds == ["launcher", "rank", "rank"]  # torchrun itself and both ranks, all served warm


@pytest.mark.engine
def test_the_launcher_that_the_deepspeed_runner_starts_is_served_too(server, tmp_path):
    run_ranks("dscourse.scripts.allreduce_bench", ["--sizes", "1e3", "--iters", "1"], nproc=2, launcher="deepspeed",
              timeout=600, out_dir=tmp_path / "o", reuse=False)
    served = sorted((r["kind"], r["module"]) for r in map(json.loads, open(f"{os.environ[warm.SOCKET_VARIABLE]}.jsonl")))
    assert served == [("launcher", "deepspeed.launcher.launch"), ("launcher", "deepspeed.launcher.runner"),
                      ("rank", "dscourse.scripts.allreduce_bench"), ("rank", "dscourse.scripts.allreduce_bench")]


def test_only_the_course_launchers_are_started_through_the_server(monkeypatch):
    monkeypatch.setenv(warm.SOCKET_VARIABLE, "/nonexistent.sock")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "dscourse.scripts.zero_memory"]
    assert warm.launcher_command(cmd) == [sys.executable, "-m", "dscourse.warm", "--exec", *cmd[1:]]
    assert warm.launcher_command([sys.executable, "-m", "pytest"]) == [sys.executable, "-m", "pytest"]
    per_node = [sys.executable, "-u", "-m", "deepspeed.launcher.launch", "--world_info=e30=", "-m", "x"]
    assert warm.launcher_command(per_node) == [sys.executable, "-u", "-m", "dscourse.warm", "--exec", *per_node[2:]]
    monkeypatch.setenv(warm.SOCKET_VARIABLE, "off")
    assert warm.launcher_command(cmd) == cmd  # off: everything cold, the command as written
    monkeypatch.delenv(warm.SOCKET_VARIABLE)
    assert warm.launcher_command(cmd) == cmd  # a reader's launch is the command as written


@pytest.mark.engine
def test_a_launcher_nobody_serves_runs_as_itself(tmp_path, monkeypatch):
    """No server at the named socket: ``--exec`` becomes the launcher itself (here its --help)."""
    import subprocess

    monkeypatch.setenv(warm.SOCKET_VARIABLE, str(tmp_path / "none.sock"))
    done = subprocess.run(warm.launcher_command([sys.executable, "-m", "torch.distributed.run", "--help"]),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--nproc_per_node" in done.stdout


@pytest.mark.engine
def test_a_killed_launch_leaves_no_served_rank_behind(server, tmp_path):

    with pytest.raises(LaunchError, match="did not finish in 20 s"):
        run_ranks("dscourse.scripts.zero_memory", ["--shape", "gpt2-small-cpu", "--steps", "100000"], nproc=2,
                  timeout=20, out_dir=tmp_path / "o", reuse=False)
    def ranks():  # what the server serves (the launcher and its ranks), less its op builders and other servers
        return [p for p in _children(server) if "--load-op" not in p.cmdline() and "--other" not in p.cmdline()]

    deadline = time.monotonic() + 20
    while ranks() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ranks() == []
    # the launcher was served (its ranks too, unless the kill came before the server got to them), and is gone
    kinds = [json.loads(line)["kind"] for line in open(f"{os.environ[warm.SOCKET_VARIABLE]}.jsonl")]
    assert "launcher" in kinds and sys.platform.startswith("linux")


def test_a_build_lock_nobody_holds_is_removed_and_a_held_one_is_kept(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    left, held = tmp_path / "py311_cpu" / "cpu_adam" / "lock", tmp_path / "py311_cpu" / "fused_adam" / "lock"
    left.parent.mkdir(parents=True)
    held.parent.mkdir(parents=True)
    left.write_text("")  # what a build killed half-way leaves
    holder = subprocess.Popen([sys.executable, "-c", f"import os, sys, time; os.open({str(held)!r}, os.O_CREAT | "
                               "os.O_EXCL); print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # as torch's FileBaton holds it while it builds
        assert warm.clear_stale_build_locks() == [str(left)]
        assert not left.exists() and held.exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_server_answer_and_the_exit_status_are_read_as_two_lines():
    """A served process that exits at once: "forked" and its status arrive together, and must be read apart."""
    import socket

    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"forked\n2\n")
        assert warm._read_line(ours) == "forked"
        assert warm._read_line(ours) == "2"
