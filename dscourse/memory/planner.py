"""The configurations that fit a GPU and host budget, cheapest first: ``python -m dscourse.memory plan``.

Every candidate (ZeRO stage, offload, micro-batch, gradient accumulation, activation checkpointing) is judged
by :func:`dscourse.memory.peak.peak`, the one peak function, with ``headroom`` left for the allocator's cache
(on the H200 grid ``max_memory_reserved`` exceeded the allocated peak by a median 20%, at most 64%:
:func:`dscourse.calibration.peak_vs_measured`). Host RAM is the ``allocated`` family's, per node.

The cost model, stated (seconds per optimizer step, one GPU's view; lower is better):

- compute: 6 Ψ × tokens per GPU per step / ``flops`` (default 400 TFLOP/s: 40% of an H100/H200's dense bf16),
  × 4/3 with activation checkpointing (the forward pass runs twice), ÷ the measured efficiency of the
  micro-batch's work (``dscourse/data/gpu_throughput_gpt2-350m.json``, ZeRO-2: tokens/s at micro-batch
  1-16 over micro-batch 16, interpolated in FLOP per micro-batch, so a large model saturates sooner);
- communication: :func:`dscourse.comm.step_time` at ``bus_bw`` (ZeRO-2/3 reduce at every micro-step);
- the variant itself: compute × its measured step time over ZeRO-2's on one GPU (same micro-batch, accumulation
  and machine; offload with pinned memory): :func:`variant_factors`.
Pure Python: no torch import.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import pairwise

from ..comm import step_time
from .formulas import FormulaError
from .peak import Peak, peak_of
from .shapes import Arch

DEFAULT_FLOPS = 400e12
DEFAULT_BUS_BW = 450e9  # NVLink 4, per GPU, one direction (dscourse.comm.BANDWIDTHS)
DEFAULT_HEADROOM = 0.2
MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
VARIANTS = [(0, "none", "none"), (1, "none", "none"), (2, "none", "none"), (3, "none", "none"),
            (1, "cpu", "none"), (2, "cpu", "none"), (3, "cpu", "none"), (3, "cpu", "cpu")]


@dataclass
class Candidate:
    stage: int
    offload_optimizer: str
    offload_param: str
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    peak: Peak
    seconds: float  # the cost model's step time

    @property
    def name(self) -> str:
        off = {"none": "", "cpu": " +offload opt"}[self.offload_optimizer]
        off += " +offload param" if self.offload_param == "cpu" else ""
        return f"ZeRO-{self.stage}{off}"

    def ds_config(self) -> dict:
        """The 4.2 builder's config for this candidate (DeepSpeed's default optimizer, bf16). Activation
        checkpointing is the model's, not DeepSpeed's: ``model.gradient_checkpointing_enable(...)``."""
        from ..config import build_config

        return build_config(self.stage, micro_batch=self.micro_batch, grad_accum=self.grad_accum,
                            world_size=self.peak.setup.gpus, offload_optimizer=self.offload_optimizer,
                            offload_param=self.offload_param, torch_adam=False)

    def as_dict(self) -> dict:
        return {"variant": self.name, "stage": self.stage, "offload_optimizer": self.offload_optimizer,
                "offload_param": self.offload_param, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                "checkpointing": self.checkpointing, "peak_gpu_bytes": self.peak.peak_bytes,
                "peak_phase": self.peak.peak_phase, "gpu_bytes": self.peak.gpu_bytes,
                "host_bytes_per_node": self.peak.cpu_bytes, "step_seconds": self.seconds}


@dataclass
class Shortfall:
    """Why nothing fits. ``gpu_short``: bytes per GPU missing for the configuration that needs the least GPU
    memory among those whose host RAM fits (None: no host RAM fits any); ``host_short`` likewise per node."""

    gpu_short: float | None
    gpu_closest: Candidate | None
    host_short: float | None
    host_closest: Candidate | None

    def message(self) -> str:
        def say(short, c, what, unit):
            if short is None:
                return f"no configuration fits the {'host RAM' if what == 'GPU memory' else 'GPU memory'} at all"
            return f"{what} is {short / 1e9:.1f} GB {unit} short ({c.name}, micro-batch {c.micro_batch})"

        return ("nothing fits: with the host RAM it has, " + say(self.gpu_short, self.gpu_closest, "GPU memory", "per GPU")
                + "; with the GPU memory it has, " + say(self.host_short, self.host_closest, "host RAM", "per node"))


def _efficiency_curve() -> list[tuple[float, float]]:
    """(log FLOP per micro-batch, tokens/s relative to the largest micro-batch), GPT-2 350M ZeRO-2, measured."""
    from ..gpu_results import load_throughput, throughput_rows

    data = load_throughput()
    rows = [r for r in throughput_rows(data) if r["variant"] == "ZeRO-2" and r["grad_accum"] == 1
            and not r["pinned"] and r["lease"] == 1]
    params = data["runs"][0]["ranks"][0]["params"]
    best = max(r["tokens_per_second"] for r in rows)
    return sorted((math.log(6 * params * r["tokens_per_step"]), r["tokens_per_second"] / best) for r in rows)


def efficiency(flop_per_micro_batch: float, curve=None) -> float:
    curve = curve or _efficiency_curve()
    x = math.log(flop_per_micro_batch)
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in pairwise(curve):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return 1.0


def variant_factors() -> dict:
    """Step time of each variant over ZeRO-2's on one GPU at the same micro-batch, accumulation and lease
    (median over the measured points; offload with pinned memory), from ``gpu_throughput_gpt2-350m.json``."""
    from ..gpu_results import BASELINE, offload_slowdown, throughput_rows

    rows = throughput_rows()
    base = {(r["micro_batch"], r["grad_accum"], r["lease"]): r["tokens_per_second"] for r in rows
            if r["variant"] == "ZeRO-2"}
    by: dict = {}
    for r in rows:
        ref = base.get((r["micro_batch"], r["grad_accum"], r["lease"]))
        if ref and ("offload" not in r["variant"] or r["pinned"]):
            by.setdefault(r["variant"], []).append(ref / r["tokens_per_second"])
    factors = {k: statistics.median(v) for k, v in by.items()}
    # variants never measured beside ZeRO-2: their slowdown against their own baseline, on that baseline's factor
    slow: dict = {}
    for r in offload_slowdown():
        if r["pinned"]:
            slow.setdefault(r["variant"], []).append(r["slowdown"])
    for variant, values in slow.items():
        if variant not in factors:
            factors[variant] = factors.get(BASELINE[variant], 1.0) / (1 - statistics.median(values))
    factors.setdefault("ZeRO-1 +offload opt", factors.get("ZeRO-2 +offload opt", 1.0))  # the same host step
    return factors


def plan(arch: Arch, gpus: int, gpu_memory: float, seq: int, gpus_per_node: int | None = None,
         host_memory: float | None = None, global_batch: int | None = None, headroom: float = DEFAULT_HEADROOM,
         flops: float = DEFAULT_FLOPS, bus_bw: float = DEFAULT_BUS_BW) -> list[Candidate] | Shortfall:
    """Every configuration whose peak × (1 + headroom) fits ``gpu_memory`` and whose host RAM fits, cheapest first;
    or a :class:`Shortfall` saying what is short and by how much."""
    if gpu_memory <= 0 or (host_memory is not None and host_memory <= 0):
        raise FormulaError("GPU and host memory must be positive")
    if global_batch is not None and global_batch % gpus:
        raise FormulaError(f"the global batch ({global_batch}) must be a multiple of the {gpus} GPUs")
    curve, factors = _efficiency_curve(), variant_factors()
    fits, gpu_best, host_best = [], None, None  # (bytes short, candidate)
    for stage, oo, op in VARIANTS:
        for mb in MICRO_BATCHES:
            if global_batch is not None and (global_batch // gpus) % mb:
                continue
            gas = global_batch // gpus // mb if global_batch is not None else 1
            for ckpt in (False, True):
                try:
                    pk = peak_of(arch, gpus, stage, mb, seq, ckpt, oo, op, gpus_per_node, grad_accum=gas)
                except FormulaError as e:
                    if "whole nodes" in str(e):
                        raise
                    continue
                tokens = mb * seq * gas
                compute = 6 * arch.params * tokens / flops * (4 / 3 if ckpt else 1)
                compute /= efficiency(6 * arch.params * mb * seq, curve)
                cand = Candidate(stage, oo, op, mb, gas, ckpt, pk, 0.0)
                compute *= factors[cand.name]
                cand.seconds = compute + (step_time(arch.params, stage, gpus, bus_bw, grad_accum=gas) if gpus > 1
                                          else 0.0)
                gpu_short = pk.peak_bytes * (1 + headroom) - gpu_memory
                host_short = pk.cpu_bytes - host_memory if host_memory is not None else 0
                if gpu_short <= 0 and host_short <= 0:
                    fits.append(cand)
                if host_short <= 0 and (gpu_best is None or gpu_short < gpu_best[0]):
                    gpu_best = (gpu_short, cand)
                if gpu_short <= 0 and (host_best is None or host_short < host_best[0]):
                    host_best = (host_short, cand)
    if fits:
        return sorted(fits, key=lambda c: (c.seconds, c.peak.peak_bytes))
    return Shortfall(*(gpu_best or (None, None)), *(host_best or (None, None)))
