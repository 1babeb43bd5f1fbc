"""Measure what DeepSpeed's comms logger records per optimizer step on CPU ranks, and write the committed table.

    python benchmarks/comm_volume_cpu.py --out dscourse/data/cpu_comm_volume.json

One launch of ``dscourse.scripts.comm_volume`` per world size (2 and 4 by default) runs every configuration of
``dscourse.scripts.comm_volume.sweep`` in sequence. ``--runs-dir DIR --no-launch`` reads the ``rank<N>.json`` of
launches already made into ``DIR/w<N>`` instead (the world-4 sweep takes ~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--world-sizes", type=int, nargs="+", default=[2, 4])
    p.add_argument("--runs-dir", default=None, help="where the launches write (default: a temporary folder)")
    p.add_argument("--no-launch", action="store_true", help="read the launches already in --runs-dir")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)
    if args.no_launch and not args.runs_dir:
        p.error("--no-launch needs --runs-dir")

    from dscourse.launch import run_ranks
    from dscourse.models import SHAPES, build_model
    from dscourse.provenance import environment
    from dscourse.scripts.comm_volume import sweep

    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="dscourse-comm-"))
    runs, shapes = [], set()
    for n in args.world_sizes:
        out = runs_dir / f"w{n}"
        specs = sweep(n)
        if not args.no_launch:
            (runs_dir / f"sweep{n}.json").write_text(json.dumps(specs))
            run_ranks("dscourse.scripts.comm_volume", ["--configs", f"@{runs_dir / f'sweep{n}.json'}"], nproc=n,
                      timeout=args.timeout, out_dir=out)
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]
        by_name = {s["name"]: s for s in specs}
        for i, entry in enumerate(ranks[0]["results"]):
            spec = by_name[entry["name"]]
            shape = spec.get("shape", ranks[0]["shape"])
            shapes.add(shape)
            row = {"world_size": n, "name": entry["name"], "shape": shape, "stage": spec["stage"],
                   "grad_accum": spec.get("grad_accum", 1), "zero": spec.get("zero", {})}
            if "error" in entry:
                row.update(error=entry["error"], raised_at=entry.get("raised_at"))
            else:
                # every rank runs the same collectives: the table keeps rank 0's and says they agree
                row.update(logged=entry["logged"],
                           ranks_agree=all(r["results"][i].get("logged") == entry["logged"] for r in ranks))
            runs.append(row)
    shape_info = {}
    for name in sorted(shapes):
        arch = SHAPES[name]
        shape_info[name] = {"spec": arch.as_dict(), "param_numels": [q.numel() for q in build_model(arch).parameters()],
                            "tied": arch.vocab * arch.hidden if arch.tied_embeddings else 0}
    env = environment()
    data = {
        "provenance": {**{k: env[k] for k in ("date", "torch", "deepspeed", "transformers", "python")},
                       "device": "CPU ranks, gloo (DeepSpeed's CPU accelerator), bf16",
                       "world_sizes": args.world_sizes,
                       "command": "python benchmarks/comm_volume_cpu.py --out dscourse/data/cpu_comm_volume.json",
                       "method": "per configuration: a fresh engine with comms_logger enabled and prof_all, warm-up "
                                 "optimizer steps covering two micro-batches (ZeRO-3 completes its trace), "
                                 "comms_logger.reset_data(), one measured optimizer step; logged is the comms "
                                 "logger's [record name, msg_size, count] on rank 0"},
        "shapes": shape_info,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(runs)} configurations ({sum('error' in r for r in runs)} refused on CPU) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
