"""Time ``engine.save_checkpoint`` and ``engine.save_16bit_model`` under one ZeRO stage, and count the bytes written.

Run it through a launcher, one process per GPU::

    torchrun --nproc_per_node 1 -m dscourse.scripts.checkpoint_save --stage 3 --dir /tmp/ckpt --out results/

After one training step every rank calls ``save_checkpoint`` (the full training state: 16-bit weights and,
per rank, the fp32 master and Adam partitions), then ``save_16bit_model`` (the consolidated 16-bit weights
that the Hugging Face Trainer's ``save_model`` writes). Under ZeRO-3, ``save_16bit_model`` gathers the
partitions only when ``stage3_gather_16bit_weights_on_model_save`` is true; it is saved once with the flag off
and once with it on (the flag is read at save time and changes nothing else, so one engine serves both).
Each save is timed from a barrier to a barrier, then ``os.sync()`` is timed separately (the page cache
absorbs a fast save), and the files are counted and deleted. Every rank writes ``rank<N>.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from dscourse.scripts import finish, init


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="save_checkpoint repeated this many times (each timed)")
    p.add_argument("--dir", required=True, help="where the checkpoints are written (and deleted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def tree_bytes(path: Path) -> tuple[int, dict]:
    """(bytes of every file under ``path``, the largest files by name)."""
    sizes = {str(f.relative_to(path)): f.stat().st_size for f in path.rglob("*") if f.is_file()}
    top = dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:8])
    return sum(sizes.values()), {"files": len(sizes), "largest": top}


def main(argv=None) -> int:
    args = parse_args(argv)
    import deepspeed
    import torch
    import torch.distributed as dist

    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, count_params, synthetic_batch

    rank, world, device = init(args.seed)
    cuda = device.type == "cuda"
    cfg = build_config(args.stage, micro_batch=args.micro_batch, world_size=world)
    if args.stage == 3:
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    shape = SHAPES[args.shape]
    model = build_model(shape)
    params = count_params(model)[0]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    ids = synthetic_batch(shape, args.micro_batch, rank, seed=args.seed, device=device)
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()

    root = Path(args.dir)

    def timed(name: str, fn, where: Path) -> dict:
        if rank == 0 and where.exists():
            shutil.rmtree(where)
        dist.barrier()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        returned = fn(where)
        dist.barrier()
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        os.sync()
        dist.barrier()
        sync_seconds = time.perf_counter() - t1
        record = {"name": name, "seconds": seconds, "sync_seconds": sync_seconds,
                  "returned": returned if isinstance(returned, (bool, type(None))) else str(returned)}
        if where.exists():
            record["bytes"], record["layout"] = tree_bytes(where)
        else:
            record["bytes"], record["layout"] = 0, {"files": 0, "largest": {}}
        dist.barrier()
        if rank == 0 and where.exists():
            shutil.rmtree(where)
        dist.barrier()
        if rank == 0:
            print(f"ZeRO-{args.stage} {name}: {seconds:.2f} s (+{sync_seconds:.2f} s sync), "
                  f"{record['bytes'] / 1e9:.2f} GB", flush=True)
        return record

    saves = []
    for i in range(args.repeats):
        saves.append(timed(f"save_checkpoint#{i}", lambda d: engine.save_checkpoint(str(d), tag="step1"),
                           root / "ckpt"))
    if args.stage == 3:
        for gather in (False, True):
            engine._config.zero_config.gather_16bit_weights_on_model_save = gather
            rec = timed(f"save_16bit_model (gather_16bit_weights_on_model_save={str(gather).lower()})",
                        lambda d: engine.save_16bit_model(str(d)), root / "model16")
            rec["gather_16bit_weights_on_model_save"] = gather
            saves.append(rec)
    else:
        saves.append(timed("save_16bit_model", lambda d: engine.save_16bit_model(str(d)), root / "model16"))

    result = {"rank": rank, "world_size": world, "shape": args.shape, "shape_spec": shape.as_dict(),
              "params": params, "stage": args.stage, "saves": saves,
              "device": torch.cuda.get_device_name() if cuda else "cpu"}
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
