"""Scripts that the notebooks launch on several ranks (``python -m dscourse.scripts.NAME``)."""

from __future__ import annotations


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
    cuda = torch.cuda.is_available()
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
