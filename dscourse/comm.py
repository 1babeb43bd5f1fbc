"""Communication per training step: how many bytes each ZeRO stage moves, and how long that takes.

The one place the course computes it: the notebook's calculator and figure, ``python -m dscourse.comm``, the tests
and the GPU benchmark that compares NCCL's measured bus bandwidth against it all call these functions.

Volume (ZeRO paper, Rajbhandari et al. 2020, arXiv:1910.02054, section 7 "Communication Analysis of ZeRO-DP"):

- data parallel (ZeRO-0): one all-reduce of the gradients per step. A ring all-reduce is a reduce-scatter followed
  by an all-gather; each moves Ψ(N−1)/N elements per rank, so **2Ψ** in total.
- ZeRO-1 and ZeRO-2 (P_os, P_os+g): a reduce-scatter of the gradients (Ψ) plus an all-gather of the updated
  parameters (Ψ): the same **2Ψ** as data parallelism.
- ZeRO-3 (P_os+g+p): parameters are all-gathered before the forward pass (Ψ) and again before the backward pass (Ψ),
  and gradients are reduce-scattered (Ψ): **3Ψ**, 1.5× data parallelism.

With gradient accumulation DeepSpeed's engine reduces the gradients of ZeRO-0/1 only at the accumulation boundary,
while "ZeRO stage >= 2 communicates during non gradient accumulation boundaries as well"
(``DeepSpeedEngine.allreduce_gradients``, ``deepspeed/runtime/engine.py``, 0.19.8): ZeRO-2 reduce-scatters every
micro-batch, ZeRO-3 also gathers the parameters every micro-batch. ``grad_accum`` accounts for that.

Time (ring algorithms, bandwidth term only, as in NVIDIA's nccl-tests ``doc/PERFORMANCE.md``): a collective on a
message of S bytes over N ranks has *algorithm bandwidth* algbw = S / t and *bus bandwidth*
busbw = algbw × 2(N−1)/N for all-reduce, algbw × (N−1)/N for all-gather and reduce-scatter (S is the full,
gathered size). busbw is what each rank's link really carries per second, comparable to the hardware's link
speed whatever N is, so ``t = S × factor / busbw``. Bandwidths here are per GPU, one direction, in bytes/s.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

# Nominal per-GPU, one-direction link speeds (bytes/s). Measured busbw is lower: see the notebook.
BANDWIDTHS = {
    "NVLink 4 (H100 SXM, 900 GB/s bidirectional)": 450e9,
    "NVLink 3 (A100 SXM, 600 GB/s bidirectional)": 300e9,
    "PCIe 4.0 x16": 32e9,
    "InfiniBand NDR 400 Gb/s (1 NIC per GPU)": 50e9,
    "InfiniBand HDR 200 Gb/s (1 NIC per GPU)": 25e9,
    "Ethernet 100 Gb/s (shared by 8 GPUs)": 12.5e9 / 8,
    "Ethernet 25 Gb/s (shared by 8 GPUs)": 3.125e9 / 8,
}
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")


def bus_factor(op: str, world_size: int) -> float:
    """busbw / algbw for ``op`` on ``world_size`` ranks (nccl-tests conventions)."""
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, not {world_size}")
    n = world_size
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    raise ValueError(f"unknown collective {op!r}: use one of {COLLECTIVES}")


def bus_bandwidth(op: str, size_bytes: float, seconds: float, world_size: int) -> tuple[float, float]:
    """``(algbw, busbw)`` in bytes/s for one collective of ``size_bytes`` that took ``seconds``."""
    if seconds <= 0:
        raise ValueError("time must be positive")
    algbw = size_bytes / seconds
    return algbw, algbw * bus_factor(op, world_size)


def collective_time(op: str, size_bytes: float, world_size: int, bus_bw: float, latency: float = 0.0) -> float:
    """Seconds for one ring collective on a ``size_bytes`` message (full size) at bus bandwidth ``bus_bw``.

    ``latency`` (seconds per ring step) adds the α term: 2(N−1) steps for all-reduce, N−1 for the others."""
    if bus_bw <= 0:
        raise ValueError("bandwidth must be positive")
    steps = (2 if op == "all_reduce" else 1) * (world_size - 1)
    return size_bytes * bus_factor(op, world_size) / bus_bw + latency * steps


def ring_allreduce_time(size_bytes: float, world_size: int, bus_bw: float, latency: float = 0.0) -> float:
    return collective_time("all_reduce", size_bytes, world_size, bus_bw, latency)


@dataclass(frozen=True)
class Transfer:
    op: str
    what: str
    size_bytes: float  # the full message (Ψ × dtype bytes)
    times: int  # per optimizer step

    def sent_per_rank(self, world_size: int) -> float:
        return self.size_bytes * bus_factor(self.op, world_size) * self.times


def step_transfers(params: float, stage: int, dtype_bytes: int = 2, grad_accum: int = 1) -> list[Transfer]:
    """The collectives one optimizer step runs, as the ZeRO paper counts them (buckets and prefetch aside)."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {stage!r}")
    if params <= 0:
        raise ValueError(f"parameter count must be positive, not {params!r}")
    if grad_accum < 1:
        raise ValueError(f"gradient accumulation must be at least 1, not {grad_accum!r}")
    s = params * dtype_bytes
    if stage == 0:
        return [Transfer("all_reduce", "gradients (once per step)", s, 1)]
    if stage == 1:
        return [Transfer("reduce_scatter", "gradients (once per step)", s, 1),
                Transfer("all_gather", "updated parameters", s, 1)]
    if stage == 2:
        return [Transfer("reduce_scatter", "gradients (every micro-batch)", s, grad_accum),
                Transfer("all_gather", "updated parameters", s, 1)]
    return [Transfer("all_gather", "parameters for forward (every micro-batch)", s, grad_accum),
            Transfer("all_gather", "parameters for backward (every micro-batch)", s, grad_accum),
            Transfer("reduce_scatter", "gradients (every micro-batch)", s, grad_accum)]


def step_volume_bytes(params: float, stage: int, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1) -> float:
    """Bytes each rank sends (and receives) per optimizer step: 2Ψ·(N−1)/N for ZeRO-0/1/2, 3Ψ·(N−1)/N for ZeRO-3
    (times ``dtype_bytes``; with ``grad_accum`` > 1, more for ZeRO-2/3)."""
    return sum(t.sent_per_rank(world_size) for t in step_transfers(params, stage, dtype_bytes, grad_accum))


def step_time(params: float, stage: int, world_size: int, bus_bw: float, dtype_bytes: int = 2,
              grad_accum: int = 1, latency: float = 0.0) -> float:
    """Seconds of communication per optimizer step at bus bandwidth ``bus_bw`` (no overlap with compute)."""
    return sum(t.times * collective_time(t.op, t.size_bytes, world_size, bus_bw, latency)
               for t in step_transfers(params, stage, dtype_bytes, grad_accum))


def psi_multiple(stage: int, grad_accum: int = 1) -> float:
    """Volume in units of Ψ·dtype_bytes as N → ∞: 2 for ZeRO-0/1/2 and 3 for ZeRO-3 (without accumulation)."""
    return sum(t.times * (2 if t.op == "all_reduce" else 1) for t in step_transfers(1, stage, 1, grad_accum))


def table(params: float, world_size: int, bandwidths: dict | None = None, dtype_bytes: int = 2,
          grad_accum: int = 1) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per stage, the volume per rank and the time at each bandwidth."""
    bandwidths = bandwidths or BANDWIDTHS
    header = ["stage", "volume/rank", *(_short(name) for name in bandwidths)]
    rows = []
    for stage in range(4):
        vol = step_volume_bytes(params, stage, world_size, dtype_bytes, grad_accum)
        rows.append([f"ZeRO-{stage}", format_bytes(vol),
                     *(format_seconds(step_time(params, stage, world_size, bw, dtype_bytes, grad_accum))
                       for bw in bandwidths.values())])
    return header, rows


def _short(name: str) -> str:
    return name.split(" (")[0]


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def format_seconds(t: float) -> str:
    if t >= 1:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} µs"


def comm_figure(params: float, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1,
                bandwidths: dict | None = None, name: str = "comm-time"):
    """Grouped bars: seconds of communication per step, per ZeRO stage, at each bandwidth (log scale)."""
    import plotly.graph_objects as go

    from .plots import Figure

    bandwidths = bandwidths or BANDWIDTHS
    fig = go.Figure()
    for stage in range(4):
        times = [step_time(params, stage, world_size, bw, dtype_bytes, grad_accum) for bw in bandwidths.values()]
        fig.add_bar(name=f"ZeRO-{stage}", x=[_short(n) for n in bandwidths], y=[round(t, 6) for t in times],
                    text=[format_seconds(t) for t in times], textposition="outside")
    fig.update_layout(barmode="group", yaxis_type="log", template="plotly_white", legend_orientation="h",
                      legend_y=-0.3, yaxis_title="communication per step (s, log scale)",
                      title=f"{params / 1e9:.3g}B parameters, {world_size} GPUs, {dtype_bytes}-byte gradients/params, "
                            f"no overlap", margin=dict(t=60, b=60, l=70, r=20))
    return Figure(fig, name, height=460)


def main(argv=None) -> int:
    from .cli_util import OneLineParser, UsageError, positive_int
    from .memory import parse_count
    from .tables import text_table

    p = OneLineParser(prog="python -m dscourse.comm",
                      description="Communication volume and time per training step for ZeRO-0/1/2/3.")
    p.add_argument("--params", required=True, help="parameter count, e.g. 7e9 or 7B")
    p.add_argument("--gpus", type=positive_int, required=True, help="data-parallel ranks")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="communication data type")
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--bandwidth", type=float, action="append", default=None,
                   help="bus bandwidth in GB/s (repeatable; default: NVLink, InfiniBand, Ethernet presets)")
    try:
        args = p.parse_args(argv)
        try:
            params = parse_count(args.params)
        except Exception as e:  # parse_count's own message names the problem
            raise UsageError(f"--params: {e}") from None
        if params <= 0:
            raise UsageError(f"--params must be positive, not {args.params}")
        if args.bandwidth and any(b <= 0 for b in args.bandwidth):
            raise UsageError("--bandwidth must be positive (GB/s)")
    except UsageError as e:
        print(f"python -m dscourse.comm: error: {e}", file=sys.stderr)
        return 2
    bws = {f"{b:g} GB/s": b * 1e9 for b in args.bandwidth} if args.bandwidth else BANDWIDTHS
    header, rows = table(params, args.gpus, bws, DTYPE_BYTES[args.dtype], args.grad_accum)
    print(f"{params / 1e9:.3g}B parameters, {args.gpus} ranks, {args.dtype}, gradient accumulation "
          f"{args.grad_accum}: bytes each rank sends per optimizer step, and the time at each bus bandwidth")
    print(text_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BANDWIDTHS", "COLLECTIVES", "DTYPE_BYTES", "Transfer", "bus_bandwidth", "bus_factor", "collective_time",
           "comm_figure", "psi_multiple", "ring_allreduce_time", "step_time", "step_transfers", "step_volume_bytes",
           "table"]
