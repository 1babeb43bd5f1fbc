"""Time training steps under one ZeRO setting over a grid of micro-batch sizes (and gradient accumulation).

One engine per launch; the micro-batch and the gradient accumulation change between grid points through
DeepSpeed's own ``engine.set_train_micro_batch_size`` / ``set_train_batch_size`` (no tensor of the engine is
sized by either). Run it through a launcher, one process per GPU::

    torchrun --nproc_per_node 1 -m dscourse.scripts.zero_throughput --stage 2 --micro-batches 1 4 16 --out results/

Each point: warm-up optimizer steps, then timed ones (the device synchronised around each phase), the
median step time, tokens/s over all ranks, the forward / backward / optimizer-step split of one micro-step,
and the peak ``torch.cuda.max_memory_allocated()``. A point that runs out of GPU memory is recorded as such,
and the larger micro-batches after it are skipped. Every rank writes ``rank<N>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from dscourse.scripts import finish, init


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES), help="model shape (dscourse.models.SHAPES)")
    p.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--offload-optimizer", default="none", choices=["none", "cpu"])
    p.add_argument("--offload-param", default="none", choices=["none", "cpu"])
    p.add_argument("--micro-batches", nargs="+", type=int, default=[1, 2])
    p.add_argument("--grad-accum", nargs="+", type=int, default=[1],
                   help="gradient accumulation steps; each is combined with the largest micro-batch that fits")
    p.add_argument("--warmup", type=int, default=2, help="optimizer steps left out of the timing")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per grid point")
    p.add_argument("--point-budget", type=float, default=0, help="seconds of timed steps per point (0: no limit)")
    p.add_argument("--optimizer", default="auto", choices=["auto", "torch", "cpu_adam"],
                   help="auto: DeepSpeedCPUAdam when the optimizer is offloaded, torch.optim.AdamW otherwise")
    p.add_argument("--pin-memory", action="store_true", help="pin_memory: true for the offloaded tensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for rank<N>.json")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import deepspeed
    import torch

    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, count_params, synthetic_batch

    rank, world, device = init(args.seed)
    cuda = device.type == "cuda"

    optimizer = args.optimizer
    if optimizer == "auto":
        optimizer = "cpu_adam" if args.offload_optimizer == "cpu" else "torch"
    cfg = build_config(args.stage, micro_batch=1, world_size=world, offload_optimizer=args.offload_optimizer,
                       offload_param=args.offload_param, torch_adam=optimizer == "torch", lr=1e-4)
    cfg["gradient_clipping"] = 1.0
    for key in ("offload_optimizer", "offload_param"):
        if key in cfg["zero_optimization"]:
            cfg["zero_optimization"][key]["pin_memory"] = bool(args.pin_memory)
    shape = SHAPES[args.shape]
    model = build_model(shape)
    params = count_params(model)[0]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t_init = time.perf_counter()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    init_seconds = time.perf_counter() - t_init

    grid = [(mb, 1) for mb in args.micro_batches]
    points, too_big, data_step = [], None, 0
    gi = 0
    while True:
        if gi == len(args.micro_batches):  # after the micro-batch sweep: accumulate on the largest that fitted
            fitted = [p["micro_batch"] for p in points if "tokens_per_second" in p]
            grid += [(max(fitted), g) for g in args.grad_accum if g > 1 and fitted]
        if gi >= len(grid):
            break
        mb, gas = grid[gi]
        gi += 1
        point = {"micro_batch": mb, "grad_accum": gas, "tokens_per_step": mb * gas * shape.seq * world}
        if too_big is not None and mb >= too_big and gas == 1:
            point["skipped"] = f"micro-batch {too_big} already ran out of memory"
            points.append(point)
            continue
        engine.set_train_micro_batch_size(mb)
        engine.set_train_batch_size(mb * gas * world)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        steps, phases, updates = [], {"forward": [], "backward": [], "step": []}, []
        t_point = time.perf_counter()
        try:
            for step in range(args.warmup + args.steps):
                sync()
                t0 = time.perf_counter()
                update = 0.0
                for _ in range(gas):
                    ids = synthetic_batch(shape, mb, data_step * world + rank, seed=args.seed, device=device)
                    data_step += 1
                    sync()
                    a = time.perf_counter()
                    loss = engine(input_ids=ids, labels=ids).loss
                    sync()
                    b = time.perf_counter()
                    engine.backward(loss)
                    sync()
                    c = time.perf_counter()
                    engine.step()  # the optimizer really steps only at the accumulation boundary
                    sync()
                    d = time.perf_counter()
                    update += d - c
                    if step >= args.warmup:
                        phases["forward"].append(b - a)
                        phases["backward"].append(c - b)
                        phases["step"].append(d - c)
                steps.append(time.perf_counter() - t0)
                updates.append(update)
                loss_value = loss.item()
                if (args.point_budget and step >= args.warmup
                        and time.perf_counter() - t_point > args.point_budget + sum(steps[:args.warmup])):
                    break
        except torch.OutOfMemoryError as e:
            point["oom"] = str(e).split("\n")[0][:300]
            too_big = mb
            del e
            engine.optimizer.zero_grad() if hasattr(engine.optimizer, "zero_grad") else None
            if cuda:
                torch.cuda.empty_cache()
            points.append(point)
            if rank == 0:
                print(f"stage {args.stage} mb {mb}: out of memory", flush=True)
            continue
        timed = steps[args.warmup:]
        median = statistics.median(timed)
        point.update({
            "step_seconds": [round(s, 6) for s in steps], "timed_steps": len(timed), "median_step_seconds": median,
            "tokens_per_second": point["tokens_per_step"] / median,
            "phase_median_seconds": {k: statistics.median(v) for k, v in phases.items() if v},
            # engine.step() summed over the micro-steps of one optimizer step (only the boundary one updates)
            "optimizer_step_seconds": statistics.median(updates[args.warmup:]),
            "model_tflops_per_gpu": 6 * params * point["tokens_per_step"] / median / world / 1e12,
            "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
            "last_loss": loss_value,
        })
        points.append(point)
        if rank == 0:
            print(f"stage {args.stage} oo={args.offload_optimizer} op={args.offload_param} mb {mb} gas {gas}: "
                  f"{median * 1e3:.1f} ms/step, {point['tokens_per_second']:,.0f} tokens/s", flush=True)

    result = {
        "rank": rank, "world_size": world, "shape": args.shape, "shape_spec": shape.as_dict(), "params": params,
        "stage": args.stage, "offload_optimizer": args.offload_optimizer, "offload_param": args.offload_param,
        "optimizer": optimizer, "pin_memory": bool(args.pin_memory), "optimizer_class": type(engine.optimizer).__name__,
        "basic_optimizer": type(getattr(engine, "basic_optimizer", None)).__name__,
        "config": cfg, "init_seconds": init_seconds, "points": points,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
