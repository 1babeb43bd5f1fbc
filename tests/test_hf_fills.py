"""The table of what the Trainer and Accelerate fill (``dscourse.config.hf_fills``), against transformers 5.23 and
Accelerate 1.15 themselves: their own config classes run in-process on a tiny model, no ranks launched."""

from __future__ import annotations

import copy
import math

import pytest

from dscourse.config.check import check_config
from dscourse.config.hf_fills import ACCELERATOR, FILLS, OVERWRITTEN, PLUGIN, REQUIRED_SECTION

pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _config_with_auto(paths) -> dict:
    """A ZeRO-3 config with "auto" at every path (WarmupDecayLR, so every scheduler key exists)."""
    paths = list(paths)
    cfg = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
           "optimizer": {"type": "AdamW", "params": {"torch_adam": True}}}
    if any(p.startswith("scheduler.") for p in paths):
        cfg["scheduler"] = {"type": "WarmupDecayLR", "params": {}}
    for path in paths:
        *parents, leaf = path.split(".")
        node = cfg
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = "auto"
    return cfg


def _autos(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _autos(item, f"{path}.{key}" if path else key)
    elif value == "auto":
        yield path


@pytest.fixture
def clean_env(monkeypatch):
    """No accelerate launch flags: the DeepSpeed plugin falls back to its own defaults."""
    import os

    for name in [n for n in os.environ if n.startswith("ACCELERATE_")]:
        monkeypatch.delenv(name)


def _through_the_trainer(cfg, tmp_path) -> dict:
    """What the Trainer hands to Accelerator.prepare: TrainingArguments (trainer_config_process, the DeepSpeed
    plugin) and deepspeed_init's trainer_config_finalize, on a tiny GPT-2 (hidden size 8)."""
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), deepspeed=copy.deepcopy(cfg), use_cpu=True, report_to=[],
                             per_device_train_batch_size=1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8))
    args.deepspeed_plugin.hf_ds_config.trainer_config_finalize(args, model, num_training_steps=10)
    return args.deepspeed_plugin.deepspeed_config


@pytest.mark.parametrize("stage", [3, "auto"])
def test_trainer_fills_every_key_of_the_table(clean_env, tmp_path, stage):
    """With "auto" in every key of the table nothing is left for Accelerator.prepare but the keys the table says
    it fills there (with "stage": "auto" the plugin picks stage 2, and the Trainer leaves the ZeRO-3 pair)."""
    cfg = _config_with_auto(p for p in FILLS if stage == "auto" or p != "zero_optimization.stage")
    assert check_config(cfg, "hf") == []
    filled = _through_the_trainer(cfg, tmp_path)
    left = set(_autos(filled))
    assert left == ({p for p, f in FILLS.items() if f.trainer_zero3_only} if stage == "auto" else set())
    assert all(ACCELERATOR in FILLS[p].accelerate for p in left)
    assert filled["zero_optimization"]["stage"] == (3 if stage == 3 else 2)
    assert filled["zero_optimization"]["reduce_bucket_size"] == 8 * 8
    assert all(math.isinf(filled[key]) for key in OVERWRITTEN)


def test_trainer_leaves_other_autos_for_accelerate_to_refuse(clean_env, tmp_path):
    from accelerate.utils import DeepSpeedPlugin

    cfg = _config_with_auto(["train_batch_size", "zero_optimization.allgather_bucket_size"])
    filled = _through_the_trainer(cfg, tmp_path)
    assert list(_autos(filled)) == ["zero_optimization.allgather_bucket_size"]
    with pytest.raises(ValueError, match="`zero_optimization.allgather_bucket_size` not found in kwargs"):
        DeepSpeedPlugin(hf_ds_config=filled).deepspeed_config_process(must_match=False)
    [problem] = check_config(cfg, "hf")
    assert "not found in kwargs" in problem.message


def test_accelerate_plugin_fills_its_own_keys_and_raises_on_the_rest(clean_env):
    """DeepSpeedPlugin.__post_init__ fills the keys the table cites it for; a leftover "auto" raises ValueError."""
    from accelerate.utils import DeepSpeedPlugin

    plugin_keys = sorted(p for p, f in FILLS.items() if f.accelerate.startswith(f"{PLUGIN} L128"))
    trainer_only = sorted(p for p, f in FILLS.items() if not f.accelerate)
    assert plugin_keys and trainer_only == ["optimizer.params.betas", "optimizer.params.eps"]
    cfg = _config_with_auto(plugin_keys + trainer_only)
    cfg["gradient_accumulation_steps"] = 1  # filled later, in Accelerator._prepare_deepspeed
    cfg["gradient_clipping"] = 1.0
    plugin = DeepSpeedPlugin(hf_ds_config=copy.deepcopy(cfg))
    assert sorted(_autos(plugin.deepspeed_config)) == trainer_only
    with pytest.raises(ValueError, match="`optimizer.params.betas` not found in kwargs"):
        plugin.deepspeed_config_process(must_match=False)
    assert {p.path for p in check_config(cfg, "accelerate") if p.severity == "error"} == set(trainer_only)
    with pytest.raises(ValueError, match="Please specify the ZeRO optimization config"):
        DeepSpeedPlugin(hf_ds_config={"train_micro_batch_size_per_gpu": 1})
    assert [p.path for p in check_config({"train_micro_batch_size_per_gpu": 1}, "hf")] == [REQUIRED_SECTION]
