"""Section 4.6 for real on 2 CPU ranks: FSDP2 (fully_shard) and DeepSpeed ZeRO-3 train the same model to the
same losses and hold the same partition per rank; the FSDP strategies hold what the mapping says; the
Accelerate FSDP2 config file shards for real. Each launch is a real torchrun / accelerate launch."""

import subprocess
import sys

import pytest

from dscourse import package_path
from dscourse.fsdp import MAPPING, STRATEGY, fsdp_train, zero_elements, zero_held
from dscourse.integration import BF16_RTOL, FP32_RTOL, losses, max_rel_diff, train_stages
from dscourse.launch import isolated_hf_home, run_ranks
from dscourse.models import build_model, count_params

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")

STEPS = 12  # as notebook 06: within a test session the same runs are launched once (dscourse.runcache)
TIMEOUT = 900  # the CPU is shared with other jobs
TOTAL = count_params(build_model("gpt2-tiny"))[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ZeRO-3 (train_run) and FSDP2 FULL_SHARD (fsdp_run), fp32 and bf16, same model, data and seed."""
    work = tmp_path_factory.mktemp("fsdp")
    zero3 = {p: train_stages(work / "ds", (3,), p, steps=STEPS, timeout=TIMEOUT)[3] for p in ("fp32", "bf16")}
    fsdp = {p: fsdp_train(work, "full", p, steps=STEPS, timeout=TIMEOUT) for p in ("fp32", "bf16")}
    return zero3, fsdp, work


def test_fsdp2_and_zero3_agree_to_fp32_rounding_in_fp32(runs):
    zero3, fsdp, _ = runs
    assert max_rel_diff(fsdp["fp32"][0]["losses"], zero3["fp32"]["losses"]) < 1e-6 < FP32_RTOL
    assert sorted(losses(fsdp["fp32"][0])) == list(range(1, STEPS + 1))


def test_fsdp2_and_zero3_agree_within_bf16_tolerance_in_bf16(runs):
    zero3, fsdp, _ = runs
    assert max_rel_diff(fsdp["bf16"][0]["losses"], zero3["bf16"]["losses"]) < 1e-3 < BF16_RTOL
    curve = losses(fsdp["bf16"][0])
    assert curve[STEPS] < curve[1] - 0.1  # it learns


def test_full_shard_holds_exactly_the_zero3_partition(runs):
    _, fsdp, work = runs
    z3 = zero_held(work, 3, steps=STEPS, timeout=TIMEOUT)
    assert z3[0]["persistent_params"] == TOTAL  # by default ZeRO-3 would shard nothing of this model
    for z, f in zip(z3, fsdp["bf16"]):
        ze, fe = zero_elements(z), f["held"]["elements"]
        # every parameter has an even number of elements: no padding on 2 ranks, exactly half each
        assert ze["params"] == ze["master"] == fe["params"] == fe["grads"] == TOTAL // 2
        assert fe["optim"] == 2 * TOTAL // 2 + 28  # exp_avg, exp_avg_sq + one step counter per tensor (28)
        assert ze["optim"] == 2 * TOTAL // 2 + 1  # DeepSpeed: one flat group, one step counter
    assert fsdp["bf16"][0]["param_dtype"] == "float32"  # FSDP2's shards are the fp32 master weights
    assert fsdp["bf16"][0]["param_elements_between_forward_and_backward"] == TOTAL // 2


def test_strategies_hold_what_the_mapping_says(tmp_path):
    assert set(MAPPING) == set(STRATEGY)
    grad_op = fsdp_train(tmp_path, "grad_op", steps=4, timeout=TIMEOUT)[0]
    no_shard = fsdp_train(tmp_path, "no_shard", steps=4, timeout=TIMEOUT)[0]
    # SHARD_GRAD_OP: sharded at rest, whole from forward to backward
    assert grad_op["held"]["elements"]["params"] == TOTAL // 2
    assert grad_op["param_elements_between_forward_and_backward"] == TOTAL // 2 + TOTAL
    # NO_SHARD: a (2, 1) mesh replicates everything
    assert no_shard["mesh"] == [2, 1] and no_shard["placements"] == ["R", "S(0)"]
    assert no_shard["held"]["elements"]["params"] == no_shard["held"]["elements"]["grads"] == TOTAL


def test_cpu_offload_policy_keeps_the_losses(runs, tmp_path):
    _, fsdp, _ = runs
    off = fsdp_train(tmp_path, "full", "bf16", steps=4, offload=True, timeout=TIMEOUT)[0]
    assert off["offload"] and off["where"]["optim"] == ["cpu"]
    assert max_rel_diff(off["losses"], fsdp["bf16"][0]["losses"]) < 1e-3


def test_accelerate_fsdp2_config_file_shards_for_real(tmp_path):
    yaml = package_path("configs", "accelerate_fsdp.yaml")
    env = isolated_hf_home(tmp_path / "hf")
    ranks = run_ranks("dscourse.scripts.accelerate_train", ["--shape", "gpt2-tiny", "--steps", "4"],
                      launcher="accelerate", timeout=TIMEOUT, env=env,
                      launcher_args=["--config_file", str(yaml), "--num_processes=2"], out_dir=tmp_path / "fsdp").ranks
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.FSDP"] * 2
    assert ranks[0]["fsdp"]["version"] == 2 and ranks[0]["fsdp"]["reshard_after_forward"] is True
    assert [r["fsdp"]["elements"]["params"] for r in ranks] == [TOTAL // 2] * 2
    assert ranks[0]["losses"] == ranks[1]["losses"]  # reduced over the two ranks


def test_fsdp_run_help_names_the_strategies():
    done = subprocess.run([sys.executable, "-m", "dscourse.scripts.fsdp_run", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert "FULL_SHARD" in done.stdout and "--strategy" in done.stdout and "--offload" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--strategy", "hybrid"], "--strategy hybrid needs --mesh REPLICATE SHARD"),
    (["--strategy", "full", "--mesh", "2", "1"], "--mesh is for --strategy hybrid"),
    (["--steps", "0"], "--steps and --micro-batch must be at least 1"),
])
def test_fsdp_run_rejects_bad_input_with_a_message(args, message):
    done = subprocess.run([sys.executable, "-m", "dscourse.scripts.fsdp_run", *args, "--out", "unused"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr


def test_reshard_after_forward_int_is_for_full_shard_only(capsys):
    from dscourse.scripts import fsdp_run

    with pytest.raises(SystemExit):
        fsdp_run.parse_args(["--strategy", "grad_op", "--reshard-after-forward", "2", "--out", "x"])
    assert "--reshard-after-forward is for --strategy full" in capsys.readouterr().err
    assert fsdp_run.parse_args(["--reshard-after-forward", "2", "--out", "x"]).reshard_after_forward == 2
