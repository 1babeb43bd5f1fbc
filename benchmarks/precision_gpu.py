"""fp16 against bf16 on one GPU: throughput, skipped steps, final loss and the loss-scale trajectory.

Each precision is one launch of ``dscourse.scripts.precision_run`` under ``torchrun`` (ZeRO-2, AdamW,
the same seeded model and data): tokens/s over the steps after the warm-up, the steps DeepSpeed
skipped because the fp16 gradients overflowed, the loss, and the loss scale at every step. The
results are written to ``--out`` after every launch (a time-out keeps what finished), with the
provenance: GPU and driver (nvidia-smi), torch, CUDA, DeepSpeed, transformers, Python, date, model.

    python benchmarks/precision_gpu.py --out dscourse/data/gpu_precision.json
    python benchmarks/precision_gpu.py --dry-run --out /tmp/p.json      # a CPU smoke test in ~30 s
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dscourse.launch import LaunchError, run_ranks  # noqa: E402
from dscourse.models import learning_rate  # noqa: E402
from dscourse.provenance import environment  # noqa: E402

RUNS = [
    {"name": "bf16", "precision": "bf16"},
    {"name": "fp16 (DeepSpeed defaults)", "precision": "fp16", "fp16": {}},
    {"name": "fp16 (initial_scale_power 32, loss_scale_window 100)", "precision": "fp16",
     "fp16": {"initial_scale_power": 32, "loss_scale_window": 100}},
]


def provenance(args) -> dict:
    from dscourse.models import SHAPES

    return {
        **environment(), "script": "benchmarks/precision_gpu.py",
        "command": " ".join(["python3", "benchmarks/precision_gpu.py", *sys.argv[1:]]),
        "shape": args.shape, "shape_spec": SHAPES[args.shape].as_dict(), "zero_stage": args.stage,
        "micro_batch": args.micro_batch, "seq": SHAPES[args.shape].seq, "pool": args.pool, "lr": args.lr,
        "optimizer": "torch.optim.AdamW through DeepSpeed (torch_adam), gradient_clipping 1.0",
        "data": f"{args.pool} synthetic batches of random tokens, cycled (the model memorises them)",
        "dry_run": args.dry_run,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="gpt2-350m")
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--pool", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--run-budget", type=float, default=55, help="seconds of training per precision")
    p.add_argument("--total-budget", type=float, default=330, help="seconds for everything; later runs are cut")
    p.add_argument("--dry-run", action="store_true", help="tiny model, a few steps: a CPU smoke test")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.dry_run:
        args.shape, args.steps, args.micro_batch, args.pool, args.warmup, args.run_budget = "gpt2-tiny", 6, 2, 2, 2, 10
    args.lr = args.lr or learning_rate(args.shape)

    t_start = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"provenance": provenance(args), "runs": []}
    out.write_text(json.dumps(data, indent=1))
    for i, spec in enumerate(RUNS):
        left = args.total_budget - (time.time() - t_start)
        # Keep room for the launches still to come: each needs about a minute of start-up and training.
        budget = min(args.run_budget, max(10.0, left / (len(RUNS) - i) - 45))
        if left < 60:
            data["runs"].append({**spec, "error": f"not run: {left:.0f} s of the total budget left"})
            out.write_text(json.dumps(data, indent=1))
            continue
        t0 = time.time()
        run = dict(spec)
        try:
            res = run_ranks("dscourse.scripts.precision_run",
                            ["--shape", args.shape, "--stage", str(args.stage), "--steps", str(args.steps),
                             "--micro-batch", str(args.micro_batch), "--pool", str(args.pool), "--lr", str(args.lr),
                             "--warmup", str(args.warmup), "--time-budget", str(budget),
                             "--runs", json.dumps([spec])],
                            nproc=1, timeout=max(60.0, left - 5))
            rec = res.ranks[0]["runs"][0]
            run.update(rec)
            run["step_seconds"] = [round(s, 5) for s in rec.get("step_seconds", [])]
            run["losses"] = [round(x, 5) for x in rec.get("losses", [])]
            if rec.get("losses"):
                run["final_loss"] = sum(rec["losses"][-10:]) / len(rec["losses"][-10:])
        except LaunchError as e:
            run["error"] = str(e)[-3000:]
        run["wall_seconds"] = round(time.time() - t0, 1)
        run["time_budget"] = round(budget, 1)
        data["runs"].append(run)
        out.write_text(json.dumps(data, indent=1))
        print(f"{spec['name']}: steps {run.get('steps')} skipped {run.get('skipped_steps')} "
              f"tokens/s {run.get('tokens_per_second')} final loss {run.get('final_loss')} "
              f"scale {run.get('final_loss_scale')} {('ERROR ' + run['error'][-400:]) if 'error' in run else ''} "
              f"({run['wall_seconds']} s)", flush=True)
    data["provenance"]["total_seconds"] = round(time.time() - t_start, 1)
    out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
