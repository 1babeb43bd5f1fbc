"""Train with ``deepspeed.initialize`` for a number of steps, optionally saving and resuming a checkpoint.

    torchrun --nproc_per_node 2 -m dscourse.scripts.train_run --config ds.json --steps 12 --out results/
    torchrun ... -m dscourse.scripts.train_run --config ds.json --steps 12 --save-at 6 --save-dir ckpt --out r1/
    torchrun ... -m dscourse.scripts.train_run --config ds.json --steps 12 --resume-from ckpt --out r2/

Every rank sees the same synthetic batch for a given (step, rank) whatever the ZeRO stage and whether
the run was resumed (``--pool N`` cycles through N batches, so that the loss visibly falls), so two runs can be compared step by step. Rank 0 prints ``step N loss X`` as it
goes. ``--dump-weights`` makes rank 0 write the full fp32 master weights (``weights_fp32.pt``, gathered
from every rank with ``deepspeed.utils.safe_get_full_fp32_param``) and the bf16 weights the model
computes with (``weights_bf16.pt``), to check a consolidated checkpoint against.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dscourse.scripts import deterministic, dir_bytes, finish, full_weights, init


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="DeepSpeed config file (plain: no \"auto\")")
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=10, help="train until this global step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=0,
                   help="cycle through this many batches per rank (the model learns them; 0: a new batch every step)")
    p.add_argument("--save-at", type=int, nargs="+", default=[], help="save a checkpoint after these steps")
    p.add_argument("--save-dir", default=None, help="where --save-at writes the checkpoint")
    p.add_argument("--resume-from", default=None, help="load this checkpoint folder and go on from its step")
    p.add_argument("--resume-tag", default=None, help="which checkpoint in it (step<N>); default: 'latest'")
    p.add_argument("--dump-weights", action="store_true", help="rank 0 writes the full weights at the end")
    p.add_argument("--universal-info", action="store_true",
                   help="save the universal_checkpoint_info that deepspeed.checkpoint.ds_to_universal needs")
    p.add_argument("--swap-dir", default=None,
                   help="the config's nvme_path: each rank records the files it holds there after the last step")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.save_at and not args.save_dir:
        p.error("--save-at needs --save-dir (the folder to write the checkpoint to)")
    if args.steps < 1:
        p.error(f"--steps must be at least 1, not {args.steps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deterministic()
    import deepspeed
    import torch

    from dscourse.models import SHAPES, build_model, synthetic_batch

    rank, world, _ = init(args.seed)
    shape = SHAPES[args.shape]
    model = build_model(shape)
    if args.universal_info:
        # ds_to_universal refuses a checkpoint without it; Megatron-DeepSpeed fills in tensor-parallel patterns,
        # a data-parallel model has none (engine.py stores the module's attribute of this name with the model states)
        from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

        setattr(model, UNIVERSAL_CHECKPOINT_INFO, {})
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=args.config)
    device = next(engine.module.parameters()).device
    micro = engine.train_micro_batch_size_per_gpu()

    start, result = 0, {}
    if args.resume_from:
        t0 = time.perf_counter()
        path, client = engine.load_checkpoint(args.resume_from, tag=args.resume_tag)
        if path is None:
            raise SystemExit(f"no checkpoint in {args.resume_from} (tag {args.resume_tag or 'latest'})")
        result["load_seconds"] = time.perf_counter() - t0
        start = client["step"]
    losses, seconds = {}, {}
    for step in range(start, args.steps):
        t0 = time.perf_counter()
        batch = step % args.pool if args.pool else step
        ids = synthetic_batch(shape, micro, batch * world + rank, seed=args.seed, device=device)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses[step + 1] = loss.item()
        seconds[step + 1] = time.perf_counter() - t0
        if rank == 0:
            print(f"step {step + 1} loss {losses[step + 1]:.4f}", flush=True)
        if step + 1 in args.save_at:
            torch.distributed.barrier()
            t0 = time.perf_counter()
            engine.save_checkpoint(args.save_dir, tag=f"step{step + 1}", client_state={"step": step + 1})
            torch.distributed.barrier()  # the save is done when every rank has written its shard
            result.setdefault("save_seconds", {})[step + 1] = time.perf_counter() - t0
            result["checkpoint_files"] = dir_bytes(Path(args.save_dir))

    if args.swap_dir:  # ZeRO-Infinity's swap files, while the engine still holds them
        result["swap_files"] = dir_bytes(Path(args.swap_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dump_weights:
        master, module = full_weights(engine)
        if rank == 0:
            torch.save(master, out / "weights_fp32.pt")
            torch.save(module, out / "weights_module.pt")
    result.update({"rank": rank, "world_size": world, "zero_stage": engine.zero_optimization_stage(),
                   "optimizer_class": type(engine.optimizer).__name__,
                   "losses": losses, "step_seconds": seconds, "first_step": start + 1, "micro_batch": micro})
    finish(result, out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
