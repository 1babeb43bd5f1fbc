"""Mixed precision, computed: number formats, gradient underflow, master weights, DeepSpeed's loss scaler.

Every function here computes from the real thing: ``torch.finfo`` for the formats, a real model's
gradients for underflow, real training steps for master weights, and DeepSpeed's own
``DynamicLossScaler`` (``deepspeed/runtime/fp16/loss_scaler.py``), built from a validated
``"fp16"`` config section exactly as ZeRO-1/2/3 build it, for the loss-scale simulation.
torch and deepspeed are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass, field

from .logcapture import Collect

# Names used in this course -> torch dtype attribute (None: no torch dtype, computed from the bit layout).
TORCH_DTYPES = {"fp32": "float32", "tf32": None, "bf16": "bfloat16", "fp16": "float16",
                "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}
# Bit layouts (exponent bits, mantissa bits) of the formats without a torch dtype.
LAYOUTS = {"tf32": (8, 10)}


@dataclass(frozen=True)
class Format:
    """One floating-point format: its bit layout and the numbers that matter for training."""

    name: str
    dtype: str | None  # the torch dtype, or None where torch has none (tf32)
    bits: int  # storage bits (tf32: the 19 bits that take part in the multiply)
    exponent_bits: int
    mantissa_bits: int  # stored fraction bits (precision is mantissa_bits + 1 with the implicit bit)
    max: float
    smallest_normal: float
    smallest_subnormal: float | None
    eps: float  # distance from 1.0 to the next representable number
    source: str

    @property
    def decimal_digits(self) -> float:
        """Significant decimal digits: log10(2^(mantissa_bits + 1))."""
        return (self.mantissa_bits + 1) * math.log10(2)


def layout_format(name: str, exponent_bits: int, mantissa_bits: int) -> Format:
    """An IEEE-754-style binary format (largest exponent reserved for inf/NaN), from its bit layout alone."""
    bias = 2 ** (exponent_bits - 1) - 1
    emax, emin = bias, 1 - bias
    return Format(name=name, dtype=None, bits=1 + exponent_bits + mantissa_bits, exponent_bits=exponent_bits,
                  mantissa_bits=mantissa_bits, max=(2 - 2.0 ** -mantissa_bits) * 2.0 ** emax,
                  smallest_normal=2.0 ** emin, smallest_subnormal=2.0 ** (emin - mantissa_bits),
                  eps=2.0 ** -mantissa_bits, source=f"bit layout (1 + {exponent_bits} + {mantissa_bits})")


def torch_format(name: str) -> Format | None:
    """The format from ``torch.finfo`` (None where this torch has no such dtype, or none exists)."""
    import torch

    attr = TORCH_DTYPES[name]
    if attr is None:  # tf32: a tensor-core compute mode, not a storage dtype
        exp, man = LAYOUTS[name]
        return dataclasses.replace(layout_format(name, exp, man), smallest_subnormal=None,
                                   source="bit layout; torch: torch.backends.cuda.matmul.allow_tf32")
    dtype = getattr(torch, attr, None)
    if dtype is None:
        return None
    fi = torch.finfo(dtype)
    mantissa = round(-math.log2(fi.eps))
    # finfo has no field for the smallest subnormal; it is smallest_normal × eps (one unit in the last place
    # below the smallest normal). Checked by converting it and half of it: see tests/test_precision.py.
    return Format(name=name, dtype=attr, bits=fi.bits, exponent_bits=fi.bits - 1 - mantissa, mantissa_bits=mantissa,
                  max=float(fi.max), smallest_normal=float(fi.smallest_normal),
                  smallest_subnormal=float(fi.smallest_normal) * float(fi.eps), eps=float(fi.eps),
                  source=f"torch.finfo(torch.{attr})")


def format_table(names=tuple(TORCH_DTYPES)) -> list[Format]:
    """Every format of ``names`` that this torch knows (fp8 needs torch ≥ 2.1)."""
    return [f for f in (torch_format(n) for n in names) if f is not None]


def format_rows(formats: list[Format]) -> list[list[str]]:
    """Rows for :func:`dscourse.tables.text_table`: name, dtype, bits, layout, max, normal, subnormal, eps, digits."""

    def num(x):
        return "—" if x is None else f"{x:.4g}"

    def pow2(x):
        return "—" if x is None else f"2^{math.log2(x):.0f}" if math.log2(x).is_integer() else num(x)

    return [[f.name, f"torch.{f.dtype}" if f.dtype else "(no dtype)", f.bits,
             f"1+{f.exponent_bits}+{f.mantissa_bits}", num(f.max),
             f"{num(f.smallest_normal)} ({pow2(f.smallest_normal)})",
             f"{num(f.smallest_subnormal)} ({pow2(f.smallest_subnormal)})", f"{num(f.eps)} ({pow2(f.eps)})",
             f"{f.decimal_digits:.1f}"] for f in formats]


FORMAT_HEADER = ["format", "torch dtype", "bits", "sign+exp+mantissa", "max", "smallest normal",
                 "smallest subnormal", "eps", "decimal digits"]


# --------------------------------------------------------------------------------------------------
# Gradients of a real model
# --------------------------------------------------------------------------------------------------

# Gradients that are zero in exact arithmetic come out of a float64 backward as rounding noise around 2^-70
# (GPT-2's attention key biases: softmax ignores a shift shared by all keys); real gradients of the course's
# models sit above 2^-31. Everything below this floor is that noise, set to the 0 it stands for.
NOISE_FLOOR = 2.0 ** -45


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: a sum's order, and so its last bits, then no longer depends on how many
    cores the machine has (the CPU's vector kernels still may)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def model_gradients(shape: str = "gpt2-tiny", micro_batch: int = 4, seed: int = 0, dtype=None, scale: float = 1.0):
    """The flat gradient of ``shape`` after one forward/backward on a synthetic batch, as fp32, unscaled.

    ``dtype=None``: the reference, the same on every CPU. An fp32 backward's last bits depend on the CPU's kernels
    and thread count (and they decide which tiny gradients fall below fp16's range), so the reference runs in
    float64 on one thread, sets the noise below :data:`NOISE_FLOOR` to 0 and rounds to fp32 once.
    ``torch.float16`` / ``torch.bfloat16`` run the whole model (forward and backward) in that dtype, with the
    loss multiplied by ``scale`` before ``backward()`` and the gradients divided by it afterwards — what a loss
    scaler does; those results depend on the CPU's low-precision kernels.
    """
    import torch

    from .models import build_model, synthetic_batch

    torch.manual_seed(seed)
    model = build_model(shape).to(torch.float64 if dtype is None else dtype)
    ids = synthetic_batch(shape, micro_batch, 0, seed=seed)
    with one_thread() if dtype is None else contextlib.nullcontext():
        loss = model(input_ids=ids, labels=ids).loss
        (loss * scale).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    if dtype is None:
        grads = torch.where(grads.abs() < NOISE_FLOOR, torch.zeros_like(grads), grads)
    return grads.float() / scale


def exact_zero_gradients(shape: str = "gpt2-tiny", micro_batch: int = 4, seed: int = 0) -> dict[str, int]:
    """Per parameter: how many reference gradient elements are 0 (unused rows, or below :data:`NOISE_FLOOR`)."""
    import torch

    from .models import build_model

    grads = model_gradients(shape, micro_batch, seed)
    out, start = {}, 0
    torch.manual_seed(seed)
    for name, p in build_model(shape).named_parameters():
        zeros = int((grads[start:start + p.numel()] == 0).sum())
        start += p.numel()
        if zeros:
            out[name] = zeros
    return out


def cast_report(grads, dtype, scale: float = 1.0) -> dict:
    """What happens to fp32 gradients ``grads`` multiplied by ``scale`` and stored in ``dtype``.

    Fractions are of the nonzero fp32 elements: ``zero`` (flushed to 0), ``subnormal`` (kept with fewer
    significant bits), ``overflow`` (became inf), and ``rel_error``: ‖unscaled cast − grads‖ / ‖grads‖.
    """
    import torch

    g = grads[grads != 0]
    low = (g * scale).to(dtype)
    fi = torch.finfo(dtype)
    back = low.float() / scale
    finite = torch.isfinite(back)
    n = g.numel()
    return {"zero": (low == 0).sum().item() / n,
            "subnormal": ((low != 0) & (low.float().abs() < fi.smallest_normal)).sum().item() / n,
            "overflow": (~torch.isfinite(low)).sum().item() / n,
            "rel_error": ((back[finite] - g[finite]).norm() / g.norm()).item() if finite.any() else float("nan"),
            "elements": n}


def underflow_curve(grads, dtype, shifts, scale: float = 1.0) -> list[float]:
    """Fraction of ``grads`` flushed to zero in ``dtype`` when the gradients are 2^-k smaller, for k in ``shifts``.

    Gradients shrink like this when the loss is divided by more (DeepSpeed's ``engine.backward`` divides it
    by ``gradient_accumulation_steps``) or as training converges.
    """
    return [cast_report(grads * 2.0 ** -k, dtype, scale)["zero"] for k in shifts]


def log2_histogram(grads, lo: int = -40, hi: int = 0) -> tuple[list[int], list[int]]:
    """Counts of log2|g| in unit bins [k, k+1) for k in lo..hi-1 (zeros left out; the ends collect the tails)."""
    import torch

    g = grads[grads != 0].abs().float()
    k = torch.floor(torch.log2(g)).clamp(lo, hi - 1).long() - lo
    counts = torch.bincount(k, minlength=hi - lo)
    return list(range(lo, hi)), counts.tolist()


# --------------------------------------------------------------------------------------------------
# Master weights
# --------------------------------------------------------------------------------------------------

def lost_update(weight: float = 1.0, update: float = 1e-4, dtype_name: str = "bfloat16") -> dict:
    """``weight + update`` in ``dtype`` and in fp32: the small update disappears in bf16."""
    import torch

    dtype = getattr(torch, dtype_name)
    w = torch.tensor(weight, dtype=dtype)
    return {"low": (w + torch.tensor(update, dtype=dtype)).item(), "fp32": weight + update,
            "lost": bool((w + torch.tensor(update, dtype=dtype)) == w),
            "half_ulp": torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(abs(weight))) / 2}


MASTER_MODES = ("fp32", "bf16 + fp32 master", "pure bf16")


def train_master_weights(shape: str = "gpt2-tiny", steps: int = 150, lr: float = 2e-5, micro_batch: int = 8,
                         pool: int = 4, seed: int = 0, modes=MASTER_MODES) -> dict:
    """Train ``shape`` with AdamW three ways and return ``{mode: {"losses", "unchanged"}}``.

    - ``fp32``: everything fp32 (the reference);
    - ``bf16 + fp32 master``: forward/backward on a bf16 copy, gradients cast to fp32, AdamW updates fp32
      master weights, which are copied back to bf16 — what DeepSpeed's bf16 does;
    - ``pure bf16``: the bf16 model is its own optimizer's parameters (weights and Adam states in bf16).

    ``unchanged``: per step, the fraction of bf16 weights that the step left bit-for-bit unchanged.
    The data: ``pool`` synthetic batches, cycled (the model memorises them, so the loss falls). One thread, so
    that the fp32 curve does not depend on the core count; the bf16 curves still depend on the CPU's bf16 kernels.
    """
    with one_thread():
        return _train_master_weights(shape, steps, lr, micro_batch, pool, seed, modes)


def _train_master_weights(shape, steps, lr, micro_batch, pool, seed, modes) -> dict:
    import torch

    from .models import build_model, synthetic_batch

    out = {}
    for mode in modes:
        if mode not in MASTER_MODES:
            raise ValueError(f"mode must be one of {MASTER_MODES}, not {mode!r}")
        torch.manual_seed(seed)
        model = build_model(shape)
        master = None
        if mode == "fp32":
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        elif mode == "pure bf16":
            model = model.to(torch.bfloat16)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        else:
            master = [p.detach().clone().float().requires_grad_(True) for p in model.parameters()]
            model = model.to(torch.bfloat16)
            opt = torch.optim.AdamW(master, lr=lr, weight_decay=0.0)
        params = list(model.parameters())
        losses, unchanged = [], []
        for step in range(steps):
            ids = synthetic_batch(shape, micro_batch, step % pool, seed=seed)
            before = [p.detach().clone() for p in params]
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if master is not None:
                for m, p in zip(master, params):
                    m.grad, p.grad = p.grad.float(), None
            opt.step()
            opt.zero_grad(set_to_none=True)
            if master is not None:
                with torch.no_grad():
                    for m, p in zip(master, params):
                        p.copy_(m)
            same = sum((p.detach() == b).sum().item() for p, b in zip(params, before))
            unchanged.append(same / sum(p.numel() for p in params))
            losses.append(loss.item())
        out[mode] = {"losses": losses, "unchanged": unchanged}
    return out


# --------------------------------------------------------------------------------------------------
# DeepSpeed's dynamic loss scaler
# --------------------------------------------------------------------------------------------------

AT_MINIMUM = "Current loss scale already at minimum"
FP16_KEYS = ("initial_scale_power", "loss_scale_window", "hysteresis", "min_loss_scale", "consecutive_hysteresis")


def fp16_section(**keys) -> dict:
    """The ``"fp16"`` section of a DeepSpeed config with ``keys`` (validated by DeepSpeed's own config model)."""
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config

    unknown = set(keys) - set(FP16_KEYS) - {"loss_scale"}
    if unknown:
        raise ValueError(f"unknown fp16 keys {sorted(unknown)}: use {FP16_KEYS}")
    section = {"enabled": True, **keys}
    DeepSpeedFP16Config(**section)  # raises on what DeepSpeed rejects (window 0, min_loss_scale 0.5, ...)
    return section


def build_loss_scaler(precision: str = "fp16", **fp16_keys):
    """The loss scaler DeepSpeed's ZeRO optimizers create (``stage_1_and_2.py`` / ``stage3.py``).

    ``CreateLossScaler(dtype, static_loss_scale, dynamic_scaling, dynamic_loss_args)`` with the arguments
    the engine passes: ``DeepSpeedFP16Config.dynamic_loss_scale_args()`` of the ``"fp16"`` section. For
    fp16 with ``loss_scale: 0`` (the default) this is a ``DynamicLossScaler``; for bf16 a static
    ``LossScaler`` of scale 1.
    """
    import torch
    from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config

    if precision not in ("fp16", "bf16"):
        raise ValueError(f"precision must be fp16 or bf16, not {precision!r}")
    cfg = DeepSpeedFP16Config(**fp16_section(**fp16_keys))
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return CreateLossScaler(dtype=dtype, static_loss_scale=cfg.loss_scale, dynamic_scaling=cfg.loss_scale == 0,
                            dynamic_loss_args=cfg.dynamic_loss_scale_args())


class _SingleRank:
    """Stands in for ``deepspeed.comm`` inside ``loss_scaler.py`` when no process group exists: the
    scaler only asks for the rank to decide whether rank 0 logs."""

    @staticmethod
    def get_rank(group=None):
        return 0

    @staticmethod
    def is_initialized():
        return True



@contextlib.contextmanager
def _deepspeed_scaler_context():
    """Run the scaler without a process group and collect what DeepSpeed logs (instead of printing it)."""
    import deepspeed.comm as ds_comm
    from deepspeed.runtime.fp16 import loss_scaler as ls
    from deepspeed.utils import logger

    saved_dist, saved_handlers, saved_level = ls.dist, logger.handlers[:], logger.level
    if not ds_comm.is_initialized():
        ls.dist = _SingleRank
    collect = Collect(logging.DEBUG)
    logger.handlers = [collect]
    logger.setLevel(logging.INFO)
    try:
        yield collect.messages
    finally:
        ls.dist = saved_dist
        logger.handlers = saved_handlers
        logger.setLevel(saved_level)


@dataclass
class ScaleTrace:
    """What the scaler did: the scale each step used, which steps were skipped, and how it ended."""

    precision: str
    fp16: dict
    scales: list[float] = field(default_factory=list)  # the loss scale used by step t
    overflow: list[bool] = field(default_factory=list)
    error: str | None = None  # the exception DeepSpeed raised, as "Type: message"
    failed_at: int | None = None  # the step that raised it
    messages: list[str] = field(default_factory=list)  # what DeepSpeed logged

    @property
    def skipped(self) -> list[int]:
        """Steps whose update DeepSpeed skipped: every step with an overflow (ZeRO ``step()`` returns early)."""
        return [t for t, o in enumerate(self.overflow) if o]

    @property
    def steps(self) -> int:
        return len(self.scales)

    @property
    def final_scale(self) -> float | None:
        return self.scales[-1] if self.scales else None


def simulate_loss_scale(log2_max_grad, precision: str = "fp16", **fp16_keys) -> ScaleTrace:
    """Replay DeepSpeed's loss scaler over a gradient history.

    ``log2_max_grad[t]`` is log2 of the largest |gradient| step ``t`` would produce without scaling
    (NaN: the step's gradients are non-finite whatever the scale). Step ``t`` overflows when
    ``scale × max|g|`` exceeds the format's largest finite number (fp16: 65504; bf16: 3.4e38), i.e.
    ``log2_max_grad[t] + log2(scale) > log2(finfo.max)``. The overflow decision is this function's model of
    the gradients; what the scaler does with it is DeepSpeed's own ``update_scale(overflow)``, called once per
    step, as ``DeepSpeedZeroOptimizer.step()`` calls it. An exception it raises ends the run, as it
    ends a training job.
    """
    import torch

    scaler = build_loss_scaler(precision, **fp16_keys)
    limit = math.log2(torch.finfo(torch.float16 if precision == "fp16" else torch.bfloat16).max)
    trace = ScaleTrace(precision=precision, fp16=fp16_section(**fp16_keys))
    with _deepspeed_scaler_context() as messages:
        for t, lg in enumerate(_as_log2(log2_max_grad)):
            scale = float(scaler.cur_scale)
            overflow = bool(math.isnan(lg) or lg + math.log2(scale) > limit)
            trace.scales.append(scale)
            trace.overflow.append(overflow)
            try:
                scaler.update_scale(overflow)
            except Exception as e:  # noqa: BLE001 - DeepSpeed raises a bare Exception
                trace.error, trace.failed_at = f"{type(e).__name__}: {e}", t
                break
    trace.messages = list(messages)
    return trace


def _as_log2(history) -> list[float]:
    """A fixed overflow sequence (booleans) as a gradient history: True overflows at any scale, False never."""
    return [(float("nan") if x else float("-inf")) if isinstance(x, bool) else float(x) for x in history]


def simulate_zero0_loss_scale(log2_max_grad, **fp16_keys) -> ScaleTrace:
    """The same replay for ZeRO-0 (no ZeRO optimizer): there DeepSpeed wraps the optimizer in
    ``FP16_UnfusedOptimizer`` (``FP16_Optimizer`` for FusedAdam), whose ``_update_scale`` keeps the scale in a
    ``LossScaleConfig`` instead of a ``DynamicLossScaler``: no hysteresis, and at the minimum it stays there
    (``max(scale / 2, min_loss_scale)``) without raising. DeepSpeed's own method runs here on a stand-in for the
    optimizer object that holds only what the method reads (``loss_scale_config``, ``verbose``).
    """
    import types

    import torch
    from deepspeed.runtime.fp16.loss_scaler import LossScaleConfig, LossScaleProfile
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config

    section = fp16_section(**fp16_keys)
    cfg = DeepSpeedFP16Config(**section)
    config = LossScaleConfig(low_precision_dtype=torch.float16, dynamic_loss_scale=cfg.loss_scale == 0,
                             static_loss_scale=cfg.loss_scale, dynamic_loss_args=cfg.dynamic_loss_scale_args(),
                             profile=LossScaleProfile.UNFUSED)
    optimizer = types.SimpleNamespace(loss_scale_config=config, verbose=False)
    limit = math.log2(torch.finfo(torch.float16).max)
    trace = ScaleTrace(precision="fp16", fp16=section)
    with _deepspeed_scaler_context() as messages:
        for lg in _as_log2(log2_max_grad):
            scale = float(config.cur_scale)
            overflow = bool(math.isnan(lg) or lg + math.log2(scale) > limit)
            trace.scales.append(scale)
            trace.overflow.append(overflow)
            FP16_UnfusedOptimizer._update_scale(optimizer, overflow)
    trace.messages = list(messages)
    return trace


SCENARIOS = {
    "healthy": "健康训练：max|g| ≈ 2^-3，偶有尖峰（spike）",
    "grads grow": "梯度变大：第 1200–1600 步 max|g| 升到 2^12（损失尖峰、不稳定）",
    "beyond fp16": "超出 fp16 范围：max|g| ≈ 2^17 > 65504（如 bf16 预训练的模型改用 fp16 微调）",
    "diverged": "发散：第 1500 步起梯度为 NaN（学习率过大、坏数据）",
}


def grad_scenario(name: str, steps: int = 3000, seed: int = 0) -> list[float]:
    """A synthetic history of log2 max|gradient| per step (NaN: non-finite), seeded; see :data:`SCENARIOS`."""
    import random

    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: use one of {list(SCENARIOS)}")
    rng = random.Random(f"{name}-{seed}")
    out = []
    for t in range(steps):
        lg = -3.0 + rng.gauss(0, 0.5)
        if rng.random() < 0.004:  # a rare spike: one batch with large gradients
            lg += rng.uniform(3, 8)
        if name == "grads grow" and 1200 <= t < 1600:
            lg += 15.0 * math.sin(math.pi * (t - 1200) / 400)
        elif name == "beyond fp16":
            lg += 20.0
        elif name == "diverged" and t >= 1500:
            lg = float("nan")
        out.append(round(lg, 3))
    return out


def trace_summary(trace: ScaleTrace) -> str:
    """One line: steps run, skipped, final scale, and how it ended."""
    end = f"raised {trace.error!r} at step {trace.failed_at}" if trace.error else "ran to the end"
    return (f"{trace.precision}: {trace.steps} steps, {len(trace.skipped)} skipped, final scale "
            f"2^{math.log2(trace.final_scale):g}; {end}")


# --------------------------------------------------------------------------------------------------
# Memory of model states by precision (ZeRO-0..2, between optimizer steps)
# --------------------------------------------------------------------------------------------------

def model_state_bytes(params: int, gpus: int, stage: int, precision: str) -> dict:
    """Bytes per rank DeepSpeed 0.19 holds between steps, by category, for bf16/fp16 or fp32 training.

    16-bit: the ``allocated`` formula of :mod:`dscourse.memory` (2Ψ params + master 4Ψ + Adam 8Ψ, the last two
    divided by N from ZeRO-1 on). fp32: the model's own fp32 params (4Ψ); at ZeRO-0 the torch optimizer
    updates them directly (no master copy); at ZeRO-1/2 ``DeepSpeedZeroOptimizer`` still clones an fp32
    partition of them (``single_partition_of_fp32_groups``), so fp32 costs 4Ψ + 12Ψ/N there.
    Gradients are freed after the step and not included (2Ψ in 16-bit, 4Ψ in fp32 during backward).
    """
    from .memory import Setup, estimate

    if stage not in (0, 1, 2):
        raise ValueError("model_state_bytes covers ZeRO-0/1/2")
    if precision in ("bf16", "fp16"):
        est = estimate(Setup(params=params, gpus=gpus, stage=stage), "allocated")
        return {k: int(round(v)) for k, v in est.gpu.items() if k != "workspace"}
    if precision != "fp32":
        raise ValueError(f"precision must be bf16, fp16 or fp32, not {precision!r}")
    if stage == 0:
        return {"params": 4 * params, "optim": 8 * params}
    return {"params": 4 * params, "master": int(round(4 * params / gpus)), "optim": int(round(8 * params / gpus))}


# --------------------------------------------------------------------------------------------------
# GPU measurements
# --------------------------------------------------------------------------------------------------

def load_gpu_precision(path=None) -> dict:
    """``dscourse/data/gpu_precision.json``: ``{"provenance": {...}, "runs": [...]}``.

    Written by ``benchmarks/precision_gpu.py``; ``runs[i]`` is the record ``dscourse.scripts.precision_run`` made.
    """
    import json
    from pathlib import Path

    from . import package_path

    return json.loads((Path(path) if path else package_path("data", "gpu_precision.json")).read_text())
