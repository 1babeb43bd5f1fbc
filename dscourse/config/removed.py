"""Features DeepSpeed removed, with the release that removed them and what replaces them.

DeepSpeed 0.19.8 rejects the removed config blocks itself (``_REMOVED_TOP_LEVEL_CONFIG_KEYS`` and
``_REMOVED_ZERO_CONFIG_KEYS`` in ``deepspeed/runtime/config.py``, raised by ``_reject_removed_config_keys`` as
DeepSpeedConfigError), but says neither since when nor that the file was written for an older DeepSpeed.
The versions come from comparing the published sdists' ``deepspeed/runtime/config.py``: 0.19.6 still reads every
one of these; 0.19.7 rejects the first group (deepspeedai/DeepSpeed PR #8490, tracking issue #8489) and drops
the 1-bit optimizers from ``DEEPSPEED_OPTIMIZERS``; 0.19.8 rejects the rest. ``tests/test_config_check.py``
checks that these tables name exactly what the installed DeepSpeed rejects.
"""

from __future__ import annotations

# key -> (the first DeepSpeed release without it, what to write instead; "" when nothing replaces it)
REMOVED_TOP = {
    "nebula": ("0.19.7", "nothing: checkpoints are saved with torch.save"),
    "compression_training": ("0.19.7", "nothing in DeepSpeed"),
    "quantize_training": ("0.19.7", "nothing in DeepSpeed"),
    "sparse_attention": ("0.19.7", "nothing in DeepSpeed"),
    "amp": ("0.19.8", '"fp16": {"enabled": true}, "bf16": {"enabled": true} or "torch_autocast"'),
    "sparse_gradients": ("0.19.8", "nothing: embeddings built with sparse=True are still reduced sparsely"),
    "eigenvalue": ("0.19.8", "nothing in DeepSpeed"),
    "elasticity": ("0.19.8", "fixed train_batch_size, train_micro_batch_size_per_gpu, gradient_accumulation_steps"),
    "graph_harvesting": ("0.19.8", "nothing in DeepSpeed"),
    "curriculum_learning": ("0.19.8", '"data_efficiency": {"data_sampling": {"curriculum_learning": {...}}}'),
    "progressive_layer_drop": ("0.19.8", "nothing in DeepSpeed"),
}
REMOVED_ZERO = {
    "mics_shard_size": ("0.19.7", "nothing: plain ZeRO-3 shards over all ranks"),
    "mics_hierarchical_params_gather": ("0.19.7", "nothing: plain ZeRO-3 shards over all ranks"),
    "zeropp_loco_param": ("0.19.8", "nothing: ZeRO++ quantized gradients work without LoCo"),
}
# optimizer.type (lower case, as DeepSpeed compares it) -> (removed in, the same algorithm without 1-bit communication)
REMOVED_OPTIMIZERS = {"onebitadam": ("0.19.7", "Adam"), "zerooneadam": ("0.19.7", "Adam"),
                      "onebitlamb": ("0.19.7", "Lamb")}
# Parameters only the 1-bit optimizers took (their __init__ in 0.19.6's deepspeed/runtime/fp16/onebit/):
# Adam and Lamb raise TypeError on them.
ONEBIT_PARAMS = frozenset((
    "freeze_step", "cuda_aware", "comm_backend_name", "var_freeze_step", "var_update_scaler", "local_step_scaler",
    "local_step_clipper", "coeff_beta", "factor_max", "factor_min", "factor_threshold",
))

# A value DeepSpeed accepted before and rejects now: (path, value) -> (the first release that rejects it,
# what it requires, fix).
# reduce_bucket_size: Field(ge=0) up to 0.19.5, Field(gt=0) from 0.19.6 (deepspeed/runtime/zero/config.py).
REJECTED_VALUES = {
    ("zero_optimization.reduce_bucket_size", 0): ("0.19.6", "requires a value > 0 (pydantic ValidationError)",
                                                  "write 500000000 (the default)"),
}


def removed_message(version: str) -> str:
    return (f"removed in DeepSpeed {version} (this file was written for an older DeepSpeed): "
            "deepspeed.initialize raises DeepSpeedConfigError")


def removed_fix(replacement: str, what: str = "the section") -> str:
    if replacement.startswith("nothing"):
        return f"delete {what} ({replacement})"
    return f"delete {what} and use {replacement}"
