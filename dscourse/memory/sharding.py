"""Bytes each rank holds per parameter under DeepSpeed's ZeRO stages and FSDP2's sharding strategies (section 4.6).

bf16 mixed precision with Adam, model states only (no activations, buckets or workspace), at two moments:

``rest``  between optimizer steps;
``step``  after the backward, before ``optimizer.step()``: the gradients of this step are held too
          (not the step's own temporaries, which :func:`dscourse.memory.peak.peak` adds for DeepSpeed).

DeepSpeed's side is :func:`dscourse.memory.formulas.allocated` divided by Ψ; FSDP2's side is what
``dscourse.accounting.count_fsdp_bytes`` counts on real FSDP2 ranks (notebook 06): the fp32 shard is the master
weight (no 16-bit copy outside compute), the gradient shard is fp32 and ``optimizer.zero_grad()`` frees it.
Pure Python, no torch.
"""

from __future__ import annotations

from .formulas import FormulaError, Setup, allocated

# (label, framework, ZeRO stage or FSDP2 divisor rule); hpZ and HYBRID_SHARD split within a group of GPUs (a node)
STRATEGIES = {
    "ZeRO-0": ("DeepSpeed", 0), "ZeRO-2": ("DeepSpeed", 2), "ZeRO-3": ("DeepSpeed", 3), "ZeRO-3 + hpZ": ("DeepSpeed", 3),
    "NO_SHARD": ("FSDP2", "one"), "SHARD_GRAD_OP": ("FSDP2", "all"), "FULL_SHARD": ("FSDP2", "all"),
    "HYBRID_SHARD": ("FSDP2", "group"),
}
MOMENTS = {"rest": "步与步之间", "step": "反向之后、优化器 step 之前"}
_PSI = 10 ** 12  # any Ψ: allocated() is linear in it once its fixed buffers are left out


def held_per_param(strategy: str, gpus: int, group: int = 8, moment: str = "rest") -> dict[str, float]:
    """Bytes per parameter one rank holds, by category (params, grads, master, optim), for ``gpus`` ranks in groups
    of ``group`` (hpZ's ``zero_hpz_partition_size``, HYBRID_SHARD's shards per replica)."""
    if strategy not in STRATEGIES:
        raise FormulaError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if moment not in MOMENTS:
        raise FormulaError(f"unknown moment {moment!r}: use 'rest' or 'step'")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise FormulaError(f"gpus must be a whole number ≥ 1, not {gpus!r}")
    group = min(group, gpus)
    framework, rule = STRATEGIES[strategy]
    if framework == "DeepSpeed":
        gpu = allocated(Setup(params=_PSI, gpus=gpus, stage=rule, reduce_bucket_size=0)).gpu
        held = {c: gpu.get(c, 0) / _PSI for c in ("params", "grads", "master", "optim")}
        if strategy == "ZeRO-3 + hpZ":  # the secondary 16-bit partition within the group (ds_secondary_tensor)
            held["params"] += 2 / group
        if moment == "step" and rule < 3:  # this step's bf16 gradients (peak's "grads16"); ZeRO-3 reduces into
            held["grads"] += 2 / (gpus if rule == 2 else 1)  # the partition it holds between steps anyway
        return held
    divisor = {"one": 1, "all": gpus, "group": group}[rule]
    return {"params": 0.0, "grads": (4 / divisor if moment == "step" else 0.0), "master": 4 / divisor,
            "optim": 8 / divisor}
