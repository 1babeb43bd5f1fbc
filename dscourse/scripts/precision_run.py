"""Train one model under several precisions (fp32, bf16, fp16, ...) with DeepSpeed, one after the other.

Run it through a launcher, one process per rank::

    torchrun --nproc_per_node 2 -m dscourse.scripts.precision_run --out results/ \\
        --runs '[{"name": "bf16", "precision": "bf16"}, {"name": "fp32", "precision": "fp32"}]'

Each run builds the same seeded model, a config from :func:`dscourse.config.build_config` (plus the
run's ``fp16`` keys and top-level ``extra`` keys, e.g. ``communication_data_type``), and trains
``--steps`` steps on a pool of ``--pool`` synthetic batches that it cycles through (so the loss
falls: the model memorises them). Every rank writes ``rank<N>.json`` with, per run: the loss, the
loss scale and whether DeepSpeed skipped the step, step times, tokens/s, the bytes the engine holds
(:func:`dscourse.accounting.count_engine_bytes`), the CUDA peak on a GPU, or the error DeepSpeed
raised (a run that fails does not stop the next one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dscourse.scripts import finish, init

DEFAULT_RUNS = [{"name": "bf16", "precision": "bf16"}, {"name": "fp32", "precision": "fp32"}]


def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--runs", default=json.dumps(DEFAULT_RUNS),
                   help='JSON list of {"name", "precision": fp32|bf16|fp16, "fp16": {...}, "extra": {...}}')
    p.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--pool", type=int, default=4, help="distinct batches cycled through (0: a new batch every step)")
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the throughput")
    p.add_argument("--time-budget", type=float, default=0, help="seconds of training per run (0: no limit)")
    p.add_argument("--count-bytes", action="store_true", help="count the bytes each engine holds after training")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = p.parse_args(argv)
    args.lr = args.lr or learning_rate(args.shape)
    return args


def run_one(spec: dict, args, rank: int, world: int, device) -> dict:
    import deepspeed
    import torch

    from dscourse.accounting import count_engine_bytes
    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, count_params, synthetic_batch

    shape = SHAPES[args.shape]
    cfg = build_config(args.stage, micro_batch=args.micro_batch, world_size=world, precision=spec["precision"],
                       lr=args.lr)
    if spec["precision"] == "fp16":
        cfg["fp16"] = {"enabled": True, **spec.get("fp16", {})}
    cfg.update(spec.get("extra", {}))
    record = {"name": spec["name"], "precision": spec["precision"], "config": cfg}

    torch.manual_seed(args.seed)
    model = build_model(shape)
    record["params"] = count_params(model)[0]
    cuda = device.type == "cuda"
    try:
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    except Exception as e:  # noqa: BLE001 - the error is the result (fp16 on a CPU)
        record["error"] = f"{type(e).__name__}: {e}"
        return record
    record.update({"optimizer_class": type(engine.optimizer).__name__,
                   "communication_data_type": str(engine.communication_data_type).replace("torch.", ""),
                   "param_dtype": str(next(engine.module.parameters()).dtype).replace("torch.", "")})
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, scales, skipped, times = [], [], [], []
    tokens_per_step = args.micro_batch * shape.seq * world
    t_start = time.perf_counter()
    for step in range(args.steps):
        batch = step % args.pool if args.pool else step
        ids = synthetic_batch(shape, args.micro_batch, batch * world + rank, seed=args.seed, device=device)
        t0 = time.perf_counter()
        scale = getattr(engine.optimizer, "cur_scale", None)  # the scale this step's backward multiplies by
        before = engine.skipped_steps
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        loss_value = loss.item()  # synchronises the device
        times.append(time.perf_counter() - t0)
        losses.append(loss_value)
        scales.append(float(scale) if scale is not None else None)
        skipped.append(engine.skipped_steps > before)
        if rank == 0 and (step % 50 == 0 or step == args.steps - 1):
            print(f"{spec['name']} step {step}: loss {loss_value:.4f} scale {scale} skipped {engine.skipped_steps}",
                  flush=True)
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            break
    timed = times[args.warmup:] or times
    record.update({
        "losses": losses, "loss_scale": scales, "skipped": skipped, "skipped_steps": engine.skipped_steps,
        "steps": len(losses), "step_seconds": times, "tokens_per_step": tokens_per_step,
        "tokens_per_second": tokens_per_step * len(timed) / sum(timed),
        "final_loss_scale": getattr(engine.optimizer, "cur_scale", None),
    })
    if args.count_bytes:
        held = count_engine_bytes(engine)
        held.pop("paths")
        record["held_after_step"] = held
    if cuda:
        record["cuda_peak"] = torch.cuda.max_memory_allocated()
    engine.destroy()
    del engine, model
    if cuda:
        torch.cuda.empty_cache()
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from dscourse.models import SHAPES

    rank, world, device = init()
    results = []
    for spec in json.loads(args.runs):
        results.append(run_one(spec, args, rank, world, device))
        torch.distributed.barrier()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": world, "shape": args.shape, "shape_spec": SHAPES[args.shape].as_dict(),
         "stage": args.stage, "micro_batch": args.micro_batch, "lr": args.lr, "pool": args.pool,
         "device": str(device), "runs": results}, indent=1))
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
