"""What ZeRO-Infinity's NVMe offload writes under ``nvme_path``, per rank (DeepSpeed 0.19.8, ZeRO-3, bf16, Adam).

Counted from the swap files of real runs (notebook 07 on CPU ranks, ``dscourse/data/gpu_nvme_h200.json`` on a GPU):

- ``offload_param`` to NVMe: one file per parameter, ``bfloat16params/rank<r>/<id>_param.tensor.swp``, holding this
  rank's partition, ceil(n / N) elements × 2 bytes;
- ``offload_optimizer`` to NVMe: per sub-group of the flat fp32 partition (``sub_group_size``, 1e9 elements by
  default) three files, the fp32 master weights and Adam's ``exp_avg`` and ``exp_avg_sq``: 12 bytes × the rank's
  Σ ceil(n / N) elements; and the fp32 gradient of each parameter's partition (``..._gradient_<offset>_<length>``),
  4 bytes per element.

A tensor below ``max(MIN_AIO_BYTES, aio.block_size)`` bytes is never swapped (``swappable_tensor`` in
``swap_tensor/partitioned_param_swapper.py``, ``is_swappable_tensor`` in ``swap_tensor/optimizer_utils.py``): it stays
in host RAM. A model of small tensors (the CPU-scale ones) keeps most of them in RAM. Pure: no torch.
"""

from __future__ import annotations

MIN_AIO_BYTES = 1024 ** 2  # deepspeed/runtime/swap_tensor/utils.py
AIO_BLOCK_SIZE = 1048576  # the "aio" section's block_size default (swap_tensor/constants.py)


def swap_bytes(tensors: list[int], ranks: int, offload_param: bool = True, offload_optimizer: bool = True,
               block_size: int = AIO_BLOCK_SIZE) -> dict:
    """Bytes one rank keeps in swap files, by what they hold (``params``, ``optim``, ``grads``), for a model whose
    parameter tensors have the element counts ``tensors`` (:func:`dscourse.memory.peak.param_tensors`)."""
    if ranks < 1 or not tensors or min(tensors) < 1:
        raise ValueError(f"need at least one rank and one parameter tensor, not {ranks} ranks and {tensors!r}")
    floor = max(MIN_AIO_BYTES, block_size)
    parts = [-(-n // ranks) for n in tensors]  # each rank's partition of each parameter, in elements
    out = {}
    if offload_param:
        out["params"] = sum(2 * p for p in parts if 2 * p >= floor)
    if offload_optimizer:
        flat = sum(parts)  # in one file per sub_group_size elements (one, below 1e9): the bytes are the same
        out["optim"] = 12 * flat if 4 * flat >= floor else 0
        out["grads"] = sum(4 * p for p in parts if 4 * p >= floor)
    return out
