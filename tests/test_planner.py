"""The planner: every configuration it lists fits by the one peak function, cheapest first, with a checked config."""

import json
import subprocess
import sys

import pytest

from dscourse.memory import FormulaError, peak_of
from dscourse.memory.hf import arch_from_file, hf_presets
from dscourse.memory.planner import Shortfall, plan, variant_factors

LLAMA_8B = arch_from_file(hf_presets()["Llama-3-8B"])


def test_every_listed_configuration_fits_and_they_come_cheapest_first():
    cands = plan(LLAMA_8B, 8, 80e9, 4096, host_memory=512e9, global_batch=64)
    assert len(cands) > 5
    assert [c.seconds for c in cands] == sorted(c.seconds for c in cands)
    for c in cands:
        again = peak_of(LLAMA_8B, 8, c.stage, c.micro_batch, 4096, c.checkpointing, c.offload_optimizer,
                        c.offload_param, grad_accum=c.grad_accum)
        assert c.peak.peak_bytes == again.peak_bytes and again.peak_bytes * 1.2 <= 80e9
        assert c.peak.cpu_bytes <= 512e9 and c.micro_batch * c.grad_accum * 8 == 64
        cfg = c.ds_config()
        assert cfg["train_batch_size"] == 64 and cfg["zero_optimization"]["stage"] == c.stage


def test_less_memory_means_fewer_and_smaller_choices():
    big = plan(LLAMA_8B, 8, 80e9, 4096, global_batch=64)
    small = plan(LLAMA_8B, 8, 24e9, 4096, host_memory=512e9, global_batch=64)
    assert 0 < len(small) < len(big)
    assert all(c.offload_optimizer == "cpu" for c in small)  # 8B does not fit 8 × 24 GB without offload


def test_nothing_fits_says_what_is_short_and_by_how_much():
    short = plan(LLAMA_8B, 1, 24e9, 4096, host_memory=64e9)
    assert isinstance(short, Shortfall)
    assert short.gpu_short > 0 and short.host_short > 0
    assert "GPU memory is" in short.message() and "host RAM is" in short.message()
    with pytest.raises(FormulaError, match="multiple"):
        plan(LLAMA_8B, 8, 80e9, 4096, global_batch=12)


def test_the_cost_model_reads_the_measured_throughput():
    f = variant_factors()
    assert f["ZeRO-2"] == 1.0 and f["ZeRO-3"] > 1 and f["ZeRO-2 +offload opt"] > f["ZeRO-2"]
    assert set(f) >= {"ZeRO-0", "ZeRO-1", "ZeRO-3 +offload opt", "ZeRO-3 +offload opt +offload param",
                      "ZeRO-1 +offload opt"}


def test_plan_command_prints_configs_the_checker_passes():
    out = subprocess.run([sys.executable, "-m", "dscourse.memory", "plan", "--model-config", "Qwen2.5-7B", "--gpus", "8",
                          "--gpu-memory", "80GB", "--host-memory", "512GB", "--seq", "4096", "--global-batch", "64",
                          "--top", "3", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["candidates"]) == 3 and result["fits"] >= 3
    assert all(c["peak_gpu_bytes"] * 1.2 <= 80e9 and c["ds_config"]["bf16"]["enabled"] for c in result["candidates"])
    bad = subprocess.run([sys.executable, "-m", "dscourse.memory", "plan", "--model-config", "Llama-3-8B", "--gpus", "1",
                          "--gpu-memory", "24GB", "--host-memory", "64GB", "--seq", "4096"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nothing fits" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
