"""Section 4.6's experiments: PyTorch FSDP2 and DeepSpeed ZeRO side by side, as functions the notebook and
the tests share.

* :func:`fsdp_train` trains with ``dscourse.scripts.fsdp_run`` (FSDP2 ``fully_shard``) on the batches that
  :func:`dscourse.integration.train_stages` gives ``dscourse.scripts.train_run`` (DeepSpeed), so the two loss
  curves can be compared with :func:`dscourse.integration.max_rel_diff`;
* :func:`zero_held` runs ``dscourse.scripts.zero_memory`` and :func:`zero_elements` turns the bytes a
  DeepSpeed engine holds into elements, to set beside FSDP2's (``count_fsdp_bytes`` in the rank script);
* :data:`MAPPING` is the table of FSDP sharding strategies and ZeRO stages that the notebook measures.
"""

from __future__ import annotations

import json
from pathlib import Path

from .launch import run_ranks

# FSDP1 name -> (what FSDP2 writes, the DeepSpeed setting it is compared with, what is sharded at rest).
MAPPING = {
    "FULL_SHARD": ("fully_shard(m, reshard_after_forward=True)", "ZeRO-3", "params, grads, optimizer state"),
    "SHARD_GRAD_OP": ("fully_shard(m, reshard_after_forward=False)", "ZeRO-2",
                      "grads, optimizer state (+ params at rest)"),
    "NO_SHARD": ("fully_shard(m, mesh=2-D (N, 1))", "ZeRO-0 (DDP)", "nothing"),
    "HYBRID_SHARD": ("fully_shard(m, mesh=2-D (replicas, shard))", "ZeRO++ hpZ (close, not equal)",
                     "everything, within each shard group"),
}

# What --strategy of fsdp_run each FSDP1 name is.
STRATEGY = {"FULL_SHARD": "full", "SHARD_GRAD_OP": "grad_op", "NO_SHARD": "no_shard", "HYBRID_SHARD": "hybrid"}


def fsdp_train(workdir: str | Path, strategy: str = "full", precision: str = "bf16", steps: int = 12,
               shape: str = "gpt2-tiny", nproc: int = 2, pool: int = 4, offload: bool = False,
               mesh: tuple[int, int] | None = None, reshard_after_forward: int | None = None,
               timeout: float = 600) -> list[dict]:
    """Train with FSDP2 on ``nproc`` ranks (``dscourse.scripts.fsdp_run``); every rank's results.
    ``reshard_after_forward``: an int for ``strategy="full"`` (reshard to groups of that many ranks after forward)."""
    run = Path(workdir) / (f"fsdp-{strategy}-{precision}{'-offload' if offload else ''}-{nproc}"
                           + (f"-raf{reshard_after_forward}" if reshard_after_forward else ""))
    args = ["--strategy", strategy, "--precision", precision, "--steps", str(steps), "--shape", shape,
            "--pool", str(pool)]
    if reshard_after_forward is not None:
        args += ["--reshard-after-forward", str(reshard_after_forward)]
    if offload:
        args.append("--offload")
    if mesh:
        args += ["--mesh", *map(str, mesh)]
    return run_ranks("dscourse.scripts.fsdp_run", args, nproc=nproc, timeout=timeout, out_dir=run).ranks


def zero_held(workdir: str | Path, stage: int = 3, shape: str = "gpt2-tiny", nproc: int = 2, steps: int = 4,
              offload: bool = False, persistence_threshold: int | None = 0, extra_zero: dict | None = None,
              timeout: float = 600) -> list[dict]:
    """What each rank of a bf16 DeepSpeed engine holds after ``steps`` steps (``dscourse.scripts.zero_memory``).

    ``persistence_threshold=0`` makes ZeRO-3 shard every parameter; DeepSpeed's default (1e5) keeps every
    parameter of at most 1e5 elements whole on each rank, which on a small model is all of them.
    ``extra_zero``: more ``zero_optimization`` keys (``{"zero_hpz_partition_size": 2}`` for ZeRO++ hpZ).
    """
    run = Path(workdir) / f"zero{stage}{'-offload' if offload else ''}-{nproc}{'-extra' if extra_zero else ''}"
    zero = {} if persistence_threshold is None or stage != 3 else \
        {"stage3_param_persistence_threshold": persistence_threshold}
    zero.update(extra_zero or {})
    args = ["--stage", str(stage), "--steps", str(steps), "--shape", shape, "--zero-json", json.dumps(zero)]
    if offload:
        args += ["--offload-optimizer", "cpu", "--offload-param", "cpu"]
    return run_ranks("dscourse.scripts.zero_memory", args, nproc=nproc, timeout=timeout, out_dir=run).ranks


def zero_elements(rank: dict) -> dict[str, int]:
    """Elements a bf16 DeepSpeed engine holds on one rank, from the bytes ``zero_memory`` counted.

    bf16 parameters (2 bytes), fp32 master weights and Adam state (4 bytes; Adam's step counter adds one
    element per parameter group).
    """
    held = {}
    for cats in rank["held_after_step"].values():
        for cat, nbytes in cats.items():
            held[cat] = held.get(cat, 0) + nbytes
    return {"params": held["params"] // 2, "master": held["master"] // 4, "optim": held["optim"] // 4}
