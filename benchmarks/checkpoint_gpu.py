"""Checkpoint save time and bytes on disk per ZeRO stage: ``save_checkpoint`` and ``save_16bit_model``.

For each stage it launches ``dscourse.scripts.checkpoint_save`` under ``torchrun`` (one process per GPU):
one training step, then ``engine.save_checkpoint`` (timed, then ``os.sync()`` timed, the files counted and
deleted) and ``engine.save_16bit_model`` (under ZeRO-3 with ``stage3_gather_16bit_weights_on_model_save``
off and on). Results are appended to ``--out`` after every launch, with the provenance: GPU, driver,
versions, date, model shape, and the file system the checkpoints went to.

    python benchmarks/checkpoint_gpu.py --shape gpt2-1.3b --stages 2 3 --dir /tmp/ckpt --out dscourse/data/gpu_checkpoint.json
    python benchmarks/checkpoint_gpu.py --dry-run --out /tmp/c.json       # a CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dscourse.measure import record_run  # noqa: E402
from dscourse.provenance import environment  # noqa: E402


def filesystem(path: str) -> str:
    try:
        return subprocess.run(["df", "-hT", path], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-1.3b")
    p.add_argument("--stages", nargs="+", type=int, default=[2, 3])
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="save_checkpoint calls per launch (each timed)")
    p.add_argument("--dir", default=None, help="where checkpoints are written and deleted (default: a temp folder)")
    p.add_argument("--timeout", type=float, default=400)
    p.add_argument("--dry-run", action="store_true", help="tiny model: a CPU smoke test")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.dry_run:
        args.shape, args.repeats = "gpt2-tiny", 1
    from dscourse.models import SHAPES

    ckpt_dir = args.dir or tempfile.mkdtemp(prefix="dscourse-ckpt-")
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(out.read_text()) if out.exists() else {"provenance": {
        **environment(), "script": "benchmarks/checkpoint_gpu.py",
        "command": " ".join(["python3", "benchmarks/checkpoint_gpu.py", *sys.argv[1:]]),
        "shape": args.shape, "shape_spec": SHAPES[args.shape].as_dict(), "precision": "bf16",
        "optimizer": "torch.optim.AdamW via DeepSpeed (torch_adam)", "filesystem": filesystem(ckpt_dir),
        "cpu_count": os.cpu_count(), "dry_run": args.dry_run}, "runs": []}
    for stage in args.stages:
        run = {"shape": args.shape, "stage": stage, "gpus": args.gpus}
        record_run(data, out, run, "dscourse.scripts.checkpoint_save",
                   ["--shape", args.shape, "--stage", str(stage), "--repeats", str(args.repeats),
                    "--dir", str(Path(ckpt_dir) / f"zero{stage}")], args.gpus, args.timeout)
        for s in run.get("ranks", [{}])[0].get("saves", []):
            print(f"ZeRO-{stage} {s['name']}: {s['seconds']:.2f} s + sync {s['sync_seconds']:.2f} s, "
                  f"{s['bytes'] / 1e9:.3f} GB in {s['layout']['files']} files", flush=True)
        if "error" in run:
            print(f"ZeRO-{stage} ERROR {run['error'][-600:]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
