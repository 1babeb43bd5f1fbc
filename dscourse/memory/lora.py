"""Model-state bytes per GPU when only LoRA adapters train: the frozen base keeps its 16-bit weights and nothing else.

DeepSpeed builds its fp32 master copy, gradients and Adam state only for parameters that require a gradient
(the optimizer's param groups hold only those; ``dscourse.accounting`` counts it in real engines, notebook 07):

- the base: 2 B per parameter in bf16, partitioned over the ranks under ZeRO-3, whole on every rank otherwise;
- the trainable adapters, T parameters: fp32 master weights and Adam's m and v (4 + 8 B) partitioned from ZeRO-1 on,
  and between steps a 16-bit gradient partition (2 B / N) under ZeRO-3 only, as the ``allocated`` formula counts
  full fine-tuning (their 16-bit weights are in the base's 2 B).

Pure: no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the model shapes sit above this module
    from .shapes import Arch

# PEFT's LoraConfig(target_modules=...) as the calculator takes it: its default for Llama-like models, and every
# linear layer but the output head ("all-linear", as QLoRA trains)
TARGET_SETS = {"q_proj,v_proj": ("q_proj", "v_proj"),
               "all-linear": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}


def peft_targets(family: str, targets: str = "q_proj,v_proj") -> list[str]:
    """``LoraConfig(target_modules=...)`` for a model family: ``targets`` (a key of :data:`TARGET_SETS`), or GPT-2's
    fused attention projection ``c_attn``, which holds q, k and v together."""
    return ["c_attn"] if family == "gpt2" else list(TARGET_SETS[targets])


def _linear_shapes(arch: Arch) -> dict:
    h, q, i = arch.hidden, arch.heads * arch.dim, arch.intermediate
    kv = (arch.kv_heads or arch.heads) * arch.dim
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "c_attn": (h, 3 * h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_tensors(arch: Arch, rank: int, targets=("q_proj", "v_proj")) -> list[int]:
    """Element counts of the adapters LoRA of ``rank`` adds to ``arch`` on the linear layers ``targets``: an A of
    rank × in and a B of out × rank per target and layer (GPT-2's fused ``c_attn``: in hidden, out 3 × hidden)."""
    shapes = _linear_shapes(arch)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"unknown LoRA target {unknown[0]!r}: one of {', '.join(shapes)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a whole number of at least 1, not {rank!r}")
    return [n for _ in range(arch.layers) for t in targets for n in (rank * shapes[t][0], shapes[t][1] * rank)]


def lora_trainable(arch: Arch, rank: int, targets=("q_proj", "v_proj")) -> int:
    """Parameters LoRA of ``rank`` adds to ``arch`` on ``targets`` (see :func:`lora_tensors`)."""
    return sum(lora_tensors(arch, rank, targets))


def lora_state_bytes(params: float, trainable: float, gpus: int, stage: int) -> dict:
    """Bytes per GPU between steps, by category, when ``trainable`` of ``params`` (the adapters included) train."""
    if not 0 <= stage <= 3:
        raise ValueError(f"stage must be 0, 1, 2 or 3, not {stage}")
    if gpus < 1 or not 0 < trainable <= params:
        raise ValueError(f"need gpus >= 1 and 0 < trainable <= params, not {gpus}, {trainable}, {params}")
    n = gpus
    return {"params": 2 * params / (n if stage == 3 else 1),
            "grads": 2 * trainable / n if stage == 3 else 0.0,  # ZeRO-3 keeps its gradient partition between steps
            "master": 4 * trainable / (n if stage >= 1 else 1),
            "optim": 8 * trainable / (n if stage >= 1 else 1)}
