"""Build DeepSpeed configs (plain dicts that serialise to strict JSON).

One builder for every config the course runs, so the memory script, the notebooks and the tests
train with the same settings the book prints.
"""

from __future__ import annotations

from ..memory.nvme import AIO_BLOCK_SIZE
from .hf_fills import TRAINER_FILLS, TRAINER_FILLS_ZERO3

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
# The "aio" section at DeepSpeed 0.19.8's defaults (runtime/swap_tensor/constants.py AIO_FORMAT), written out whenever
# a config swaps to NVMe so that the book can explain every key of the config it runs.
AIO_DEFAULTS = {"block_size": AIO_BLOCK_SIZE, "queue_depth": 8, "intra_op_parallelism": 1, "single_submit": False,
                "overlap_events": True, "use_gds": False}


INTEGRATIONS = ("deepspeed", "hf")


def build_config(stage: int = 2, *, micro_batch: int = 1, grad_accum: int = 1, world_size: int = 1,
                 precision: str = "bf16", offload_optimizer: str = "none", offload_param: str = "none",
                 lr: float = 1e-3, torch_adam: bool = True, extra_zero: dict | None = None,
                 integration: str = "deepspeed", nvme_path: str | None = None) -> dict:
    """A DeepSpeed config as a dict that serialises to strict JSON.

    ``integration="deepspeed"``: for plain ``deepspeed.initialize``, numbers everywhere.
    ``integration="hf"``: for ``TrainingArguments(deepspeed=...)`` / Accelerate, ``"auto"`` in exactly
    the keys the Trainer fills from its arguments (batch sizes, clipping, optimizer hyper-parameters,
    precision, and the bucket sizes it derives from the model's hidden size).
    ``torch_adam`` makes DeepSpeed use ``torch.optim.AdamW`` (same state memory as FusedAdam and
    DeepSpeedCPUAdam) so that no C++/CUDA op is compiled on first use.
    An offload to ``"nvme"`` (ZeRO-Infinity) swaps to files under ``nvme_path`` and adds the ``aio`` section.
    """
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {INTEGRATIONS}, not {integration!r}")
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {stage!r}")
    for name, value in (("offload_optimizer", offload_optimizer), ("offload_param", offload_param)):
        if value not in OFFLOAD_DEVICES:
            raise ValueError(f"{name} must be one of {OFFLOAD_DEVICES}, not {value!r}")
    if offload_param != "none" and stage != 3:
        raise ValueError("offload_param needs ZeRO stage 3: stages 0-2 keep every parameter on each GPU")
    if offload_optimizer != "none" and stage == 0:
        raise ValueError("offload_optimizer needs ZeRO stage 1, 2 or 3")
    nvme = "nvme" in (offload_optimizer, offload_param)
    if nvme and not nvme_path:
        raise ValueError('an offload to "nvme" needs nvme_path: the directory (on a local NVMe drive) to swap to')
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be bf16, fp16 or fp32, not {precision!r}")

    zero: dict = {"stage": stage}
    for key, device in (("offload_optimizer", offload_optimizer), ("offload_param", offload_param)):
        if device != "none":
            zero[key] = {"device": device, "pin_memory": False}
            if device == "nvme":
                zero[key]["nvme_path"] = str(nvme_path)
    zero.update(extra_zero or {})

    optimizer_params = {"lr": lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    if torch_adam:
        optimizer_params["torch_adam"] = True
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "zero_optimization": zero,
        "gradient_clipping": 1.0,
        "steps_per_print": 100,
        "wall_clock_breakdown": False,
    }
    if nvme:
        cfg["aio"] = dict(AIO_DEFAULTS)
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    if integration == "hf":
        _auto(cfg, stage)
    return cfg


def _auto(cfg: dict, stage: int) -> None:
    """Hand the values the Trainer knows to the Trainer: "auto" in every key transformers fills."""
    # Precision follows TrainingArguments(bf16=..., fp16=...): both sections present, both "auto".
    cfg.setdefault("bf16", {})
    cfg.setdefault("fp16", {})
    for path in sorted(TRAINER_FILLS | (TRAINER_FILLS_ZERO3 if stage == 3 else frozenset())):
        *parents, key = path.split(".")
        node = cfg
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and not (parents == ["zero_optimization"] and stage == 0):
            node[key] = "auto"
