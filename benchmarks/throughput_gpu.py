"""Training throughput of every ZeRO stage and offload variant over micro-batch sizes, on one or more GPUs.

For each variant it launches ``dscourse.scripts.zero_throughput`` under ``torchrun`` (one process per GPU)
and sweeps the micro-batch sizes (then gradient accumulation on the largest that fitted) inside one engine:
median step time, tokens/s, the forward / backward / optimizer-step split, peak memory. The offload variants
use DeepSpeedCPUAdam (what DeepSpeed picks for ``"type": "AdamW"`` with an offloaded optimizer); the others
``torch.optim.AdamW`` on the GPU. Results are appended to ``--out`` after every launch (a time-out keeps what
finished), with the provenance: GPU, driver, versions, date, model shape.

    python benchmarks/throughput_gpu.py --shape gpt2-350m --micro-batches 1 2 4 8 16 --out dscourse/data/gpu_throughput.json
    python benchmarks/throughput_gpu.py --dry-run --out /tmp/t.json       # a CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from dscourse.measure import record_run, threads_per_rank  # noqa: E402
from dscourse.provenance import environment  # noqa: E402

VARIANTS = [  # (stage, offload_optimizer, offload_param)
    (0, "none", "none"), (1, "none", "none"), (2, "none", "none"), (3, "none", "none"),
    (2, "cpu", "none"), (3, "cpu", "none"), (3, "cpu", "cpu"),
]


def parse_variant(text: str):
    parts = text.split("+")
    return int(parts[0]), "cpu" if "oo" in parts else "none", "cpu" if "op" in parts else "none"


def provenance(args) -> dict:
    from dscourse.models import SHAPES

    return {**environment(), "script": "benchmarks/throughput_gpu.py",
            "command": " ".join(["python3", "benchmarks/throughput_gpu.py", *sys.argv[1:]]),
            "shape": args.shape, "shape_spec": SHAPES[args.shape].as_dict(), "seq": SHAPES[args.shape].seq,
            "gpus": args.gpus, "omp_threads_per_rank": threads_per_rank(args.gpus), "cpu_count": os.cpu_count(),
            "precision": "bf16", "warmup_steps": args.warmup, "timed_steps": args.steps,
            "optimizer": "offload variants: DeepSpeedCPUAdam (AdamW); others: torch.optim.AdamW on the GPU; "
                         "gradient_clipping 1.0",
            "zero_config": "DeepSpeed defaults (buckets, prefetch, persistence); pin_memory as each run says",
            "data": "random token ids, a new batch every micro-step", "dry_run": args.dry_run}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-350m")
    p.add_argument("--micro-batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--grad-accum", nargs="+", type=int, default=[4],
                   help="gradient accumulation steps run on the largest micro-batch that fitted (1: none)")
    p.add_argument("--variants", default="all", help="'all' or a comma list like 0,2,3,2+oo,3+oo+op")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--point-budget", type=float, default=20, help="seconds of timed steps per grid point at most")
    p.add_argument("--timeout", type=float, default=400, help="seconds per launch")
    p.add_argument("--total-budget", type=float, default=0, help="stop launching after this many seconds (0: none)")
    p.add_argument("--pin-memory", action="store_true", help="pin_memory: true for the offloaded tensors")
    p.add_argument("--optimizer", default="auto", choices=["auto", "torch", "cpu_adam"],
                   help="auto: DeepSpeedCPUAdam for the offload variants, torch.optim.AdamW otherwise")
    p.add_argument("--dry-run", action="store_true", help="tiny model, 1 timed step: a CPU smoke test")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.dry_run:
        args.shape, args.micro_batches, args.grad_accum, args.warmup, args.steps = "gpt2-tiny", [1, 2], [2], 1, 1
        args.optimizer = "torch"  # no C++ op to compile on first use
        if args.variants == "all":
            args.variants = "2,3+oo+op"

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {"provenance": provenance(args), "runs": []}
    variants = VARIANTS if args.variants == "all" else [parse_variant(v) for v in args.variants.split(",")]
    t_start = time.time()
    for stage, oo, op in variants:
        run = {"shape": args.shape, "stage": stage, "offload_optimizer": oo, "offload_param": op, "gpus": args.gpus,
               "pin_memory": args.pin_memory}
        if args.total_budget and time.time() - t_start > args.total_budget:
            run["error"] = "not run: the total budget was spent"
            data["runs"].append(run)
            out.write_text(json.dumps(data, indent=1))
            continue
        record_run(data, out, run, "dscourse.scripts.zero_throughput",
                   ["--shape", args.shape, "--stage", str(stage), "--offload-optimizer", oo,
                    "--offload-param", op, "--micro-batches", *map(str, args.micro_batches),
                    "--grad-accum", *map(str, args.grad_accum), "--warmup", str(args.warmup),
                    "--steps", str(args.steps), "--point-budget", str(args.point_budget)]
                   + (["--pin-memory"] if args.pin_memory else []) + ["--optimizer", args.optimizer],
                   args.gpus, args.timeout)
        points = run.get("ranks", [{}])[0].get("points", [])
        summary = " ".join(f"mb{q['micro_batch']}x{q['grad_accum']}:"
                           + (f"{q['tokens_per_second']:,.0f}" if "tokens_per_second" in q else "OOM" if "oom" in q
                              else "-") for q in points)
        print(f"ZeRO-{stage} oo={oo} op={op}{' pinned' if args.pin_memory else ''} tokens/s {summary} "
              f"{('ERROR ' + run['error'][-400:]) if 'error' in run else ''} ({run['wall_seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
