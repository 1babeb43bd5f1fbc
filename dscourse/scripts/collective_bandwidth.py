"""All-reduce, reduce-scatter and all-gather bandwidth over message sizes, the nccl-tests way.

Run it through a launcher, one process per GPU::

    torchrun --nproc_per_node 2 -m dscourse.scripts.collective_bandwidth --out results/

``size`` is the full buffer in bytes, as in nccl-tests: the all-reduce buffer, the reduce-scatter input, the
all-gather output (each rank holds ``size / n`` of the last two). ``algbw = size / time``;
``busbw = algbw · 2(n−1)/n`` for all-reduce and ``algbw · (n−1)/n`` for reduce-scatter and all-gather, the rate
each link would need to move the bytes a ring moves. Times are the median over the iterations after a
warm-up (CUDA events on a GPU), each iteration ended by a device synchronisation. Every rank writes
``rank<N>.json``; the results of rank 0 are the ones to read.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

from dscourse.comm import bus_factor  # nccl-tests' busbw / algbw: the one definition the course uses
from dscourse.scripts import finish, init

OPS = ("all_reduce", "reduce_scatter", "all_gather")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-bytes", type=float, default=2**10)
    p.add_argument("--max-bytes", type=float, default=2**30)
    p.add_argument("--factor", type=int, default=4, help="size multiplier between points")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    rank, world, device = init(backend="torch")
    dtype = getattr(torch, args.dtype)
    elem = torch.tensor([], dtype=dtype).element_size()

    sizes, size = [], args.min_bytes
    while size <= args.max_bytes:
        sizes.append(int(size))
        size *= args.factor
    results = []
    for op in args.ops:
        for nbytes in sizes:
            count = max(world, nbytes // elem // world * world)  # divisible by the ranks
            full = torch.ones(count, dtype=dtype, device=device) * (rank + 1)
            part = torch.empty(count // world, dtype=dtype, device=device)

            once = {"all_reduce": functools.partial(dist.all_reduce, full),
                    "reduce_scatter": functools.partial(dist.reduce_scatter_tensor, part, full),
                    "all_gather": functools.partial(dist.all_gather_into_tensor, full, part)}[op]

            times = []
            for i in range(args.warmup + args.iters):
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    once()
                    end.record()
                    torch.cuda.synchronize()
                    seconds = start.elapsed_time(end) / 1e3
                else:
                    t0 = time.perf_counter()
                    once()
                    seconds = time.perf_counter() - t0
                if i >= args.warmup:
                    times.append(seconds)
            t = statistics.median(times)
            size_bytes = count * elem
            algbw = size_bytes / t
            results.append({"op": op, "bytes": size_bytes, "count": count, "median_seconds": t,
                            "min_seconds": min(times), "algbw_GBps": algbw / 1e9,
                            "busbw_GBps": algbw * bus_factor(op, world) / 1e9})
            if rank == 0:
                print(f"{op:15s} {size_bytes:>12,d} B  {t * 1e6:10.1f} us  algbw {algbw / 1e9:7.2f} GB/s  "
                      f"busbw {algbw * bus_factor(op, world) / 1e9:7.2f} GB/s", flush=True)
            del full, part
    result = {"rank": rank, "world_size": world, "dtype": args.dtype, "backend": dist.get_backend(),
              "device": torch.cuda.get_device_name() if cuda else "cpu", "warmup": args.warmup,
              "iters": args.iters, "results": results}
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
