"""Train with PyTorch FSDP2 (``fully_shard``) on the same model and batches as ``dscourse.scripts.train_run``.

    torchrun --nproc_per_node 2 -m dscourse.scripts.fsdp_run --strategy full --precision bf16 --out results/
    torchrun --nproc_per_node 2 -m dscourse.scripts.fsdp_run --strategy grad_op --offload --out results/
    torchrun --nproc_per_node 4 -m dscourse.scripts.fsdp_run --strategy hybrid --mesh 2 2 --out results/

``--strategy`` names FSDP1's sharding strategies and says what FSDP2 does for each:

* ``full`` (FULL_SHARD, ~ZeRO-3): 1-D mesh, ``reshard_after_forward=True``;
* ``grad_op`` (SHARD_GRAD_OP, ~ZeRO-2): 1-D mesh, ``reshard_after_forward=False`` (parameters stay gathered
  from forward to backward);
* ``no_shard`` (NO_SHARD, ~ZeRO-0 / DDP): a 2-D mesh (world, 1): replicate over every rank, shard over one;
* ``hybrid`` (HYBRID_SHARD): a 2-D mesh ``--mesh R S``: replicate over R groups, shard inside each group of S.

``--reshard-after-forward N`` (with ``full``) passes the integer N instead of ``True``: after forward each block keeps
its parameters sharded over groups of N ranks (1/N each, in the compute dtype) instead of 1/world, so backward's
all-gather runs inside a group of N (a node, say): FSDP2's analogue of ZeRO++ hpZ.

The model is ``dscourse.models.build_model(--shape)`` after ``torch.manual_seed(--seed)``; rank r at step s
trains on ``synthetic_batch(shape, micro, (s % pool) * world + r)``, torch's AdamW (``--lr``, by default
``dscourse.models.learning_rate(shape)``, no weight decay) with gradient clipping at 1.0: what ``train_run``
does with a config from ``dscourse.config.build_config``, so the loss curves can be compared step by step. ``--precision bf16`` computes in bf16 from fp32 shards
(``MixedPrecisionPolicy``); ``--offload`` keeps shards, gradients and optimizer state in host memory
(``CPUOffloadPolicy``; the optimizer step then runs on the CPU). Each rank writes ``rank<N>.json``: losses by
step, the elements and bytes it holds by category (``dscourse.accounting.count_fsdp_bytes``), the parameter
elements it holds between forward and backward, and seconds per step.
"""

from __future__ import annotations

import argparse
import sys
import time

from dscourse.scripts import deterministic, finish, init

STRATEGIES = ("full", "grad_op", "no_shard", "hybrid")


def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategy", default="full", choices=STRATEGIES, help="full (FULL_SHARD), grad_op (SHARD_GRAD_OP), no_shard (NO_SHARD), hybrid (HYBRID_SHARD)")
    p.add_argument("--mesh", type=int, nargs=2, default=None, metavar=("REPLICATE", "SHARD"),
                   help="2-D mesh for --strategy hybrid (REPLICATE x SHARD = number of ranks)")
    p.add_argument("--reshard-after-forward", type=int, default=None, metavar="N",
                   help="with --strategy full: reshard to groups of N ranks after forward (a divisor of the world "
                        "size, not 1 and not the world size itself)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--offload", action="store_true", help="CPUOffloadPolicy: shards, grads, optimizer state on CPU")
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=10, help="train this many steps")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=0,
                   help="cycle through this many batches per rank (0: a new batch every step), as train_run")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lr = args.lr or learning_rate(args.shape)
    if args.steps < 1 or args.micro_batch < 1:
        p.error(f"--steps and --micro-batch must be at least 1, not {args.steps} and {args.micro_batch}")
    if args.strategy == "hybrid" and not args.mesh:
        p.error("--strategy hybrid needs --mesh REPLICATE SHARD (for example --mesh 2 2 on 4 ranks)")
    if args.reshard_after_forward is not None and args.strategy != "full":
        p.error(f"--reshard-after-forward is for --strategy full, not {args.strategy}")
    if args.mesh and args.strategy != "hybrid":
        p.error(f"--mesh is for --strategy hybrid; --strategy {args.strategy} builds its own mesh")
    return args


def build_mesh(strategy: str, world: int, mesh_shape=None, device: str = "cpu"):
    """The device mesh each strategy shards over (a 2-D mesh makes ``fully_shard`` replicate over dim 0)."""
    from torch.distributed.device_mesh import init_device_mesh

    if strategy in ("full", "grad_op"):
        return init_device_mesh(device, (world,), mesh_dim_names=("shard",))
    shape = (world, 1) if strategy == "no_shard" else tuple(mesh_shape)
    if shape[0] * shape[1] != world:
        raise SystemExit(f"--mesh {shape[0]} {shape[1]} needs {shape[0] * shape[1]} ranks, not {world}")
    return init_device_mesh(device, shape, mesh_dim_names=("replicate", "shard"))


def shard_model(model, mesh, strategy: str, precision: str, offload: bool, reshard_after_forward: int | None = None):
    """``fully_shard`` every transformer block, then the root (embeddings, final norm, tied output layer)."""
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    reshard = reshard_after_forward if reshard_after_forward is not None else strategy != "grad_op"
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard,
              "offload_policy": CPUOffloadPolicy(pin_memory=False) if offload else OffloadPolicy()}
    if precision == "bf16":
        # bf16 compute and bf16 gradient reduction from fp32 shards: DeepSpeed's bf16 ZeRO-3 also reduces
        # gradients in bf16 (its communication_data_type follows the model's dtype) into fp32 master weights.
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def gathered_param_elements(model) -> int:
    """Parameter elements this rank holds right now: the local shards plus every parameter still gathered
    (all-gathered and not yet freed) in its full size."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp._fully_shard._fsdp_param import ShardedState

    total = 0
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        group = module._get_fsdp_state()._fsdp_param_group
        for fp in group.fsdp_params if group else ():
            total += fp.sharded_param.to_local().numel()
            if fp.sharded_state == ShardedState.UNSHARDED:
                total += fp.unsharded_param.numel()
            elif fp.sharded_state == ShardedState.SHARDED_POST_FORWARD:  # reshard_after_forward=<int>
                total += fp._sharded_post_forward_param_data.numel()
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    deterministic()
    import torch

    from dscourse.accounting import count_fsdp_bytes
    from dscourse.models import SHAPES, build_model, count_params, synthetic_batch

    rank, world, device = init(args.seed, backend="torch")
    cuda = device.type == "cuda"
    shape = SHAPES[args.shape]
    model = build_model(shape).to(device)
    total_params, _ = count_params(model)
    mesh = build_mesh(args.strategy, world, args.mesh, device.type)
    world_size = mesh.size(-1)
    if args.reshard_after_forward is not None and (args.reshard_after_forward in (1, world_size)
                                                   or world_size % args.reshard_after_forward):
        raise SystemExit(f"--reshard-after-forward {args.reshard_after_forward}: give a divisor of the {world_size} "
                         "ranks other than 1 and the world size itself (for example 2 on 4 ranks)")
    shard_model(model, mesh, args.strategy, args.precision, args.offload, args.reshard_after_forward)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    losses, seconds, during = {}, [], None
    for step in range(args.steps):
        batch = step % args.pool if args.pool else step
        ids = synthetic_batch(shape, args.micro_batch, batch * world + rank, seed=args.seed, device=device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        if during is None:
            during = gathered_param_elements(model)  # between forward and backward
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == args.steps - 1:
            held = count_fsdp_bytes(model, optimizer)  # gradients still there: what a step needs at most
        optimizer.zero_grad()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        losses[step + 1] = loss.item()
        if rank == 0:
            print(f"step {step + 1} loss {losses[step + 1]:.4f}", flush=True)

    paths = held.pop("paths")
    where = {cat: sorted({dev for dev, c, _ in paths.values() if c == cat}) for cat in ("params", "grads", "optim")}
    first = next(p for p in model.parameters())
    result = {"rank": rank, "world_size": world, "strategy": args.strategy, "precision": args.precision,
              "offload": args.offload, "reshard_after_forward": args.reshard_after_forward,
              "mesh": list(mesh.shape), "placements": [str(p) for p in first.placements],
              "params": total_params, "param_dtype": str(first.dtype).replace("torch.", ""),
              "held": held, "where": where, "param_elements_between_forward_and_backward": during,
              "losses": losses, "seconds_per_step": seconds, "micro_batch": args.micro_batch}
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
