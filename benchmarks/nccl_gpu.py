"""Collective bandwidth between the GPUs of one machine: all-reduce, reduce-scatter, all-gather over sizes.

Launches ``dscourse.scripts.collective_bandwidth`` under ``torchrun`` (one process per GPU, NCCL; NVLink
multicast off) and writes rank 0's table to ``--out`` with the provenance (GPU, driver, versions, date, the
``nvidia-smi topo -m`` matrix). Bus bandwidth follows nccl-tests: all-reduce ``algbw · 2(n−1)/n``,
reduce-scatter and all-gather ``algbw · (n−1)/n``.

    python benchmarks/nccl_gpu.py --gpus 2 --out dscourse/data/gpu_nccl_2xH200.json
    python benchmarks/nccl_gpu.py --dry-run --out /tmp/n.json             # a CPU smoke test (gloo)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dscourse.launch import LaunchError, run_ranks  # noqa: E402
from dscourse.provenance import environment  # noqa: E402


def topology() -> str:
    try:
        return subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--max-bytes", type=float, default=2**30)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--dry-run", action="store_true", help="small sizes, few iterations: a CPU smoke test")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    extra = ["--max-bytes", str(2**16), "--iters", "2", "--warmup", "1"] if args.dry_run else \
        ["--max-bytes", str(args.max_bytes), "--iters", str(args.iters)]
    data = {"provenance": {**environment(), "script": "benchmarks/nccl_gpu.py",
                           "command": " ".join(["python3", "benchmarks/nccl_gpu.py", *sys.argv[1:]]),
                           "gpus": args.gpus, "topology": topology(), "dry_run": args.dry_run,
                           "conventions": "nccl-tests: size = full buffer; busbw = algbw*2(n-1)/n (all-reduce), "
                                          "algbw*(n-1)/n (reduce-scatter, all-gather); median of the timed iterations",
                           "env": "NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1"}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        res = run_ranks("dscourse.scripts.collective_bandwidth", extra, nproc=args.gpus, timeout=args.timeout)
        r0 = res.ranks[0]
        data.update({k: r0[k] for k in ("world_size", "dtype", "backend", "device", "warmup", "iters", "results")})
    except LaunchError as e:
        data["error"] = str(e)[-3000:]
    data["provenance"]["wall_seconds"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(data, indent=1))
    for op in ("all_reduce", "reduce_scatter", "all_gather"):
        rows = [r for r in data.get("results", []) if r["op"] == op]
        if rows:
            best = max(rows, key=lambda r: r["busbw_GBps"])
            print(f"{op}: peak busbw {best['busbw_GBps']:.1f} GB/s at {best['bytes']:,} B")
    if "error" in data:
        print("ERROR", data["error"][-800:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
