"""Scripts that the notebooks launch on several ranks (``python -m dscourse.scripts.NAME``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

if os.environ.get("DSCOURSE_WARM_RANKS"):  # in a test session: a warm interpreter becomes this rank (dscourse.warm)
    from dscourse.warm import hand_off

    hand_off()  # returns only where none takes it: the rank then starts cold, as everywhere else

from dscourse.cpuinfo_once import use_saved  # noqa: E402

use_saved()  # in a test session: DeepSpeed's CPU-feature query answered once, not in every rank (cpuinfo_once)


def uses_cuda() -> bool:
    """Whether this rank trains on a GPU: one is visible and the ranks were not moved onto the CPU with
    ``DS_ACCELERATOR=cpu`` (dscourse.launch.cpu_ranks_if_gpus_short), which holds even where a launcher made a GPU
    visible again (the deepspeed launcher sets CUDA_VISIBLE_DEVICES per node). The one test for every script."""
    import os

    import torch

    return torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"


def init(seed: int | None = None, backend: str = "deepspeed", timeout: float | None = None):
    """Seed, pick this rank's device and start the process group (NCCL with a GPU, gloo without).

    ``backend="deepspeed"`` goes through ``deepspeed.init_distributed`` (what ``deepspeed.initialize``
    and the ZeRO optimizers expect); ``"torch"`` through ``torch.distributed.init_process_group``
    (FSDP2, plain collectives), with ``timeout`` seconds for its collectives when given.
    Returns ``(rank, world_size, device)``.
    """
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if seed is not None:
        torch.manual_seed(seed)
    cuda = uses_cuda()
    if cuda:  # before the process group: NCCL binds each rank to the device current at init
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    name = "nccl" if cuda else "gloo"
    extra = {"timeout": timedelta(seconds=timeout)} if timeout else {}
    if backend == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend=name, **extra)
    elif backend == "torch":
        dist.init_process_group(name, **extra)
    else:
        raise ValueError(f"backend must be 'deepspeed' or 'torch', not {backend!r}")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def deterministic() -> None:
    """Make a GPU run repeat bit for bit; call it first. A CPU run already does.

    4.3 compares two runs' losses for equality (two launchers, flags vs config file, resumed vs
    uninterrupted). On a GPU that needs cuBLAS with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read
    when its handle is created), deterministic kernels (the embedding's backward otherwise adds with atomics),
    cuDNN's deterministic algorithms (what the Trainer's ``full_determinism=True`` sets too), and attention
    through the math kernels: on an H100 torch picks cuDNN's fused attention, whose backward is not
    deterministic ("cuDNN Attention defaults to a non-deterministic algorithm"), and two identical GPT-2
    350M runs then differed by up to 1.5e-5 of the loss; with the math kernels they repeat bit for bit
    (``dscourse/data/gpu_repeatability.json``). ``DSCOURSE_FUSED_ATTENTION=1`` leaves the choice to torch,
    for tools/gpu_repeatability.py, which compares the two. Speed benchmarks do not call this.
    """
    import os

    import torch

    # only for GPU ranks: deterministic algorithms also pick other CPU kernels (the embedding's backward), and
    # CPU ranks that a launcher let see a GPU would then round differently from the same ranks elsewhere
    if uses_cuda():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        if os.environ.get("DSCOURSE_FUSED_ATTENTION") != "1":
            torch.backends.cuda.enable_flash_sdp(False)
            torch.backends.cuda.enable_mem_efficient_sdp(False)
            torch.backends.cuda.enable_cudnn_sdp(False)


def finish(result: dict | None = None, out=None, rank: int | None = None) -> None:
    """Write this rank's ``result`` to ``out/rank<rank>.json``, wait for every rank, take the process
    group down, and leave at once with exit code 0.

    Call it last. Left to interpreter shutdown, threads of gloo and of DeepSpeed's CPU ops are
    destroyed while still joinable and the process aborts ("terminate called without an active
    exception") after its work is done; with ZeRO-3 this happened about one run in ten even after
    ``destroy_process_group``. ``os._exit`` skips that teardown: nothing is left to do by then.
    """
    import json
    import os
    import sys
    from pathlib import Path

    import torch.distributed as dist

    if result is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rank{rank}.json").write_text(json.dumps(result, indent=1, default=str))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --- what several rank scripts report about their engine ----------------------------------------------------

def engine_summary(engine) -> dict:
    """What DeepSpeed really built, and the config values it ended up with."""
    cfg = engine.config  # the config dict after DeepSpeed (and the Trainer) filled it
    zero = cfg.get("zero_optimization", {})
    return {
        "zero_stage": engine.zero_optimization_stage(), "optimizer_class": type(engine.optimizer).__name__,
        "basic_optimizer": type(getattr(engine, "basic_optimizer", None)).__name__,
        "bf16": engine.bfloat16_enabled(), "fp16": engine.fp16_enabled(),
        "train_batch_size": engine.train_batch_size(), "micro_batch": engine.train_micro_batch_size_per_gpu(),
        "grad_accum": engine.gradient_accumulation_steps(),
        "offload_optimizer": engine.zero_offload_optimizer() is not None if hasattr(engine, "zero_offload_optimizer")
        else None,
        "filled": {k: cfg[k] for k in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                       "gradient_accumulation_steps", "gradient_clipping") if k in cfg},
        "filled_optimizer": cfg.get("optimizer"), "filled_zero": {k: v for k, v in zero.items()
                                                                  if k in ("stage", "reduce_bucket_size",
                                                                           "stage3_prefetch_bucket_size",
                                                                           "stage3_param_persistence_threshold")},
    }


def dir_bytes(path: Path) -> dict[str, int]:
    """Bytes of every file under ``path``, by path relative to it."""
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}


def full_weights(engine) -> tuple[dict, dict]:
    """(fp32 master weights, the module's own weights), full size, by parameter name; on every rank.

    Collective under ZeRO-3: every rank must call it.
    """
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    master, module = {}, {}
    for name, p in engine.module.named_parameters():
        fp32 = safe_get_full_fp32_param(p)  # None where the optimizer keeps no ZeRO fp32 copy (bf16 ZeRO-0)
        if fp32 is not None:
            master[name] = fp32.detach().clone().cpu()
        with deepspeed.zero.GatheredParameters([p], enabled=hasattr(p, "ds_id")):
            module[name] = p.detach().clone().cpu()
    return master, module
