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

from .shapes import Arch


def lora_trainable(arch: Arch, rank: int, targets=("q_proj", "v_proj")) -> int:
    """Parameters LoRA of ``rank`` adds to ``arch`` on the attention projections ``targets`` (an A of rank × in and a
    B of out × rank per target and layer); GPT-2's fused ``c_attn`` (in hidden, out 3 × hidden)."""
    h, q = arch.hidden, arch.heads * arch.dim
    kv = (arch.kv_heads or arch.heads) * arch.dim
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "c_attn": (h, 3 * h)}
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"unknown LoRA target {unknown[0]!r}: one of {', '.join(shapes)}")
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, not {rank}")
    return arch.layers * sum(rank * (i + o) for i, o in (shapes[t] for t in targets))


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
