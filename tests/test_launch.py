"""The launch helper: real torchrun, real deepspeed launcher, bounded time, clear failures."""

import time

import pytest

from dscourse.launch import LaunchError, launcher_command, run_ranks

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")


def test_deepspeed_launcher_runs_the_same_script(tmp_path):
    res = run_ranks("dscourse.scripts.zero_memory", ["--shape", "gpt2-tiny", "--stage", "2", "--steps", "1"],
                    nproc=2, launcher="deepspeed", timeout=600, out_dir=tmp_path)
    assert sorted(r["rank"] for r in res.ranks) == [0, 1]
    assert "deepspeed.launcher.runner" in " ".join(res.command)


def test_a_failing_script_raises_with_the_end_of_its_log(tmp_path):
    with pytest.raises(LaunchError, match="exited with code"):
        run_ranks("dscourse.scripts.zero_memory", ["--shape", "no-such-shape"], nproc=2, timeout=600, out_dir=tmp_path)


def test_a_hanging_launch_is_killed_at_its_timeout(tmp_path, monkeypatch):
    from dscourse import runcache

    monkeypatch.setenv("DSCOURSE_RUN_CACHE", str(tmp_path / "runs"))  # this test's own session store
    hang = ["--shape", "gpt2-small-cpu", "--steps", "100000"]
    t0 = time.time()
    with pytest.raises(LaunchError, match="did not finish in 5 s") as first:
        run_ranks("dscourse.scripts.zero_memory", hang, nproc=2, timeout=5, out_dir=tmp_path / "a")
    assert time.time() - t0 < 30 and first.value.timed_out
    # The same launch under the same limit is not waited for a second time in one session
    t1 = time.time()
    with pytest.raises(LaunchError, match="did not finish in 5 s") as again:
        run_ranks("dscourse.scripts.zero_memory", hang, nproc=2, timeout=5, out_dir=tmp_path / "b")
    assert time.time() - t1 < 2 and again.value.timed_out
    assert "1 run" in runcache.summary() and "1 reused" in runcache.summary()


def test_launcher_command_refuses_nonsense():
    with pytest.raises(ValueError, match="at least one"):
        launcher_command("m", [], 0)
    with pytest.raises(ValueError, match="unknown launcher"):
        launcher_command("m", [], 2, launcher="mpirun")


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed-nossh"])
def test_simulated_nodes_on_a_one_gpu_machine_run_on_cpu_ranks(launcher, monkeypatch):
    """Two "nodes" of one rank each on a one-GPU machine: NCCL would refuse two ranks on one GPU
    (seen on an H100 running notebook 05 at GPU scale), so the ranks go to the CPU with gloo."""
    from dscourse import launch
    from dscourse.multinode.simulate import run_nodes_job

    assert launch.cpu_ranks_if_gpus_short(2, {"CUDA_VISIBLE_DEVICES": "0"}) == {}
    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    assert launch.cpu_ranks_if_gpus_short(1) == {}
    job = run_nodes_job(launcher, "dscourse.scripts.allreduce_bench", ["--sizes", "1e4", "--ops", "all_reduce"],
                        timeout=600, use_netns=False)
    assert [r["backend"] for r in job.result.ranks] == ["gloo", "gloo"]


def test_arch_list_is_one_deepspeed_can_parse(monkeypatch):
    from dscourse import launch

    assert launch.deepspeed_arch_list("8.0 9.0a;9.0 10.0a+PTX") == "8.0;9.0;10.0+PTX"
    # DeepSpeed 0.19.8's JIT builder sorts the targets with this key; "9.0a" raised ValueError in it
    for target in launch.deepspeed_arch_list("9.0a 12.0f").split(";"):
        assert tuple(int(part.split("+")[0]) for part in target.split("."))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0a")
    assert launch._launch_env(None)["TORCH_CUDA_ARCH_LIST"] == "9.0"


def test_train_shape_follows_where_the_ranks_run(monkeypatch):
    from dscourse import launch, models, scale

    monkeypatch.setenv("DSCOURSE_SCALE", "gpu")
    scale.scale.cache_clear()
    try:
        monkeypatch.setattr(launch, "visible_gpus", lambda: 2)
        assert scale.train_shape() == scale.train_shape(2) == "gpt2-350m"
        assert scale.train_shape(4) == "gpt2-tiny"  # 4 ranks on 2 GPUs run on CPU ranks
    finally:
        scale.scale.cache_clear()
    assert models.learning_rate("gpt2-350m") == 2e-4 and models.learning_rate(models.SHAPES["gpt2-tiny"]) == 1e-3
