"""Host memory per rank while every rank loads a saved model, three ways; writes the committed table.

    python benchmarks/load_memory.py --out dscourse/data/cpu_load_memory.json                  # CPU ranks
    python3 benchmarks/load_memory.py --shape llama-1b --world-sizes 1 --out gpu_load_memory.json  # on a GPU

Saves a random ``--shape`` model once (bfloat16 safetensors, ``dscourse.scripts.load_memory --save``), then for each
world size launches ``dscourse.scripts.load_memory`` under torchrun three times: ``every_rank`` with
``from_pretrained``'s default ``dtype="auto"`` (the file's bfloat16), ``every_rank`` converting to float32 as it loads,
and ``zero3`` (``HfDeepSpeedConfig`` first). Each rank's peak private (RssAnon) and file-mapped (RssFile) memory above
what it held before the load, and the parameter bytes it holds after, go into one JSON file with the provenance.
Resident memory depends on the machine's allocator, so these are measurements to read, not outputs a test compares.
On a GPU machine the ranks use the GPUs (one each): ZeRO-3's partitions are then on the GPU, not in host memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = [("every_rank", "auto"), ("every_rank", "float32"), ("zero3", "auto")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--world-sizes", type=int, nargs="+", default=[2, 4])
    p.add_argument("--shape", default="llama-load-cpu")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    import torch

    gpus = torch.cuda.device_count()
    if gpus and max(args.world_sizes) > gpus:
        p.error(f"--world-sizes: this machine has {gpus} GPU(s), one per rank")
    if not gpus and min(args.world_sizes) < 2:
        p.error("--world-sizes: at least 2 CPU ranks (ZeRO-3 partitions across ranks)")

    from dscourse.integration import readable_command
    from dscourse.launch import run_ranks
    from dscourse.provenance import environment

    work = Path(tempfile.mkdtemp(prefix="dscourse-load-"))
    model = work / "model"
    subprocess.run([sys.executable, "-m", "dscourse.scripts.load_memory", "--save", "--model", str(model),
                    "--shape", args.shape], check=True, timeout=args.timeout)
    runs, loaded = [], None
    for n in args.world_sizes:
        for how, dtype in MODES:
            res = run_ranks("dscourse.scripts.load_memory",
                            ["--model", str(model), "--how", how, "--load-dtype", dtype], nproc=n,
                            timeout=args.timeout, out_dir=work / f"{how}-{dtype}-{n}")
            runs.append({"world_size": n, "how": how, "load_dtype": dtype,
                         "command": readable_command(res.command, strip=(work,)),
                         "ranks": [{k: r[k] for k in ("rank", "before", "peak", "after", "peak_above_before",
                                                      "held_params", "held_param_bytes_on_host", "dtype", "seconds")}
                                   for r in res.ranks]})
            loaded = loaded or res.ranks[0]  # the model's size, the same in every launch
            print(f"{n} ranks, {how}, dtype {dtype}: rank 0 private +"
                  f"{res.ranks[0]['peak_above_before']['private'] / 1e6:.0f} MB", flush=True)
    prov = {**{k: v for k, v in environment().items() if gpus or k not in ("gpu", "gpus_visible")},
            "script": "benchmarks/load_memory.py",
            "command": " ".join(["python", "benchmarks/load_memory.py", *(argv or sys.argv[1:])]),
            "shape": args.shape, "params": loaded["full_params"], "file_bytes": loaded["file_bytes"],
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "note": f"{'one GPU per rank (NCCL)' if gpus else 'CPU ranks (gloo)'}; a tiny model of the same family "
                    "is loaded first on every rank, so one-time imports and set-up are not counted; "
                    "private = RssAnon, mapped = RssFile (/proc/self/status)"}
    Path(args.out).write_text(json.dumps({"provenance": prov, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
