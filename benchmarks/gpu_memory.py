"""Measure what DeepSpeed really allocates on a GPU, for every ZeRO stage and offload variant.

For each model shape and variant it launches ``dscourse.scripts.zero_memory`` under ``torchrun``
(one process per GPU) and records ``torch.cuda.memory_allocated()`` after ``deepspeed.initialize``,
after the last optimizer step, and the peak during the steps, plus the per-category byte count of
the live engine. Results are appended to ``--out`` after every run (a time-out keeps what finished),
with the provenance: GPU, driver, versions, date.

    python benchmarks/gpu_memory.py --shapes gpt2-350m --out data/gpu_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dscourse.calibration import parse_variant  # noqa: E402
from dscourse.measure import record_run, threads_per_rank  # noqa: E402
from dscourse.provenance import environment  # noqa: E402

VARIANTS = [  # (stage, offload_optimizer, offload_param)
    (0, "none", "none"), (1, "none", "none"), (2, "none", "none"), (3, "none", "none"),
    (1, "cpu", "none"), (2, "cpu", "none"), (3, "cpu", "none"), (3, "cpu", "cpu"),
]


def provenance() -> dict:
    return {**environment(), "cpu_count": os.cpu_count(), "precision": "bf16",
            "optimizer": "torch.optim.AdamW via DeepSpeed torch_adam (same state bytes as FusedAdam)",
            "buckets": "DeepSpeed defaults", "script": "benchmarks/gpu_memory.py"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["gpt2-350m"])
    p.add_argument("--micro-batches", nargs="+", type=int, default=[1])
    p.add_argument("--variants", default="all", help="'all' or comma list like 0,2,3+oo,3+oo+op")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS per rank (default: the cores shared by the ranks; memory does not depend on it)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.threads = args.threads or threads_per_rank(args.gpus)

    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"provenance": provenance(), "runs": []}
    variants = VARIANTS if args.variants == "all" else [parse_variant(v) for v in args.variants.split(",")]
    for shape in args.shapes:
        for mb in args.micro_batches:
            for stage, oo, op in variants:
                run = {"shape": shape, "stage": stage, "offload_optimizer": oo, "offload_param": op,
                       "micro_batch": mb, "gpus": args.gpus}
                record_run(data, out, run, "dscourse.scripts.zero_memory",
                           ["--shape", shape, "--stage", str(stage), "--offload-optimizer", oo,
                            "--offload-param", op, "--micro-batch", str(mb), "--steps", str(args.steps)],
                           args.gpus, args.timeout, args.threads)
                r0 = run.get("ranks", [{}])[0]
                print(f"{shape} mb={mb} stage={stage} oo={oo} op={op}: after_step="
                      f"{r0.get('cuda_allocated_after_step')} peak={r0.get('cuda_peak_during_steps')} "
                      f"{'ERROR ' + run['error'][-300:] if 'error' in run else ''} ({run['wall_seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
