"""The one scale knob: CPU → small (tiny models, 2 ranks, a few steps), GPU → full.

``DSCOURSE_SCALE=cpu|gpu`` overrides the detection (CI forces nothing: it has no GPU).
"""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def scale() -> str:
    forced = os.environ.get("DSCOURSE_SCALE", "").strip().lower()
    if forced in ("cpu", "gpu"):
        return forced
    if forced:
        raise ValueError(f"DSCOURSE_SCALE must be 'cpu' or 'gpu', not {forced!r}")
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def ranks() -> int:
    """Ranks for the multi-process demos: 2 CPU processes, or every visible GPU."""
    if scale() == "cpu":
        return 2
    import torch

    return max(1, torch.cuda.device_count())


def model_shape() -> str:
    """The model the memory demos train: a 4M-parameter GPT-2 on CPU, GPT-2 350M on a GPU."""
    return "gpt2-small-cpu" if scale() == "cpu" else "gpt2-350m"


def train_shape(nproc: int | None = None) -> str:
    """The model the training demos of 4.3 and 4.6 train: a 135K-parameter GPT-2 on CPU, GPT-2 350M on a GPU.

    ``nproc``: the ranks of the run. A run that needs more ranks than this machine has GPUs runs on CPU
    ranks (``dscourse.launch.cpu_ranks_if_gpus_short``), so it gets the CPU model: GPT-2 350M on CPU
    ranks would take minutes a step.
    """
    if scale() == "cpu":
        return "gpt2-tiny"
    from .launch import gpus_short

    return "gpt2-tiny" if nproc is not None and gpus_short(nproc) else "gpt2-350m"
