"""Memory formula families for ZeRO training: per-GPU bytes and host RAM per node.

Each family answers the same question from a different source, so the book can set them side by
side and explain every difference:

``paper``       the ZeRO paper (Rajbhandari et al., 2020): 2Ψ + 2Ψ + KΨ with K = 12 for mixed-precision
                Adam, and the ZeRO-Offload / ZeRO-Infinity papers for what moves to the host.
``seed``        the source chapter's own accounting: fp16 parameters and gradients, Adam's two fp32
                moments, and no fp32 master copy (12 bytes per parameter, not 16).
``deepspeed``   DeepSpeed's ``estimate_zero2_model_states_mem_needs`` and
                ``estimate_zero3_model_states_mem_needs`` (0.19.8), byte for byte.
``accelerate``  ``accelerate estimate-memory``'s "Training using Adam" figure for a mixed-precision
                model (accelerate 1.15): the largest of its four terms, on one device.
``allocated``   what DeepSpeed 0.19 really holds per GPU between optimizer steps (bf16, default buckets,
                Adam), term by term, from counting live engines and ``torch.cuda.memory_allocated()``.

Ψ is the parameter count, N the number of GPUs (data-parallel ranks), G the GPUs per node.
Pure Python: no torch import, so the calculator, the CLI and the widget load instantly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .lora import lora_state_bytes

FORMULAS = ("paper", "seed", "deepspeed", "accelerate", "allocated")
CATEGORIES = ("params", "grads", "master", "optim", "buffers", "workspace", "step", "activations")
STATE_CATEGORIES = CATEGORIES[:6]  # what a family's estimate holds between steps
CATEGORY_LABELS = {  # as the book's figures name them
    "params": "16 位参数", "grads": "梯度", "master": "fp32 主权重",
    "optim": "Adam 状态（m、v）", "buffers": "DeepSpeed 缓冲区", "workspace": "CUDA 工作区",
    "step": "步内梯度与临时张量", "activations": "激活值与 logits",
}
OFFLOAD = ("none", "cpu")

# DeepSpeed 0.19.8 defaults that the `allocated` family depends on (zero/config.py).
DEFAULT_REDUCE_BUCKET_SIZE = 500_000_000  # elements
DEFAULT_PARAM_PERSISTENCE_THRESHOLD = 100_000  # ZeRO-3 keeps smaller parameters whole on every rank
# memory_allocated() minus every tensor the engine holds, after a step: cuBLAS/cuBLASLt workspaces and
# the step's small tensors. Measured on an H100 with torch 2.11: 67.1-71.5 MB over all 24 stage/offload
# runs of three models in dscourse/data/gpu_memory_*.json, independent of the model size.
CUDA_WORKSPACE = 68_500_000


class FormulaError(ValueError):
    """The inputs make no sense, or the chosen family has no answer for them.

    The message names the inputs by their field names in backticks (`stage`, `largest_layer`), the words of the
    model; each front end says them in its own (:meth:`worded`: the CLI's flags, the widget's labels)."""

    def worded(self, names: dict[str, str]) -> str:
        """The message with each `field` replaced by ``names[field]`` (left as the bare field name where absent)."""
        return re.sub(r"`(\w+)`", lambda m: names.get(m.group(1), m.group(1)), str(self))


@dataclass(frozen=True)
class Setup:
    """One training setup. ``gpus`` is the total number of data-parallel ranks."""

    params: int
    gpus: int = 1
    stage: int = 0
    gpus_per_node: int | None = None  # default: all GPUs on one node
    offload_optimizer: str = "none"
    offload_param: str = "none"
    largest_layer: int | None = None  # parameters of the largest layer (DeepSpeed's ZeRO-3 estimator)
    persistent_params: int = 0  # ZeRO-3 parameters below the persistence threshold, kept whole
    reduce_bucket_size: int = DEFAULT_REDUCE_BUCKET_SIZE
    trainable: int | None = None  # parameters that train (LoRA's adapters, counted in params); None: every one

    def __post_init__(self):
        def whole(name, value, minimum):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise FormulaError(f"{name} must be a whole number ≥ {minimum}, not {value!r}")

        whole("params", self.params, 1)
        whole("gpus", self.gpus, 1)
        if self.gpus_per_node is not None:
            whole("gpus per node", self.gpus_per_node, 1)
            if self.gpus > self.gpus_per_node and self.gpus % self.gpus_per_node:
                raise FormulaError(f"{self.gpus} GPUs do not fill whole nodes of {self.gpus_per_node}: "
                                   "make `gpus` a multiple of `gpus_per_node`")
        if self.stage not in (0, 1, 2, 3) or isinstance(self.stage, bool):
            raise FormulaError(f"ZeRO stage must be 0, 1, 2 or 3, not {self.stage!r}")
        for name in ("offload_optimizer", "offload_param"):
            if getattr(self, name) not in OFFLOAD:
                raise FormulaError(f"{name.replace('_', ' ')} must be 'none' or 'cpu', not {getattr(self, name)!r}")
        if self.offload_param != "none" and self.stage != 3:
            raise FormulaError(f"parameter offload needs ZeRO stage 3 (stage {self.stage} keeps every parameter "
                               "on every GPU; DeepSpeed ignores offload_param there): set `stage` to 3")
        if self.offload_optimizer != "none" and self.stage == 0:
            raise FormulaError("optimizer offload needs ZeRO stage 1, 2 or 3: stage 0 is plain data parallelism")
        if self.largest_layer is not None:
            whole("largest layer", self.largest_layer, 1)
            if self.largest_layer > self.params:
                raise FormulaError(f"the largest layer ({self.largest_layer:,}) cannot exceed the model ({self.params:,})")
        whole("persistent params", self.persistent_params, 0)
        if self.trainable is not None:
            whole("trainable params", self.trainable, 1)
            if self.trainable > self.params:
                raise FormulaError(f"the trainable parameters ({self.trainable:,}) cannot exceed the model "
                                   f"({self.params:,})")
            if self.lora and "cpu" in (self.offload_optimizer, self.offload_param):
                raise FormulaError("LoRA with offload is not modelled here (the adapters' optimizer state is small, "
                                   "offloading it rarely pays): drop the offload, or count full fine-tuning")

    @property
    def lora(self) -> bool:
        """Only part of the model trains (the rest frozen, as under LoRA)."""
        return self.trainable is not None and self.trainable < self.params

    @property
    def per_node(self) -> int:
        return min(self.gpus, self.gpus_per_node or self.gpus)

    @property
    def nodes(self) -> int:
        return self.gpus // self.per_node


@dataclass
class Estimate:
    """Bytes per GPU and host bytes per node, by category; ``None`` where the family is silent."""

    formula: str
    setup: Setup
    gpu: dict = field(default_factory=dict)
    cpu: dict | None = field(default_factory=dict)  # host RAM per node
    notes: list = field(default_factory=list)
    gpu_total: int | None = None  # where a family rounds its own totals (deepspeed), those exact figures
    cpu_total: int | None = None

    @property
    def gpu_bytes(self) -> int:
        return self.gpu_total if self.gpu_total is not None else int(round(sum(self.gpu.values())))

    @property
    def cpu_bytes(self) -> int | None:
        if self.cpu_total is not None:
            return self.cpu_total
        return None if self.cpu is None else int(round(sum(self.cpu.values())))

    def as_dict(self) -> dict:
        return {
            "formula": self.formula, "gpu_bytes": self.gpu_bytes, "cpu_bytes": self.cpu_bytes,
            "gpu": {k: int(round(v)) for k, v in self.gpu.items()},
            "cpu": None if self.cpu is None else {k: int(round(v)) for k, v in self.cpu.items()},
            "notes": list(self.notes),
            "setup": {"params": self.setup.params, "gpus": self.setup.gpus, "gpus_per_node": self.setup.per_node,
                      "nodes": self.setup.nodes, "stage": self.setup.stage,
                      "offload_optimizer": self.setup.offload_optimizer, "offload_param": self.setup.offload_param,
                      "largest_layer": self.setup.largest_layer, "trainable": self.setup.trainable},
        }


def _split(gpu_terms: dict, s: Setup, to_host: set) -> tuple[dict, dict]:
    """Move the per-rank terms in ``to_host`` to the host; the host holds them for every local rank."""
    gpu = {k: v for k, v in gpu_terms.items() if k not in to_host}
    cpu = {k: v * s.per_node for k, v in gpu_terms.items() if k in to_host}
    return gpu, cpu


def _divisors(s: Setup) -> tuple[int, int, int]:
    """What each ZeRO stage divides by N: (parameters, gradients, optimizer states)."""
    n = s.gpus
    return {0: (1, 1, 1), 1: (1, 1, n), 2: (1, n, n), 3: (n, n, n)}[s.stage]


def paper(s: Setup) -> Estimate:
    psi, part = s.params, _divisors(s)
    terms = {"params": 2 * psi / part[0], "grads": 2 * psi / part[1],
             "master": 4 * psi / part[2], "optim": 8 * psi / part[2]}
    to_host = set()
    if s.offload_optimizer == "cpu":  # ZeRO-Offload: fp16 gradients, fp32 master and Adam states on the CPU
        to_host |= {"grads", "master", "optim"}
    if s.offload_param == "cpu":  # ZeRO-Infinity: the parameter partition too
        to_host.add("params")
    gpu, cpu = _split(terms, s, to_host)
    notes = ["ZeRO paper: 2Ψ fp16 params + 2Ψ fp16 grads + 12Ψ (fp32 master, momentum, variance); no buffers, "
             "no activations"]
    return Estimate("paper", s, gpu, cpu, notes)


def seed(s: Setup) -> Estimate:
    psi, part = s.params, _divisors(s)
    gpu = {"params": 2 * psi / part[0], "grads": 2 * psi / part[1], "optim": 8 * psi / part[2]}
    cpu = {}
    if s.offload_optimizer == "cpu":
        cpu["optim"] = gpu.pop("optim") * s.per_node
    if s.offload_param == "cpu":  # the seed keeps the GPU partition and adds a "cold backup" on the host
        cpu["params"] = gpu["params"] * s.per_node
    notes = ["source chapter: 2 + 2 + (4+4) bytes per parameter; the fp32 master weights (4 bytes) are missing"]
    return Estimate("seed", s, gpu, cpu, notes)


def deepspeed(s: Setup) -> Estimate:
    """DeepSpeed 0.19.8's own estimators, re-stated so no torch import is needed (tests compare)."""
    psi, buffer_factor = s.params, 1.5
    if s.stage == 2:
        cpu_offload = s.offload_optimizer == "cpu"
        if cpu_offload:
            gpu_mem = 2 * psi
            cpu_mem = psi * max(4 * s.gpus, 16) * buffer_factor
            gpu = {"params": 2 * psi}
        else:
            gpu_mem = 2 * psi + int(18 * psi / s.gpus)
            cpu_mem = psi * 4 * s.per_node * buffer_factor
            gpu = {"params": 2 * psi, "grads": 6 * psi / s.gpus, "master": 4 * psi / s.gpus, "optim": 8 * psi / s.gpus}
        notes = ["estimate_zero2_model_states_mem_needs: 18 = 2 fp16 grads + 4 fp32 grads + 4 fp32 params + 8 Adam;"
                 " host RAM × 1.5 'additional buffer factor'"]
    elif s.stage == 3:
        if s.largest_layer is None:
            raise FormulaError("`formula` deepspeed at stage 3 needs `largest_layer` (the parameter count of the "
                               "largest layer, e.g. vocab × hidden for the embedding)")
        if s.offload_param == "cpu" and s.offload_optimizer != "cpu":
            raise FormulaError("DeepSpeed's ZeRO-3 estimator has no case for parameter offload without optimizer "
                               "offload: set `offload_optimizer` to cpu or pick another `formula`")
        nodes_factor = 1 / s.nodes
        largest = 4 * s.largest_layer
        if s.offload_optimizer == "cpu":
            if s.offload_param == "cpu":
                gpu_mem, gpu = largest, {"buffers": largest}
                cpu_mem = psi * 18 * nodes_factor * buffer_factor
            else:
                gpu_mem = largest + int(2 * psi / s.gpus)
                gpu = {"params": 2 * psi / s.gpus, "buffers": largest}
                cpu_mem = psi * 16 * nodes_factor * buffer_factor
        else:
            gpu_mem = largest + int(18 * psi / s.gpus)
            # DeepSpeed's 18 bytes: 2 (16-bit partition) + 4 (grads) + 4 (fp32 master) + 8 (Adam)
            gpu = {"params": 2 * psi / s.gpus, "grads": 4 * psi / s.gpus, "master": 4 * psi / s.gpus,
                   "optim": 8 * psi / s.gpus, "buffers": largest}
            cpu_mem = s.largest_layer * 4 * s.per_node * buffer_factor
        notes = ["estimate_zero3_model_states_mem_needs (zero_init=True): largest layer × 4 bytes as a gather "
                 "buffer; host RAM × 1.5 'additional buffer factor'"]
    else:
        raise FormulaError(f"DeepSpeed has estimators for ZeRO-2 and ZeRO-3 only, not stage {s.stage}: "
                           "set `stage` to 2 or 3, or pick another `formula`")
    return Estimate("deepspeed", s, gpu, {"host": cpu_mem}, notes, gpu_total=int(gpu_mem), cpu_total=int(cpu_mem))


def accelerate(s: Setup) -> Estimate:
    """``accelerate estimate-memory``: bf16/fp16 mixed precision, one device, the largest term only."""
    if s.stage != 0 or s.offload_optimizer != "none":
        raise FormulaError("accelerate estimate-memory knows nothing of ZeRO or offload: it answers for one "
                           "device holding everything (`stage` 0)")
    fp32 = 4 * s.params
    terms = {"model": fp32, "gradients": fp32 + fp32 // 2, "optimizer": 2 * fp32, "step": 2 * fp32}
    biggest = max(terms, key=terms.get)
    notes = [f"accelerate reports max(model 4Ψ, gradients 6Ψ, optimizer 8Ψ, step 8Ψ) = {biggest}, not their sum;"
             " it does not estimate host RAM"]
    return Estimate("accelerate", s, {"optim": terms[biggest]}, None, notes)


def allocated(s: Setup) -> Estimate:
    """What DeepSpeed 0.19 holds per GPU between optimizer steps (bf16, Adam, default buckets).

    Every term was found by counting live engines (``dscourse.accounting``) on CPU ranks and on a
    GPU, and checked against ``torch.cuda.memory_allocated()`` (``dscourse/data/gpu_memory_*.json``).
    Between steps the 16-bit gradients of stages 0-2 are freed; what stays is listed term by term.
    ``largest_layer`` (default: none) sizes the gradient staging buffers of ZeRO-1/2 offload.
    """
    psi, n, largest = s.params, s.gpus, s.largest_layer or 0
    notes = []
    host: dict = {}  # per rank
    if s.lora:
        # the frozen base keeps its 16-bit weights only; master, Adam and gradients exist for the trainable part
        gpu = lora_state_bytes(psi, s.trainable, n, s.stage)
        if s.stage == 3:
            gpu["params"] += 2 * s.persistent_params if n > 1 else 0
            gpu["buffers"] = 2 * s.reduce_bucket_size
        notes.append(f"LoRA: {s.trainable:,} of {psi:,} parameters train; the frozen base holds only its 16-bit weights"
                     + (" (partitioned)" if s.stage == 3 else " (whole on every GPU)"))
    elif s.stage == 0:
        gpu = {"params": 2 * psi, "master": 4 * psi, "optim": 8 * psi}
        notes.append("ZeRO-0 with bf16 runs FP16_UnfusedOptimizer: bf16 params, a full fp32 master copy and Adam "
                     "on every GPU; the bf16 grads are freed after the step")
    elif s.stage in (1, 2):
        if s.offload_optimizer == "cpu":
            # temp_grad_buffer_for_gpu_offload / _for_cpu_offload: one bf16 staging buffer the size of the
            # largest parameter on each side; param_buffer_of_bit16_for_cpu_offload_groups: the updated bf16
            # partition on its way back to the GPU.
            gpu = {"params": 2 * psi, "buffers": 2 * largest}
            host = {"master": 4 * psi / n, "grads": 4 * psi / n, "optim": 8 * psi / n,
                    "buffers": 2 * psi / n + 2 * largest}
            notes.append("ZeRO-1/2 + optimizer offload: the GPU keeps the bf16 params and a gradient staging buffer "
                         "(largest layer × 2 bytes); fp32 master, fp32 grads and Adam live on the host")
            if not s.largest_layer:
                notes.append("give largest_layer for the staging buffers (counted as 0 here)")
        else:
            gpu = {"params": 2 * psi, "master": 4 * psi / n, "optim": 8 * psi / n}
            notes.append("ZeRO-1/2 between steps: bf16 params + this rank's fp32 master and Adam partition; the "
                         "gradient partitions are freed after the step, so stages 1 and 2 hold the same")
    else:
        # Parameters of at most stage3_param_persistence_threshold elements stay whole on every rank (beside
        # their partition); with one rank the partition is the parameter, unless it is offloaded.
        persistent = 2 * s.persistent_params if (n > 1 or s.offload_param == "cpu") else 0
        gpu = {"params": 2 * psi / n + persistent, "grads": 2 * psi / n,
               "master": 4 * psi / n, "optim": 8 * psi / n,
               "buffers": 2 * s.reduce_bucket_size}  # bf16 ipg bucket, allocated at init and kept
        if s.offload_optimizer == "cpu":
            # fp32 master, Adam, the fp32 grads of the CPU step and the bf16 grad partitions move to the host
            host = {"master": gpu.pop("master"), "optim": gpu.pop("optim"), "grads": 4 * psi / n + gpu.pop("grads")}
        if s.offload_param == "cpu":
            host["params"] = 2 * psi / n
            gpu["params"] = persistent
        notes.append(f"ZeRO-3: a {2 * s.reduce_bucket_size / 1e9:.1f} GB bf16 reduce bucket (reduce_bucket_size "
                     "× 2 bytes) is allocated at init and kept, whatever the model size")
    gpu["workspace"] = CUDA_WORKSPACE
    cpu = {k: v * s.per_node for k, v in host.items()}
    return Estimate("allocated", s, gpu, cpu, notes)


FAMILIES = {"paper": paper, "seed": seed, "deepspeed": deepspeed, "accelerate": accelerate, "allocated": allocated}


def estimate(setup: Setup, formula: str = "allocated") -> Estimate:
    """Model-state memory of ``setup`` by the family ``formula``; raises ``FormulaError`` if it has no answer."""
    try:
        family = FAMILIES[formula]
    except KeyError:
        raise FormulaError(f"unknown formula {formula!r}: use one of {', '.join(FORMULAS)}") from None
    if setup.lora and formula != "allocated":
        raise FormulaError(f"the {formula} family counts full fine-tuning (every parameter trains); with LoRA only "
                           "the allocated family has an answer")
    return family(setup)


def estimate_all(setup: Setup) -> dict:
    """Every family's estimate, or the reason it has none: ``{formula: Estimate | FormulaError}``."""
    out = {}
    for name in FORMULAS:
        try:
            out[name] = estimate(setup, name)
        except FormulaError as e:
            out[name] = e
    return out
