"""Warm interpreters for a test session's ranks (dscourse.warm): the same results as a cold start, cold wherever the
environment differs at import time, and no served rank outliving its launch."""

import json
import os
import sys
import time

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
    assert warm.served()[0] == 2
    monkeypatch.setenv(warm.SOCKET_VARIABLE, "off")  # no such socket: cold
    cold_run = run_ranks("dscourse.scripts.zero_memory", args, nproc=2, timeout=600, out_dir=tmp_path / "c",
                         reuse=False)
    assert _results(warm_run.ranks) == _results(cold_run.ranks)  # counted bytes and fp32 losses, exactly
    assert "stage 3 step 1: loss" in warm_run.log  # the rank's own output reaches the launcher


@pytest.mark.engine
def test_another_import_time_environment_starts_cold(server, tmp_path):
    run_ranks("dscourse.scripts.allreduce_bench", ["--sizes", "1e3", "--iters", "1"], nproc=2, timeout=600,
              env={"HF_HOME": str(tmp_path / "hf")}, out_dir=tmp_path / "o", reuse=False)
    assert warm.served() is None  # nothing served: both ranks started cold
    assert "HF_HOME differ" in (tmp_path / "warm-ranks.log").read_text()


@pytest.mark.engine
def test_a_killed_launch_leaves_no_served_rank_behind(server, tmp_path):
    import psutil

    with pytest.raises(LaunchError, match="did not finish in 20 s"):
        run_ranks("dscourse.scripts.zero_memory", ["--shape", "gpt2-small-cpu", "--steps", "100000"], nproc=2,
                  timeout=20, out_dir=tmp_path / "o", reuse=False)
    def ranks():  # the server's children less the op builders it may still be running
        return [p for p in psutil.Process(server.pid).children() if "--load-op" not in p.cmdline()]

    deadline = time.monotonic() + 20
    while ranks() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ranks() == []
    assert warm.served()[0] == 2 and sys.platform.startswith("linux")
