"""The command-line contract of ``python -m dscourse.memory``, run as a reader runs it."""

import json
import subprocess
import sys

import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "dscourse.memory", *args], capture_output=True, text=True, timeout=60)


def test_paper_json_reproduces_the_zero_paper():
    out = cli("--params", "7.5e9", "--gpus", "64", "--stage", "3", "--formula", "paper", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert round(result["gpu_bytes"] / 1e9, 1) == 1.9
    assert result["cpu_bytes"] == 0


def test_deepspeed_json_equals_deepspeed_to_the_byte():
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    out = json.loads(cli("--params", "13B", "--gpus", "16", "--gpus-per-node", "8", "--stage", "3",
                         "--offload-optimizer", "cpu", "--largest-layer", "164M", "--formula", "deepspeed",
                         "--json").stdout)
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(13 * 10**9, 164 * 10**6, 8, 2, cpu_offload=True,
                                                        cpu_offload_params=False)
    assert (out["gpu_bytes"], out["cpu_bytes"]) == (gpu, cpu)


def test_json_without_formula_holds_every_family_and_why_one_is_silent():
    out = json.loads(cli("--params", "70b", "--gpus", "8", "--stage", "2", "--json").stdout)
    assert out["formula"] == "allocated" and out["gpu_bytes"] > 0
    assert set(out["all"]) == {"paper", "seed", "deepspeed", "accelerate", "allocated"}
    assert "ZeRO" in out["all"]["accelerate"]["error"]


def test_table_shows_every_formula_side_by_side():
    out = cli("--params", "7B", "--gpus", "8", "--stage", "3", "--largest-layer", "131M")
    assert out.returncode == 0
    for name in ("paper", "seed", "deepspeed", "allocated"):
        assert f"\n{name} " in out.stdout
    assert "accelerate: no answer" in out.stdout


def test_preset_with_sequence_adds_the_peak_of_a_step():
    out = json.loads(cli("--preset", "Llama-2-7B", "--gpus", "8", "--stage", "3", "--seq", "4096", "--json").stdout)
    assert out["peak_gpu_bytes"] == sum(out["peak_terms"].values()) == max(out["phases"].values())
    assert out["peak_gpu_bytes"] > out["gpu_bytes"] and out["peak_phase"] in ("forward", "backward", "step")


def test_model_config_contract_json():
    from dscourse.memory import peak_of
    from dscourse.memory.hf import arch_from_file, hf_presets

    path = hf_presets()["Qwen2.5-7B"]
    out = cli("--model-config", str(path), "--gpus", "16", "--gpus-per-node", "8", "--stage", "3",
              "--offload-optimizer", "cpu", "--micro-batch", "2", "--seq", "4096", "--checkpointing", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    expected = peak_of(arch_from_file(path), 16, 3, 2, 4096, True, "cpu", gpus_per_node=8)
    for key in ("gpu_bytes", "peak_gpu_bytes", "peak_phase", "peak_terms", "cpu_bytes"):
        assert result[key] == expected.as_dict()[key], key
    assert result["cpu_bytes"] > 0 and result["peak_terms"]["loss_grads"] > 0  # the host holds the optimizer
    # a shipped config by name, and the readable table of the terms at the peak
    table = cli("--model-config", "Llama-3.2-1B", "--stage", "2", "--micro-batch", "2", "--seq", "4096")
    assert table.returncode == 0 and "Terms at the peak (backward)" in table.stdout
    assert "loss and log-softmax gradients" in table.stdout


def test_lora_option_is_the_peak_models_lora():
    from dscourse.memory import peak_of
    from dscourse.memory.hf import arch_from_file, hf_presets
    from dscourse.memory.peak import Lora

    args = ["--model-config", "Qwen2.5-7B", "--gpus", "8", "--stage", "3", "--seq", "4096"]
    lora = json.loads(cli(*args, "--lora-rank", "16", "--lora-targets", "all-linear", "--json").stdout)
    full = json.loads(cli(*args, "--json").stdout)
    expected = peak_of(arch_from_file(hf_presets()["Qwen2.5-7B"]), 8, 3, 1, 4096, lora=Lora(16, "all-linear"))
    assert lora["peak_gpu_bytes"] == expected.peak_bytes and lora["setup"]["trainable"] == expected.setup.trainable
    assert lora["peak_gpu_bytes"] < full["peak_gpu_bytes"] and lora["gpu_bytes"] < full["gpu_bytes"] / 4
    assert "error" in lora["all"]["paper"] and "full fine-tuning" in lora["all"]["paper"]["error"]
    table = cli(*args, "--lora-rank", "16").stdout
    assert "LoRA: " in table and "trainable" in table


@pytest.mark.parametrize("args, words", [
    (["--params", "7B", "--lora-rank", "8"], "--model-config"),
    (["--model-config", "Llama-3.2-1B", "--lora-rank", "-2"], "--lora-rank"),
    (["--model-config", "Llama-3.2-1B", "--lora-rank", "8", "--lora-targets", "attn"], "all-linear"),
    (["--model-config", "gpt2-large", "--lora-rank", "8"], "families"),
    (["--model-config", "Llama-3.2-1B", "--lora-rank", "8", "--stage", "2", "--offload-optimizer", "cpu"], "offload"),
    (["--params", "7B", "--gpus", "0"], "--gpus"),
    (["--params=-7B"], "positive"),
    (["--params", "-7B"], "expected one argument"),
    (["--params", "0"], "positive"),
    (["--params", "seven"], "not a parameter count"),
    (["--params", "7B", "--stage", "2", "--offload-param", "cpu"], "stage 3"),
    (["--params", "7B", "--stage", "1", "--formula", "deepspeed"], "ZeRO-2 and ZeRO-3 only"),
    (["--params", "7B", "--stage", "3", "--formula", "deepspeed"], "--largest-layer"),
    (["--params", "7B", "--stage", "2", "--formula", "accelerate"], "ZeRO"),
    (["--params", "7B", "--formula", "magic"], "unknown formula"),
    (["--params", "7B", "--stage", "7"], "stage"),
    (["--params", "7B", "--gpus", "two"], "invalid int"),
    (["--gpus", "8"], "--params"),
    (["--params", "7B", "--seq", "2048"], "--model-config"),
    (["--model-config", "/nonexistent/config.json", "--seq", "2048"], "no such file"),
    (["--model-config", "Llama-3.2-1B", "--seq", "0"], "at least 1"),
    (["--model-config", "gpt2-large", "--seq", "4096"], "1024 positions"),
    (["--model-config", "Llama-3.2-1B", "--preset", "Llama-2-7B"], "not both"),
    (["--model-config", "Llama-3.2-1B", "--params", "7B", "--seq", "1024"], "contradicts"),
    (["--params", "7B", "--gpus", "12", "--gpus-per-node", "8"], "whole nodes"),
    (["--whatever"], "unrecognized"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, words):
    out = cli(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert words in lines[0]


def test_unknown_model_type_and_unreadable_configs_exit_2_with_one_line(tmp_path):
    (tmp_path / "bert.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (tmp_path / "bad.json").write_text("not json")
    for name, words in (("bert.json", "knows llama, mistral, qwen2, qwen3, gemma2, phi3, gpt2"), ("bad.json", "not JSON")):
        out = cli("--model-config", str(tmp_path / name), "--seq", "128")
        assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and words in out.stderr
