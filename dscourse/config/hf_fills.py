"""What the Hugging Face Trainer (transformers 5.23) and Accelerate (1.15) do to a DeepSpeed config first.

Read from their source (paths relative to site-packages; line numbers are those of the pinned versions):

- ``transformers/integrations/deepspeed.py``: ``HfTrainerDeepSpeedConfig.trainer_config_process`` (L136, run when
  ``TrainingArguments`` is built) and ``trainer_config_finalize`` (L194, run by ``deepspeed_init``) replace
  ``"auto"`` with ``TrainingArguments`` values through ``fill_match`` (L108), which fills a key only if it is
  present with the exact spelling below.
- ``accelerate/utils/dataclasses.py``: ``DeepSpeedPlugin.__post_init__`` (L1226) fills the plugin's own keys
  (``plugin_to_config_mapping``, L1280) from ``accelerate launch`` flags / ``ACCELERATE_*`` environment variables,
  and ``set_mixed_precision`` (L1415) fills fp16/bf16.
- ``accelerate/accelerator.py``: ``Accelerator._prepare_deepspeed`` (L2141) fills batch sizes, clipping and the
  hidden-size buckets, then ``deepspeed_config_process`` (dataclasses.py L1392) walks every key of every object in
  the config and ``fill_match`` (dataclasses.py L1357) raises ``ValueError: `<key>` not found in kwargs`` for
  any ``"auto"`` nobody filled (values inside lists are not walked).

The Trainer always goes through Accelerate (``TrainingArguments`` builds the ``DeepSpeedPlugin``, L1715 of
``training_args.py``), so under the Trainer both columns apply; with Accelerate alone only its own.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSFORMERS = "transformers/integrations/deepspeed.py"
PLUGIN = "accelerate/utils/dataclasses.py"
ACCELERATOR = "accelerate/accelerator.py"


@dataclass(frozen=True)
class Fill:
    value: str  # what replaces "auto"
    trainer: str = ""  # where the Trainer fills it; "" when it does not
    accelerate: str = ""  # where Accelerate fills it; "" when it does not
    alone: str = ""  # with Accelerate alone, the condition a user can miss; "" when it is always filled
    alone_fix: str = ""  # and what to do about it
    trainer_zero3_only: bool = False  # the Trainer fills it only under ZeRO-3 (Accelerate still does at any stage)


_HIDDEN = "needs model.config.hidden_size (or hidden_sizes), else ValueError"

FILLS = {
    "train_micro_batch_size_per_gpu": Fill(
        "per_device_train_batch_size / the DataLoader's batch size", f"{TRANSFORMERS} L144",
        f"{ACCELERATOR} L2179-2229 (from a DataLoader passed to prepare, else ValueError)"),
    "gradient_accumulation_steps": Fill(
        "gradient_accumulation_steps", f"{TRANSFORMERS} L150", f"{PLUGIN} L1281 and {ACCELERATOR} L2208"),
    "train_batch_size": Fill(
        "micro batch × accumulation × processes", f"{TRANSFORMERS} L155", f"{ACCELERATOR} L2230"),
    "gradient_clipping": Fill(
        "max_grad_norm (Accelerate: --gradient_clipping, else 1.0)", f"{TRANSFORMERS} L161",
        f"{PLUGIN} L1282 and {ACCELERATOR} L2224"),
    "optimizer.params.lr": Fill(
        "learning_rate", f"{TRANSFORMERS} L163", f"{ACCELERATOR} L2330 (DummyOptim's lr)"),
    "optimizer.params.betas": Fill("[adam_beta1, adam_beta2]", f"{TRANSFORMERS} L164"),
    "optimizer.params.eps": Fill("adam_epsilon", f"{TRANSFORMERS} L169"),
    "optimizer.params.weight_decay": Fill(
        "weight_decay", f"{TRANSFORMERS} L170", f"{ACCELERATOR} L2330 (DummyOptim's weight_decay)"),
    "scheduler.params.warmup_min_lr": Fill("0", f"{TRANSFORMERS} L172", f"{ACCELERATOR} L2339 (DummyScheduler)"),
    "scheduler.params.warmup_max_lr": Fill(
        "learning_rate", f"{TRANSFORMERS} L173", f"{ACCELERATOR} L2339 (DummyScheduler's optimizer lr)"),
    "scheduler.params.warmup_num_steps": Fill(
        "warmup steps (at least 1)", f"{TRANSFORMERS} L252", f"{ACCELERATOR} L2339 (DummyScheduler)"),
    "scheduler.params.total_num_steps": Fill(
        "the number of training steps", f"{TRANSFORMERS} L245", f"{ACCELERATOR} L2349",
        alone="only when the code passes total_num_steps to DummyScheduler",
        alone_fix="pass DummyScheduler(..., total_num_steps=...) in your code, or write the number"),
    "fp16.enabled": Fill("fp16 / --mixed_precision fp16", f"{TRANSFORMERS} L183", f"{PLUGIN} L1445"),
    "bf16.enabled": Fill("bf16 / --mixed_precision bf16", f"{TRANSFORMERS} L184", f"{PLUGIN} L1446"),
    "zero_optimization.reduce_bucket_size": Fill(
        f"hidden_size² ({_HIDDEN})", f"{TRANSFORMERS} L232", f"{ACCELERATOR} L2321"),
    "zero_optimization.stage3_prefetch_bucket_size": Fill(
        f"0.9 × hidden_size² ({_HIDDEN})", f"{TRANSFORMERS} L235", f"{ACCELERATOR} L2321", trainer_zero3_only=True),
    "zero_optimization.stage3_param_persistence_threshold": Fill(
        f"10 × hidden_size ({_HIDDEN})", f"{TRANSFORMERS} L239", f"{ACCELERATOR} L2321", trainer_zero3_only=True),
    # The DeepSpeed plugin's own keys: from accelerate launch flags / ACCELERATE_* variables, else the default.
    "zero_optimization.stage": Fill("--zero_stage / ACCELERATE_DEEPSPEED_ZERO_STAGE, else 2",
                                    accelerate=f"{PLUGIN} L1283"),
    "zero_optimization.offload_optimizer.device": Fill(
        '--offload_optimizer_device / ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE, else "none"',
        accelerate=f"{PLUGIN} L1284"),
    "zero_optimization.offload_param.device": Fill(
        '--offload_param_device / ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE, else "none"',
        accelerate=f"{PLUGIN} L1285"),
    "zero_optimization.offload_param.nvme_path": Fill(
        '--offload_param_nvme_path / ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH, else the string "none"',
        accelerate=f"{PLUGIN} L1286"),
    "zero_optimization.offload_optimizer.nvme_path": Fill(
        '--offload_optimizer_nvme_path / ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH, else the string "none"',
        accelerate=f"{PLUGIN} L1287"),
    "zero_optimization.stage3_gather_16bit_weights_on_model_save": Fill(
        "--zero3_save_16bit_model / ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL, else false",
        accelerate=f"{PLUGIN} L1288 and {ACCELERATOR} L2225"),
}

# DeepSpeedPlugin.__post_init__ (dataclasses.py L1326) sets steps_per_print to infinity whatever the file says,
# before anything looks for a leftover "auto": under the Trainer / Accelerate its value has no effect.
OVERWRITTEN = frozenset({"steps_per_print"})
# DeepSpeedPlugin.__post_init__ (dataclasses.py L1276-1277) refuses a config without this section.
REQUIRED_SECTION = "zero_optimization"
REQUIRED_MESSAGE = (f"missing: Accelerate's DeepSpeedPlugin raises ValueError 'Please specify the ZeRO optimization "
                    f"config in the DeepSpeed config.' ({PLUGIN} L1277)")


def filled(path: str, trainer: bool) -> Fill | None:
    """The Fill for ``path`` if the Trainer (``trainer=True``, Accelerate included) or Accelerate alone fills it."""
    fill = FILLS.get(path)
    if fill is None or not (fill.accelerate or (trainer and fill.trainer)):
        return None
    return fill


def leftover_consequence(path: str) -> str:
    """What happens to an "auto" that neither fills (a key of an object; values inside lists are not walked)."""
    return f"accelerator.prepare raises \"ValueError: `{path}` not found in kwargs\" (DeepSpeedPlugin.fill_match)"


# The keys the Trainer itself fills ("auto" in the configs build_config writes for the Trainer).
TRAINER_FILLS = frozenset(p for p, f in FILLS.items() if f.trainer and not f.trainer_zero3_only)
TRAINER_FILLS_ZERO3 = frozenset(p for p, f in FILLS.items() if f.trainer_zero3_only)
