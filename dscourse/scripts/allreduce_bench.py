"""Measure all-reduce, all-gather and reduce-scatter bandwidth between the ranks (gloo on CPU, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m dscourse.scripts.allreduce_bench --sizes 1e4,1e6,1e7 --out results/

For every collective and message size (bytes of the full, reduced or gathered tensor) each rank times
``--iters`` calls after ``--warmup`` untimed ones, and writes ``rank<N>.json`` with the median time and the
algorithm and bus bandwidths computed with :func:`dscourse.comm.bus_bandwidth` (nccl-tests conventions).
A collective the backend does not implement is recorded with its error instead of a time. Each rank also records
the IPv4 addresses it sees, so a multi-node run shows which "host" it ran on.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

from dscourse.scripts import finish, init


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are numbers of bytes separated by ',', e.g. 1e4,1e6: {text!r}") from None
    if not sizes or any(s < 4 for s in sizes):
        raise argparse.ArgumentTypeError("every size must be at least 4 bytes")
    return sizes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=_sizes("1e3,1e4,1e5,1e6,1e7"),
                   help="message sizes in bytes, comma-separated (default 1e3..1e7)")
    p.add_argument("--ops", default="all_reduce,all_gather,reduce_scatter")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=None,
                   help="process-group timeout in seconds (a short one turns a hang into an error)")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _addresses() -> list[str]:
    try:
        import psutil
    except ImportError:
        return []
    return sorted(a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family.name == "AF_INET" and not a.address.startswith("127."))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import torch.distributed as dist

    from dscourse.comm import bus_bandwidth

    rank, world, device = init(backend="torch", timeout=args.timeout)
    cuda = device.type == "cuda"
    results = []
    for op in [o.strip() for o in args.ops.split(",") if o.strip()]:
        for size in args.sizes:
            n = max(world, size // 4 // world * world)  # fp32 elements, divisible by the world size
            full = torch.ones(n, device=device)
            shard = torch.ones(n // world, device=device)
            calls = {"all_reduce": functools.partial(dist.all_reduce, full),
                     "all_gather": functools.partial(dist.all_gather_into_tensor, full, shard),
                     "reduce_scatter": functools.partial(dist.reduce_scatter_tensor, shard, full)}
            if op not in calls:
                raise SystemExit(f"unknown collective {op!r}")
            call = calls[op]
            entry = {"op": op, "size_bytes": n * 4}
            try:
                for _ in range(args.warmup):
                    call()
                times = []
                for _ in range(args.iters):
                    dist.barrier()
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    call()
                    if cuda:
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                algbw, busbw = bus_bandwidth(op, n * 4, t, world)
                entry.update({"seconds": t, "algbw": algbw, "busbw": busbw})
            except (RuntimeError, NotImplementedError, ValueError) as e:
                entry["error"] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            results.append(entry)
    info = {"rank": rank, "world_size": world, "backend": dist.get_backend(), "device": str(device),
            "addresses": _addresses(), "master_addr": os.environ.get("MASTER_ADDR"),
            "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"), "results": results}
    finish(info, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
