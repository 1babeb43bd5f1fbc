"""The per-GPU peak of a DeepSpeed training step: the number that decides an out-of-memory error.

A step runs three phases (forward, backward, optimizer step); the peak is the largest of what is live
in each, the sense of ``torch.cuda.max_memory_allocated()``. Between steps only the model states are
held (the ``allocated`` family of :mod:`.formulas`, exact to 0.3%). Each phase adds its own tensors,
term by term below, each tied to the line that allocates it (DeepSpeed 0.19.8, transformers 5.17-5.23,
torch 2.11) and measured on an H200 (``dscourse/data/gpu_peak_h200.json``, ``benchmarks/gpu_peak.py``):

forward   model states + activations kept for backward + the logits chain at the loss:
          bf16 logits (2 bytes × tokens × vocabulary, ``lm_head``), their fp32 upcast
          (``transformers/loss/loss_utils.py``: ``logits = logits.float()``, 4 bytes) and the fp32
          log-softmax that ``F.cross_entropy`` saves (4 bytes); ZeRO-3 adds the parameters it gathers.
backward  the larger of its start and its end. Start: activations + the saved log-softmax + the
          gradients of the loss and of the log-softmax (2 × 4 bytes × tokens × vocabulary).
          End: the 16-bit gradients (stages 0-2) plus what is in flight (reduce buckets, the
          embedding gradient's transient copies).
step      model states + the optimizer's temporaries: the fp32 copy of the gradients it builds
          (all of them at ZeRO-0, this rank's partition at ZeRO-1/2, one ``sub_group_size`` at ZeRO-3);
          with optimizer offload the step runs on the CPU and adds nothing on the GPU.

With gradient accumulation (``grad_accum`` > 1) every micro-step after the first runs its forward and
backward on top of what the earlier ones left (:func:`accumulation_terms`): the 16-bit gradients at
ZeRO-0/1 and, at ZeRO-1, the reduce bucket (with or without optimizer offload); the gradient partition
at ZeRO-2; nothing at ZeRO-2 + optimizer offload (it accumulates on the host) or ZeRO-3.

The training loop is assumed to keep only the loss (``loss = engine(...).loss``); keeping the whole
output also keeps the bf16 logits through backward (2 bytes × tokens × vocabulary more).
Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .formulas import (
    DEFAULT_PARAM_PERSISTENCE_THRESHOLD,
    DEFAULT_REDUCE_BUCKET_SIZE,
    Estimate,
    FormulaError,
    Setup,
    estimate,
)
from .lora import TARGET_SETS, lora_tensors
from .shapes import Arch

PHASES = ("forward", "backward", "step")
PHASE_LABELS = {"forward": "前向", "backward": "反向", "step": "优化器 step"}  # as the book names them
TERM_LABELS = {
    "params": "16-bit parameters", "grads": "gradient partition (ZeRO-3)", "master": "fp32 master weights",
    "optim": "Adam m, v", "buffers": "DeepSpeed buffers", "workspace": "CUDA workspace",
    "activations": "activations kept for backward", "logits": "bf16 logits", "logits_fp32": "fp32 logits (loss upcast)",
    "log_softmax": "fp32 log-softmax (saved)", "loss_grads": "loss and log-softmax gradients",
    "grads16": "16-bit gradients", "buckets": "reduce buckets", "embedding_grad": "embedding gradient (transient)",
    "step_grads": "optimizer step: flat / fp32 gradients", "gathered": "ZeRO-3 gathered parameters",
    "grads_accum": "accumulated gradient partition",
}


@dataclass(frozen=True)
class Zero:
    """The ``zero_optimization`` knobs the peak depends on, at DeepSpeed 0.19.8's defaults (``zero/config.py``)."""

    reduce_bucket_size: int = DEFAULT_REDUCE_BUCKET_SIZE
    overlap_comm: bool | None = None  # None: DeepSpeed's default, on for stage 3 only (``overlap_comm_valid``)
    sub_group_size: int = 1_000_000_000
    max_live_parameters: int = 1_000_000_000  # stage3_max_live_parameters
    prefetch_bucket_size: int = 50_000_000  # stage3_prefetch_bucket_size


DEFAULT_ZERO = Zero()


@dataclass(frozen=True)
class Lora:
    """LoRA fine-tuning (PEFT, ``lora_dropout=0``): adapters of ``rank`` on the linear layers of ``targets`` (a key of
    :data:`dscourse.memory.lora.TARGET_SETS`), everything else frozen."""

    rank: int
    targets: str = "q_proj,v_proj"

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise FormulaError(f"LoRA rank must be a whole number ≥ 1, not {self.rank!r}")
        if self.targets not in TARGET_SETS:
            raise FormulaError(f"LoRA targets must be one of {', '.join(TARGET_SETS)}, not {self.targets!r}")

    @property
    def modules(self) -> tuple:
        return TARGET_SETS[self.targets]


# The families whose LoRA activations were counted tensor by tensor (tests/test_peak_lora.py)
LORA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def activation_terms(a: Arch, seq: int, micro_batch: int, checkpointing: bool = False) -> dict:
    """Bytes the forward pass leaves alive for backward, by term, in bf16 with SDPA (flash) attention.

    Per token and layer, counted tensor by tensor and matched to ``memory_allocated()`` across a forward
    pass on an H200 to 0.01% (Llama-3.2-1B, Qwen2.5-0.5B, Qwen3-0.6B at 2 × 4096 tokens):

    - RMSNorm (``LlamaRMSNorm.forward``): the fp32 upcast of its input (4h), the bf16 cast the weight
      multiplies (2h) and its output, which the next projections save (2h): 8h per norm, two per layer
      (Gemma-2: four); Qwen3's q_norm/k_norm keep the upcast and the cast (6 bytes per q/k element;
      RoPE after them saves no input);
    - attention: the rotated q and k, v (SDPA's inputs) and SDPA's output, which ``o_proj`` saves:
      4·q + 4·kv, plus flash attention's fp32 log-sum-exp, 4 bytes per head; eager attention (Gemma-2,
      whose softcapping SDPA lacks) keeps tanh(scores), the fp32 softmax and its bf16 cast: 8 bytes ×
      heads × sequence;
    - gated MLP: gate, SiLU(gate), up and their product, 2 bytes × intermediate width each: 8·i;
    - per token once: the final norm (8h) and RoPE's cos and sin (fp32, 8 × head_dim).
    GPT-2 (``GPT2Block``): two LayerNorms' inputs and outputs 8h, q, k, v 6h, SDPA's output and its
    contiguous copy for ``c_proj`` 4h, two 1-byte dropout masks 2h, 2h more measured; ``gelu_new`` is
    unfused Python and keeps its input, tanh(·), 0.5·x, 1 + tanh(·) and the output: 10·i; per token
    the embedding dropout mask and the final LayerNorm (5h).
    With activation checkpointing (non-reentrant) each layer keeps only its input (2h); the layer
    recomputed in backward is gone before the backward peak (measured).
    """
    if seq < 1 or micro_batch < 1:
        raise FormulaError("sequence length and micro-batch must be at least 1")
    t = seq * micro_batch
    h, i, heads = a.hidden, a.intermediate, a.heads
    q, kv = heads * a.dim, (a.kv_heads or a.heads) * a.dim
    if a.family == "gpt2":
        per_layer = 22 * h + 10 * i + 4 * heads
        once = 5 * h
    else:
        per_layer = 8 * h * a.norms_per_layer + 4 * q + 4 * kv + 4 * heads + 8 * i
        if a.family == "qwen3":
            per_layer += 6 * (q + kv)
        if a.family == "gemma2":
            per_layer += 8 * heads * seq - 4 * heads  # eager: no log-sum-exp, the s × s scores instead
        once = 8 * h + 8 * a.dim
    if checkpointing:
        return {"layer inputs (checkpoints)": a.layers * 2 * h * t, "final norm, positions": once * t}
    return {"layers": a.layers * per_layer * t, "final norm, positions": once * t}


def _lora_family(a: Arch) -> None:
    if a.family not in LORA_FAMILIES:  # GPT-2 and Phi-3 fuse the projections; Gemma-2's norms work otherwise
        raise FormulaError(f"LoRA is counted for the {', '.join(LORA_FAMILIES)} families, not {a.family}: "
                           "leave the LoRA rank at 0 for full fine-tuning")


def lora_activation_terms(a: Arch, seq: int, micro_batch: int, lora: Lora, checkpointing: bool = False) -> dict:
    """What LoRA changes in :func:`activation_terms`, by term (bytes, mostly negative): with the base frozen, an
    operation keeps only what the gradients it must still compute need.

    Counted with autograd's saved-tensor hooks on real models built by transformers with PEFT adapters, against the same
    count of full fine-tuning (``dscourse.accounting.saved_for_backward_bytes``; ``tests/test_peak_lora.py``), per layer:

    - every RMSNorm's bf16 cast (2h): the frozen weight needs no gradient, so ``weight * x`` keeps nothing of x
      (Qwen3's q_norm and k_norm too: 2 × (q + kv));
    - a frozen projection keeps no input: the norm output before q/k/v (2h) stays only if one of them is a target
      (``lora_A`` keeps it), the one before gate/up (2h) likewise, down_proj's input (2 × intermediate) only if it is a
      target; o_proj's input is SDPA's output, kept by SDPA anyway;
    - each target's ``lora_B`` keeps ``lora_A``'s output: 2 × rank;
    - the first layer's input (the frozen embedding's output) needs no gradient: its input norm keeps nothing (4h fp32
      and its 4-byte rsqrt), nor does Qwen3's k_norm where k_proj is frozen (4 × kv and 4 bytes per key/value head);
    - once per token: the final norm's cast and ``lm_head``'s input (2h + 2h) and the embedding's token ids (8 bytes).

    With activation checkpointing only the last item changes: each layer keeps its input either way."""
    _lora_family(a)
    t = seq * micro_batch
    h, i, targets = a.hidden, a.intermediate, set(lora.modules)
    q, kv = a.heads * a.dim, (a.kv_heads or a.heads) * a.dim
    once = -(4 * h + 8) * t
    if checkpointing:
        return {"LoRA: frozen head and embedding": once}
    per_layer = -2 * h * a.norms_per_layer + 2 * lora.rank * len(targets)
    per_layer -= 0 if targets & {"q_proj", "k_proj", "v_proj"} else 2 * h
    per_layer -= 0 if targets & {"gate_proj", "up_proj"} else 2 * h
    per_layer -= 0 if "down_proj" in targets else 2 * i
    first = -(4 * h + 4)
    if a.family == "qwen3":
        per_layer -= 2 * (q + kv)
        if "k_proj" not in targets:
            first -= 4 * kv + 4 * (a.kv_heads or a.heads)
    return {"LoRA: frozen layers": a.layers * per_layer * t, "LoRA: first layer": first * t,
            "LoRA: frozen head and embedding": once}


def activation_bytes(a: Arch, seq: int, micro_batch: int, attention: str = "sdpa",
                     checkpointing: bool = False) -> int:
    """What a forward pass leaves alive for backward when the loop keeps only the loss: the activations of
    :func:`activation_terms` plus the fp32 log-softmax the loss saves (4 bytes × tokens ×
    vocabulary), the sense of ``memory_allocated()`` after ``loss = engine(...).loss`` minus before.
    ``attention="eager"`` adds the a·s² scores each layer keeps (softmax input and output, 4·a·s²·b bytes).
    """
    if attention not in ("sdpa", "eager"):
        raise ValueError("attention must be 'sdpa' or 'eager'")
    try:
        total = sum(activation_terms(a, seq, micro_batch, checkpointing).values()) + 4 * seq * micro_batch * a.vocab
    except FormulaError as e:
        raise ValueError(str(e)) from None
    if attention == "eager" and a.family != "gemma2":  # Gemma-2 is counted eager already
        total += (1 if checkpointing else a.layers) * 4 * a.heads * seq * seq * micro_batch
    return total


def param_tensors(a: Arch) -> list[int]:
    """Element counts of every parameter tensor (a tied table once), in the model's order."""
    h, i, v = a.hidden, a.intermediate, a.vocab
    if a.family == "gpt2":
        layer = [h, h, 3 * h * h, 3 * h, h * h, h, h, h, h * i, i, i * h, h]
        return [v * h, a.positions * h] + layer * a.layers + [h, h]
    q, kv = a.heads * a.dim, (a.kv_heads or a.heads) * a.dim
    layer = [h * q, h * kv, h * kv, q * h] + ([q, kv, kv] if a.qkv_bias else []) + ([h] if a.o_bias else [])
    layer += [h * i, h * i, i * h] + ([i, i, h] if a.mlp_bias else []) + [h] * a.norms_per_layer
    layer += [a.dim, a.dim] if a.family == "qwen3" else []
    return [v * h] + layer * a.layers + [h] + ([] if a.tied_embeddings else [v * h])


def arch_setup(a: Arch, gpus: int = 1, stage: int = 0, gpus_per_node: int | None = None,
               offload_optimizer: str = "none", offload_param: str = "none",
               reduce_bucket_size: int = DEFAULT_REDUCE_BUCKET_SIZE, lora: Lora | None = None) -> Setup:
    """The :class:`Setup` of a model shape: its parameters, largest tensor and ZeRO-3 persistent parameters; with
    ``lora`` the adapters are parameters too, and only they train."""
    if lora:
        _lora_family(a)
    adapters = lora_tensors(a, lora.rank, lora.modules) if lora else []
    tensors = param_tensors(a) + adapters
    persistent = sum(n for n in tensors if n <= DEFAULT_PARAM_PERSISTENCE_THRESHOLD) if stage == 3 else 0
    return Setup(params=sum(tensors), gpus=gpus, stage=stage, gpus_per_node=gpus_per_node,
                 offload_optimizer=offload_optimizer, offload_param=offload_param, largest_layer=max(tensors),
                 persistent_params=persistent, reduce_bucket_size=reduce_bucket_size,
                 trainable=sum(adapters) if lora else None)


def accumulation_terms(setup: Setup, zero: Zero = DEFAULT_ZERO) -> dict:
    """Bytes per GPU that gradient accumulation keeps between the micro-steps of one optimizer step, by term.

    Held from the first micro-step's backward to the boundary's, so through every later forward and backward
    (and the no-op ``engine.step()`` between them). DeepSpeed 0.19.8, bf16, ``data_types.grad_accum_dtype``
    unset (it defaults to the model's dtype, engine.py:1806, so ``use_grad_accum_attribute`` is off,
    stage_1_and_2.py:401); counted tensor by tensor in a real engine by ``tests/test_peak_engine.py``:

    - ZeRO-0: ``param.grad``, every 16-bit gradient: the engine reduces only at the boundary (engine.py:3088)
      and autograd accumulates into it. 2Ψ.
    - ZeRO-1, with or without optimizer offload: the same ``param.grad`` (stage 1 reduces only at the boundary:
      engine.py:3088, stage_1_and_2.py:2294), and the ipg bucket that the first gradient hook allocates
      (``setup_buckets``, with contiguous_gradients on as by default: ``reduce_bucket_size`` bf16 elements, :3266;
      a second with overlap_comm, :3275), which only the backward epilogue frees (``_release_ipg_buffers``, :924,
      called at :1061), and at stage 1 that runs at the boundary only. 2Ψ + 2 × reduce_bucket_size.
    - ZeRO-2: ``all_grad_tensors`` (:1039), the accumulated partition: views of the ``grads_in_partition`` of
      the first micro-step (:2192), bf16, 2Ψ/N (the epilogue frees the bucket every micro-step). With optimizer
      offload it accumulates on the host (``accumulated_grads_in_cpu``, :1824, ``self.device`` = 'cpu' :278,
      see :func:`accumulation_host_bytes`) through the staging buffer counted between steps: nothing more here.
    - ZeRO-3 accumulates into the gradient partition it holds between steps (stage3.py:791, :2024-2039): nothing.
    """
    s, psi = setup, setup.trainable or setup.params  # only what trains has gradients
    if s.stage == 0:
        return {"grads16": 2 * psi}
    if s.stage == 1:
        buckets = 2 if zero.overlap_comm else 1  # overlap_comm defaults to off below stage 3
        return {"grads16": 2 * psi, "buckets": 2 * zero.reduce_bucket_size * buckets}
    if s.stage == 2 and s.offload_optimizer == "none":
        return {"grads_accum": 2 * psi / s.gpus}
    return {}


def accumulation_host_bytes(setup: Setup) -> float:
    """Host bytes per rank that gradient accumulation adds: ZeRO-2 + optimizer offload keeps a bf16 copy of every
    gradient of its partition (``accumulated_grads_in_cpu``, stage_1_and_2.py:1824, :1853), allocated at the first
    accumulated micro-step and kept. ZeRO-1 accumulates on the GPU (:func:`accumulation_terms`), ZeRO-3 in its
    host partition, counted between steps."""
    if setup.stage == 2 and setup.offload_optimizer == "cpu":
        return 2 * (setup.trainable or setup.params) / setup.gpus
    return 0


@dataclass
class Peak:
    """Bytes per GPU by term in each phase of a step; ``states`` is what stays between steps."""

    setup: Setup
    arch: Arch
    micro_batch: int
    seq: int
    checkpointing: bool
    states: Estimate
    phases: dict = field(default_factory=dict)
    host_extra: float = 0  # host bytes per rank beyond the model states (gradient accumulation)
    grad_accum: int = 1

    def phase_bytes(self, phase: str) -> int:
        return round(sum(self.phases[phase].values()))

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=self.phase_bytes)

    @property
    def peak_bytes(self) -> int:
        return self.phase_bytes(self.peak_phase)

    @property
    def peak_terms(self) -> dict:
        return {k: round(v) for k, v in self.phases[self.peak_phase].items() if v}

    @property
    def gpu_bytes(self) -> int:
        return self.states.gpu_bytes

    @property
    def cpu_bytes(self) -> int:
        return (self.states.cpu_bytes or 0) + round(self.host_extra * self.setup.per_node)

    def as_dict(self) -> dict:
        return {"gpu_bytes": self.gpu_bytes, "peak_gpu_bytes": self.peak_bytes, "peak_phase": self.peak_phase,
                "peak_terms": self.peak_terms, "cpu_bytes": self.cpu_bytes,
                "phases": {p: self.phase_bytes(p) for p in PHASES},
                "micro_batch": self.micro_batch, "seq": self.seq, "checkpointing": self.checkpointing,
                "grad_accum": self.grad_accum, "model": self.arch.name, "family": self.arch.family, "params": self.arch.params}


def peak(setup: Setup, arch: Arch, micro_batch: int, seq: int, checkpointing: bool = False,
         zero: Zero = DEFAULT_ZERO, grad_accum: int = 1, lora: Lora | None = None) -> Peak:
    """The step's per-GPU memory, phase by phase and term by term. The one function every front end calls.

    With ``grad_accum`` > 1 the later micro-steps run forward and backward with what the earlier ones left
    (:func:`accumulation_terms`); ZeRO-2 + optimizer offload keeps its accumulated gradients on the host.
    With ``lora`` (and ``setup`` from ``arch_setup(..., lora=lora)``) only the adapters have gradients and
    optimizer state, the frozen embedding has no gradient, and the activations are :func:`lora_activation_terms`'s.
    """
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise FormulaError(f"gradient accumulation must be a whole number ≥ 1, not {grad_accum!r}")
    expected = arch_setup(arch, lora=lora).params
    if setup.params != expected or (lora is not None) != setup.lora:
        raise FormulaError(f"the setup's {setup.params:,} parameters are not the model's {expected:,}"
                           f"{' with its LoRA adapters' if lora else ''}: build it with arch_setup()")
    if seq > arch.positions and arch.family == "gpt2":
        raise FormulaError(f"{arch.name} has {arch.positions} positions: `seq` {seq} is longer")
    states = estimate(setup, "allocated")
    s, n = setup, setup.gpus
    psi = setup.trainable or setup.params  # what has gradients and optimizer state
    t = seq * micro_batch
    u = t * arch.vocab  # one byte per token and vocabulary entry
    embedding = 0 if lora else arch.vocab * arch.hidden  # a frozen embedding gets no gradient
    rbs = zero.reduce_bucket_size
    overlap = zero.overlap_comm if zero.overlap_comm is not None else s.stage == 3
    base = {k: v for k, v in states.gpu.items()}
    acts = sum(activation_terms(arch, seq, micro_batch, checkpointing).values())
    if lora:
        acts += sum(lora_activation_terms(arch, seq, micro_batch, lora, checkpointing).values())

    # ZeRO-3 with partitioned parameters (several GPUs, or offloaded): the coordinator keeps fetched
    # parameters until stage3_max_live_parameters are resident (partitioned_param_coordinator.py:
    # __n_available_params), so up to that many 16-bit parameters are live in forward and backward.
    partitioned = s.stage == 3 and (n > 1 or s.offload_param == "cpu")
    gathered = 2 * min(zero.max_live_parameters, s.params - s.persistent_params) if partitioned else 0

    held = accumulation_terms(s, zero) if grad_accum > 1 else {}  # what earlier micro-steps leave
    forward = {**base, **held, "activations": acts, "log_softmax": 4 * u, "logits": 2 * u, "logits_fp32": 4 * u,
               "gathered": gathered}
    backward_start = {**base, **held, "activations": acts, "log_softmax": 4 * u, "loss_grads": 8 * u,
                      "gathered": gathered}

    # End of backward: the 16-bit gradients and what is in flight.
    if s.stage == 0:
        # engine.py allreduce_bucket: self.flatten(bucket), up to reduce_bucket_size elements; the embedding
        # gradient's bf16 copies (torch/_decomp embedding_dense_backward) come at another moment: the larger.
        end = {"grads16": 2 * psi, "buckets": max(2 * min(rbs, psi), 4 * embedding)}
    elif s.stage in (1, 2) and s.offload_optimizer == "cpu":
        # the gradients go to the host as they are reduced; the ipg buffers (stage_1_and_2.py:3266) stay
        end = {"buckets": 2 * rbs * (2 if overlap else 1), "embedding_grad": 8 * embedding}
    elif s.stage == 1:
        # all 16-bit gradients, and their flattened copy for the reduction (measured: 2Ψ more on one GPU)
        end = {"grads16": 2 * psi, "buckets": 2 * psi / n}
    elif s.stage == 2:
        # grads_in_partition (stage_1_and_2.py:2192), the ipg buffer(s) of reduce_bucket_size (:3266, :3275
        # with overlap_comm), and the tied embedding's gradient: param.grad, its fp32 accumulation, the sum
        end = {"grads16": 2 * psi / n, "buckets": 2 * rbs * (2 if overlap else 1), "embedding_grad": 6 * embedding}
    else:  # ZeRO-3 reduces into the partition and ipg bucket already counted between steps
        end = {}
    # ZeRO-2 accumulating: this backward's new grads_in_partition beside the accumulated partition until the
    # epilogue adds them (stage_1_and_2.py:1045). ZeRO-0/1's accumulated gradients are the param.grad of `end`.
    backward_end = {**base, **end, "grads_accum": held.get("grads_accum", 0), "gathered": gathered}
    backward = max(backward_start, backward_end, key=lambda d: sum(d.values()))

    # Optimizer step
    if s.offload_optimizer == "cpu":
        step_terms = {}  # DeepSpeedCPUAdam on the host; the updated 16-bit partition is copied in place
    elif s.stage == 0:
        # fused_optimizer.py:286-291: p.grad.to(fp32) for every parameter, then their flattened copy
        step_terms = {"grads16": 2 * psi, "step_grads": 8 * psi}
    elif s.stage in (1, 2):
        # stage_1_and_2.py: grads_in_partition (:2192), flatten_dense_tensors_aligned (:1399) and
        # single_grad_partition = ....to(fp32) (:3118), all this rank's partition
        step_terms = {"grads16": 2 * psi / n, "step_grads": 6 * psi / n}
    else:
        # stage3.py _prepare_fp32_grad_for_sub_group: flatten (bf16) then .to(fp32), one sub-group at a time
        step_terms = {"step_grads": 6 * min(zero.sub_group_size, -(-psi // n))}
    # engine.step() before the boundary updates nothing, with the accumulated terms still held
    step = max({**base, **step_terms}, {**base, **held}, key=lambda d: sum(d.values()))
    return Peak(setup, arch, micro_batch, seq, checkpointing, states,
                {"forward": forward, "backward": backward, "step": step},
                accumulation_host_bytes(s) if grad_accum > 1 else 0, grad_accum)


# Each peak term in one of the calculator's bar categories (formulas.CATEGORIES)
_CATEGORY = {"activations": "activations", "logits": "activations", "logits_fp32": "activations",
             "log_softmax": "activations", "loss_grads": "activations", "grads16": "step", "buckets": "step",
             "embedding_grad": "step", "step_grads": "step", "gathered": "params", "grads_accum": "step"}


def by_category(pk: Peak) -> dict:
    """The terms at the peak in the calculator's categories (the bars of the widget and the plots)."""
    out: dict = {}
    for term, value in pk.peak_terms.items():
        cat = _CATEGORY.get(term, term)
        out[cat] = out.get(cat, 0) + value
    return out


def bar(est: Estimate, pk: Peak) -> dict:
    """A family's between-steps estimate with the step's additions from :func:`peak` on top: one stacked bar."""
    states = pk.states.gpu
    extra = {c: v - states.get(c, 0) for c, v in by_category(pk).items()}
    out = {c: v for c, v in est.gpu.items()}
    for cat in ("params", "step", "activations"):
        if extra.get(cat, 0) > 0:
            out[cat] = out.get(cat, 0) + extra[cat]
    return out


def peak_of(arch: Arch, gpus: int = 1, stage: int = 0, micro_batch: int = 1, seq: int | None = None,
            checkpointing: bool = False, offload_optimizer: str = "none", offload_param: str = "none",
            gpus_per_node: int | None = None, zero: Zero = DEFAULT_ZERO, grad_accum: int = 1,
            lora: Lora | None = None) -> Peak:
    """:func:`peak` of a model shape (``seq`` defaults to the shape's training length)."""
    setup = arch_setup(arch, gpus, stage, gpus_per_node, offload_optimizer, offload_param, zero.reduce_bucket_size,
                       lora)
    return peak(setup, arch, micro_batch, arch.seq if seq is None else seq, checkpointing, zero, grad_accum, lora)
