"""Record the bytes DeepSpeed's own comms logger sees in one optimizer step, for many ZeRO settings in one launch.

    torchrun --nproc_per_node 2 -m dscourse.scripts.comm_volume --configs sweep --out results/
    torchrun --nproc_per_node 2 -m dscourse.scripts.comm_volume --configs '[{"stage": 2, "grad_accum": 2}]' --out r/

For each configuration, in sequence in the same processes: build a real engine with
``"comms_logger": {"enabled": true, "prof_all": true}``, train warm-up optimizer steps (two micro-batches at
least: ZeRO-3 completes its trace in the second), clear the logger (``deepspeed.comm.comms_logger.reset_data``),
train one measured optimizer step, read what the logger recorded (``comms_logger.comms_dict``:
{record name: {msg_size: [count, latencies, algbw, busbw]}}) and destroy the engine. Every rank writes
``rank<N>.json``: per configuration, ``[record name, msg_size, count]`` for everything it logged, or the error
that stopped the configuration (a knob that needs CUDA kernels) and where DeepSpeed raised it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dscourse.cli_util import OneLineParser, UsageError
from dscourse.scripts import finish, init


def sweep(world: int) -> list[dict]:
    """Every configuration the committed table measures (``dscourse/data/cpu_comm_volume.json``)."""
    small = 20000  # elements: several buckets for gpt2-tiny's 134,912 parameters
    specs = [{"name": f"z{s}-ga{g}", "stage": s, "grad_accum": g} for s in range(4) for g in (1, 2)]
    for s in (1, 2):
        specs += [{"name": f"z{s}-no-multi-rank", "stage": s, "zero": {"use_multi_rank_bucket_allreduce": False}},
                  {"name": f"z{s}-no-reduce-scatter", "stage": s, "zero": {"reduce_scatter": False}},
                  {"name": f"z{s}-small-buckets", "stage": s,
                   "zero": {"reduce_bucket_size": small, "allgather_bucket_size": small}},
                  {"name": f"z{s}-overlap", "stage": s, "zero": {"overlap_comm": True}}]
    specs += [{"name": "z1-no-multi-rank-ga2", "stage": 1, "grad_accum": 2,
               "zero": {"use_multi_rank_bucket_allreduce": False}},
              {"name": "z2-no-multi-rank-ga2", "stage": 2, "grad_accum": 2,
               "zero": {"use_multi_rank_bucket_allreduce": False}}]
    p0 = {"stage3_param_persistence_threshold": 0}
    specs += [{"name": "z3-p0-ga1", "stage": 3, "zero": p0},
              {"name": "z3-p0-ga2", "stage": 3, "grad_accum": 2, "zero": p0},
              {"name": "z3-p0-reuse0", "stage": 3, "zero": {**p0, "stage3_max_reuse_distance": 0}},
              {"name": "z3-p0-reuse0-ga2", "stage": 3, "grad_accum": 2,
               "zero": {**p0, "stage3_max_reuse_distance": 0}},
              {"name": "z3-p0-live0", "stage": 3, "zero": {**p0, "stage3_max_live_parameters": 0}},
              {"name": "z3-p0-reuse0-live0", "stage": 3,
               "zero": {**p0, "stage3_max_reuse_distance": 0, "stage3_max_live_parameters": 0}},
              {"name": "z3-p0-reuse0-live-small", "stage": 3,
               "zero": {**p0, "stage3_max_reuse_distance": 0, "stage3_max_live_parameters": small}},
              {"name": "z3-p0-reuse0-no-prefetch", "stage": 3,
               "zero": {**p0, "stage3_max_reuse_distance": 0, "stage3_prefetch_bucket_size": 0}},
              {"name": "z3-p0-reuse0-no-prefetch-ga2", "stage": 3, "grad_accum": 2,
               "zero": {**p0, "stage3_max_reuse_distance": 0, "stage3_prefetch_bucket_size": 0}},
              {"name": "z3-p0-live-small", "stage": 3, "zero": {**p0, "stage3_max_live_parameters": small}},
              {"name": "z3-p0-reuse40k-no-prefetch", "stage": 3,
               "zero": {**p0, "stage3_max_reuse_distance": 2 * small, "stage3_prefetch_bucket_size": 0}},
              {"name": "z3-p0-no-prefetch", "stage": 3, "zero": {**p0, "stage3_prefetch_bucket_size": 0}},
              {"name": "z3-p0-small-buckets", "stage": 3, "zero": {**p0, "reduce_bucket_size": small}},
              {"name": "z3-p0-no-overlap", "stage": 3, "zero": {**p0, "overlap_comm": False}},
              {"name": "z3-p20k", "stage": 3, "zero": {"stage3_param_persistence_threshold": small}},
              {"name": "z3-p20k-ga2", "stage": 3, "grad_accum": 2,
               "zero": {"stage3_param_persistence_threshold": small}},
              {"name": "z3-p0-no-reduce-scatter", "stage": 3, "zero": {**p0, "reduce_scatter": False}},
              {"name": "z3-p0-qw", "stage": 3, "zero": {**p0, "zero_quantized_weights": True}},
              {"name": "z3-p0-qg", "stage": 3, "zero": {**p0, "zero_quantized_gradients": True}}]
    # ZeRO-3's gather schedule for Llama-2-7B: its 4096x smaller copy, with the default thresholds / 4096
    # (stage3_max_reuse_distance and _max_live_parameters 1e9, prefetch bucket 5e7; persistence 1e5 keeps the
    # norms whole, as 64 does for the copy's 64-element norms)
    specs += [{"name": "z3-llama7b-scaled", "stage": 3, "shape": "llama2-7b-scaled",
               "zero": {"stage3_max_reuse_distance": 244140, "stage3_max_live_parameters": 244140,
                        "stage3_prefetch_bucket_size": 12207, "stage3_param_persistence_threshold": 64}}]
    if world >= 4:
        specs += [{"name": "z3-p0-hpz2", "stage": 3, "zero": {**p0, "zero_hpz_partition_size": 2}},
                  {"name": "z3-p0-hpz2-ga2", "stage": 3, "grad_accum": 2,
                   "zero": {**p0, "zero_hpz_partition_size": 2}},
                  {"name": "z3-p0-hpz2-reuse0-no-prefetch", "stage": 3,
                   "zero": {**p0, "zero_hpz_partition_size": 2, "stage3_max_reuse_distance": 0,
                            "stage3_prefetch_bucket_size": 0}}]
    return specs


def parse_args(argv=None):
    try:
        return _parse_args(argv)
    except UsageError as e:
        print(f"python -m dscourse.scripts.comm_volume: error: {e}", file=sys.stderr)
        sys.exit(2)


def _parse_args(argv):
    from dscourse.models import SHAPES

    p = OneLineParser(prog="python -m dscourse.scripts.comm_volume", description=__doc__.split("\n\n")[0],
                      epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES), help="model shape (dscourse.models.SHAPES)")
    p.add_argument("--configs", required=True,
                   help='a JSON list of {"name", "stage", "grad_accum", "shape", "zero": {extra zero_optimization '
                        'keys}}, @FILE holding one, or "sweep": every configuration of the committed table')
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for rank<N>.json")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = p.parse_args(argv)
    if args.configs == "sweep":
        return args
    try:
        text = Path(args.configs[1:]).read_text() if args.configs.startswith("@") else args.configs
        args.configs = json.loads(text)
        if not isinstance(args.configs, list) or not all(
                isinstance(c, dict) and c.get("stage") in (0, 1, 2, 3) and c.get("shape", args.shape) in SHAPES
                for c in args.configs):
            raise ValueError("need a list of objects, each with a stage 0-3 (and a shape of dscourse.models.SHAPES)")
    except (OSError, ValueError) as e:
        p.error(f"--configs: {str(e).splitlines()[0]}")
    return args


def logged(comms_dict: dict) -> list[list]:
    """``[log name, msg_size, count]`` for every entry of the comms logger's dictionary."""
    return sorted([name, int(size), int(rec[0])] for name, sizes in comms_dict.items() for size, rec in sizes.items())


def measure(spec: dict, shape, rank: int, world: int, micro_batch: int, seed: int) -> dict:
    import deepspeed
    import torch
    from deepspeed.comm import comms_logger

    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, synthetic_batch

    grad_accum = int(spec.get("grad_accum", 1))
    cfg = build_config(spec["stage"], micro_batch=micro_batch, grad_accum=grad_accum, world_size=world,
                       extra_zero=spec.get("zero"))
    cfg["comms_logger"] = {"enabled": True, "prof_all": True}
    torch.manual_seed(seed)
    shape = SHAPES[spec.get("shape", shape.name)]
    model = build_model(shape)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    try:
        def optimizer_step(step):
            for micro in range(grad_accum):
                ids = synthetic_batch(shape, micro_batch, (step * grad_accum + micro) * world + rank, seed=seed)
                engine.backward(engine(input_ids=ids, labels=ids).loss)
                engine.step()

        # Warm-up: ZeRO-3 records the module order in its second forward/backward and only prefetches
        # once that trace is complete (PartitionedParameterCoordinator.reset_step)
        warmup = -(-2 // grad_accum)
        for step in range(warmup):
            optimizer_step(step)
        comms_logger.reset_data()
        optimizer_step(warmup)
        entries = logged(comms_logger.comms_dict)
        comms_logger.reset_data()
    finally:
        engine.destroy()
    return {"shape": shape.name, "logged": entries, "optimizer_class": type(engine.optimizer).__name__,
            "zero_config": cfg["zero_optimization"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    from dscourse.models import SHAPES, build_model

    rank, world, _ = init(args.seed)
    shape = SHAPES[args.shape]
    specs = sweep(world) if args.configs == "sweep" else args.configs
    numels = {name: [p.numel() for p in build_model(name).parameters()]
              for name in sorted({s.get("shape", args.shape) for s in specs})}
    results = []
    for spec in specs:
        entry = {"name": spec.get("name"), "stage": spec["stage"], "grad_accum": spec.get("grad_accum", 1),
                 "zero": spec.get("zero", {})}
        try:
            entry.update(measure(spec, shape, rank, world, args.micro_batch, args.seed))
        except Exception as e:  # noqa: BLE001 (a knob DeepSpeed cannot run here: record why, go on with the next)
            import traceback

            where = traceback.extract_tb(e.__traceback__)
            ds = [f for f in where if "/deepspeed/" in f.filename] or where
            entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            entry["raised_at"] = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in ds[-3:]]
        results.append(entry)
        if rank == 0:
            print(f"{entry['name']}: {'error ' + entry['error'] if 'error' in entry else 'ok'}", flush=True)
    finish({"rank": rank, "world_size": world, "shape": args.shape, "param_numels": numels,
            "micro_batch": args.micro_batch, "results": results}, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
