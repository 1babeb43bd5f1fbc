"""Communication per training step: which collectives each ZeRO stage runs, how many bytes, and how long that takes.

The one place the course computes it: the notebook's calculator and figures, ``python -m dscourse.comm``, the tests
and the GPU benchmark that compares NCCL's measured bus bandwidth against it all call these functions.

Two counts, side by side:

- **the ZeRO paper** (Rajbhandari et al. 2020, arXiv:1910.02054, section 7; ``paper_transfers``): data parallelism
  all-reduces the gradients (2Ψ per rank: a ring all-reduce is a reduce-scatter plus an all-gather); ZeRO-1/2
  reduce-scatter the gradients and all-gather the parameters (2Ψ); ZeRO-3 gathers the parameters for forward and
  again for backward and reduce-scatters the gradients (3Ψ).
- **what DeepSpeed 0.19.8 sends** (``deepspeed_collectives``, the default everywhere): measured with DeepSpeed's own
  comms logger on 2 and 4 CPU ranks (``dscourse/data/cpu_comm_volume.json``; the model equals it to the byte in
  all but one configuration, a 4096× smaller Llama-2-7B whose partial re-gathers with prefetching on are an estimate:
  0.1% off; with prefetching off they are replayed over the module trace, exactly). Its default ZeRO-1/2 all-reduce the gradients
  (``use_multi_rank_bucket_allreduce``) and then all-gather: 3Ψ. Its ZeRO-3 keeps gathered parameters for the
  backward pass when they are reused within ``stage3_max_reuse_distance``: 2Ψ for a small model, close to 3Ψ for 7B.
  Each collective names the DeepSpeed source line that decides it.

Time (ring algorithms, bandwidth term only, as in NVIDIA's nccl-tests ``doc/PERFORMANCE.md``): a collective on a
message of S bytes over N ranks has *algorithm bandwidth* algbw = S / t and *bus bandwidth*
busbw = algbw × 2(N−1)/N for all-reduce, algbw × (N−1)/N for all-gather and reduce-scatter (S is the full,
gathered size), algbw for reduce. busbw is what each rank's link really carries per second, comparable to the
hardware's link speed whatever N is, so ``t = S × factor / busbw``. Bandwidths here are per GPU, one direction,
in bytes/s.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

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
    """A collective the ZeRO paper counts (``paper_transfers``), by its full, gathered size."""
    op: str
    what: str
    size_bytes: float  # the full message (Ψ × dtype bytes)
    times: int  # per optimizer step

    def sent_per_rank(self, world_size: int) -> float:
        return self.size_bytes * bus_factor(self.op, world_size) * self.times


def paper_transfers(params: float, stage: int, dtype_bytes: int = 2, grad_accum: int = 1) -> list[Transfer]:
    """The collectives one optimizer step runs as the ZeRO paper counts them (section 7): 2Ψ for ZeRO-0/1/2, 3Ψ for
    ZeRO-3. With accumulation, what DeepSpeed's engine sends every micro-batch is counted per micro-batch."""
    _check(params, stage, grad_accum)
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


def _check(params, stage, grad_accum, world_size=1):
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, not {stage!r}")
    if params <= 0:
        raise ValueError(f"parameter count must be positive, not {params!r}")
    if grad_accum < 1:
        raise ValueError(f"gradient accumulation must be at least 1, not {grad_accum!r}")
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, not {world_size!r}")


# ------------------------------------------------------------------ what DeepSpeed 0.19.8 really sends
#
# Measured with DeepSpeed's own comms logger on CPU ranks (dscourse/scripts/comm_volume.py, the table in
# dscourse/data/cpu_comm_volume.json). The comms logger (deepspeed/comm/comm.py timed_op, comm/utils.py
# get_msg_size_from_args) records each call's msg_size as the bytes of its *input* tensor: the full tensor for
# all_reduce, reduce and reduce_scatter, this rank's shard for all_gather.

LOGGED_OPS = ("all_reduce", "all_gather", "reduce_scatter", "reduce")
# the comms logger's record names (deepspeed/comm/comm.py) -> the collective they are
LOG_NAMES = {"all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce", "inference_all_reduce": "all_reduce",
             "all_gather": "all_gather", "all_gather_into_tensor": "all_gather",
             "reduce_scatter": "reduce_scatter", "reduce_scatter_tensor": "reduce_scatter", "reduce": "reduce"}

ZERO_DEFAULTS = {  # deepspeed/runtime/zero/config.py, DeepSpeedZeroConfig
    "use_multi_rank_bucket_allreduce": True, "reduce_scatter": True,
    "stage3_param_persistence_threshold": 100_000, "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000, "stage3_prefetch_bucket_size": 50_000_000,
    "zero_hpz_partition_size": 1,
}
# Keys measured to change how many calls a step makes but not one byte of what they carry, and why.
NO_BYTES = {
    "overlap_comm": "moves the reduction to another stream (stage_1_and_2.py average_tensor, stage3.py "
                    "__add_grad_to_ipg_bucket); the same collectives run",
    "reduce_bucket_size": "splits the gradient reduction into more calls of the same total "
                          "(stage_1_and_2.py allreduce_and_scatter, "
                          "stage3.py reduce_independent_p_g_buckets_and_remove_grads)",
    "allgather_bucket_size": "ignored where torch has all_gather_into_tensor: runtime/utils.py all_gather_dp_groups "
                             "(line 1021) gathers each group in one call",
    "contiguous_gradients": "a copy into a flat buffer before the same reduction",
}
# Keys that do not run on CPU ranks, with DeepSpeed 0.19.8's error (see the table's "errors").
CPU_UNSUPPORTED = {
    "zero_quantized_weights": "the quantizer kernel has no CPU build: partition_parameters.py Init.__init__ (line "
                              "1154) builds CUDAQuantizer, which loads QuantizerBuilder, and "
                              "ops/op_builder/cpu/no_impl.py raises 'This op had not been implemented on CPU backend'",
    "zero_quantized_gradients": "the same kernel, loaded by runtime/comm/coalesced_collectives.py "
                                "all_to_all_quant_reduce (line 34) in the first backward pass",
}


@dataclass(frozen=True)
class Collective:
    """One kind of collective in a DeepSpeed step: what the comms logger records, and what a rank puts on the wire."""
    op: str  # one of LOGGED_OPS
    what: str
    logged: float  # msg_size summed over the calls of one occurrence (the comms logger's convention)
    times: int  # occurrences per optimizer step
    ranks: int  # ranks taking part (the hpz group for ZeRO++ secondary gathers)
    source: str  # the DeepSpeed 0.19.8 code that decides it

    @property
    def logged_per_step(self) -> float:
        return self.logged * self.times

    def wire_per_rank(self) -> float:
        """Bytes each rank sends per optimizer step with ring algorithms (it receives as many)."""
        n = self.ranks
        if self.op == "all_reduce":
            per = self.logged * 2 * (n - 1) / n
        elif self.op == "all_gather":
            per = self.logged * (n - 1)  # logged is this rank's shard: it sends it to the N-1 others
        else:  # reduce_scatter of the full tensor; reduces of each owner's slice, summed: (N-1)/N of it on average
            per = self.logged * (n - 1) / n
        return per * self.times

    def seconds(self, bus_bw: float) -> float:
        """Seconds at bus bandwidth ``bus_bw`` (nccl-tests: t = full size × bus factor / busbw)."""
        full = self.logged * self.ranks if self.op == "all_gather" else self.logged
        factor = 1.0 if self.op == "reduce" else bus_factor(self.op, self.ranks)  # nccl-tests: reduce busbw = algbw
        return full * factor / bus_bw * self.times


def zero_settings(zero: dict | None = None) -> dict:
    """DeepSpeed's defaults updated with ``zero`` (zero_optimization keys); refuses what the model does not cover."""
    zero = dict(zero or {})
    for key, why in CPU_UNSUPPORTED.items():
        if zero.get(key):
            raise ValueError(f"{key} is not modelled: it could not be measured on CPU ranks ({why})")
    unknown = set(zero) - set(ZERO_DEFAULTS) - set(NO_BYTES) - set(CPU_UNSUPPORTED) - {"stage"}
    if unknown:
        raise ValueError(f"not a key the communication model knows: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(set(ZERO_DEFAULTS) | set(NO_BYTES)))})")
    return {**ZERO_DEFAULTS, **{k: v for k, v in zero.items() if k in ZERO_DEFAULTS}}


def zero3_regathered(params: float, zero: dict | None = None, persistent: float = 0, tied: float = 0) -> float:
    """Elements ZeRO-3 gathers a second time in each micro-batch's backward pass (0: one gather per micro-batch),
    from the model's sizes alone (without its module trace: :func:`zero3_traced_gathers` replays it exactly).

    The parameter coordinator releases a module's parameters after its forward unless their next use lies within
    ``stage3_max_reuse_distance`` elements of the recorded trace, or the prefetcher has already fetched them for
    that later use (partitioned_param_coordinator.py ``__params_to_release``, lines 634-662). The trace of a
    micro-batch uses every non-persistent element twice (forward and backward; a tied embedding twice in each):

    - the whole trace within the reuse distance, or within the prefetch window (``stage3_prefetch_bucket_size``,
      capped by ``stage3_max_live_parameters``; ``_fetch_sub_module_impl`` line 451): nothing is released, one gather;
    - otherwise the parameters used in the last ``max_reuse_distance`` elements before the backward pass are kept and
      the rest gathered again (measured on a 4096× smaller Llama-2-7B with the defaults / 4096: 0.1% off;
      with distances under one layer the module granularity shows: 2% off for gpt2-tiny at 40k, where
      :func:`zero3_traced_gathers` is exact).
    """
    z = zero_settings(zero)
    live = params - persistent + tied  # the elements one pass uses (a tied weight counted once per module using it)
    if zero3_regime(params, z, persistent, tied) == "kept":
        return 0.0
    return max(0.0, live - z["stage3_max_reuse_distance"])


def zero3_regime(params: float, zero: dict | None = None, persistent: float = 0, tied: float = 0,
                 traced: bool = False) -> str:
    """``"kept"`` (one gather per micro-batch), ``"released"`` (every use gathers: reuse distance 0), ``"traced"``
    (some parameters gathered again, replayed exactly over the module trace: ``traced`` says one is known, and
    prefetching is off) or ``"estimate"`` (``zero3_regathered``'s rule, not exact)."""
    z = zero_settings(zero)
    window = min(z["stage3_prefetch_bucket_size"], z["stage3_max_live_parameters"])
    if max(z["stage3_max_reuse_distance"], window) >= 2 * (params - persistent + tied):
        return "kept"
    if z["stage3_max_reuse_distance"] == 0:
        return "released"
    return "traced" if traced and window == 0 else "estimate"


def module_trace(spec: dict) -> list[list[tuple[str, int]]]:
    """The modules one forward pass of a ``dscourse.models`` shape runs, in order, each as its own parameters
    ``(name, elements)``: the order ZeRO-3's parameter coordinator records (its ``__submodule_order``; the backward
    pass runs it in reverse). Modules without parameters (blocks, dropout, activations) are left out: they add
    nothing to a reuse distance. A tied LM head names the embedding's weight. ``spec``: ``Arch.as_dict()``."""
    h, v, inter, layers = spec["hidden"], spec["vocab"], spec["intermediate"], spec["layers"]
    if spec["family"] == "gpt2":
        def linear(name, n_in, n_out):
            return [(f"{name}.weight", n_in * n_out), (f"{name}.bias", n_out)]

        def norm(name):
            return [(f"{name}.weight", h), (f"{name}.bias", h)]

        trace = [[("wte.weight", v * h)], [("wpe.weight", spec["positions"] * h)]]
        for i in range(layers):
            b = f"h.{i}"
            trace += [norm(f"{b}.ln_1"), linear(f"{b}.attn.c_attn", h, 3 * h), linear(f"{b}.attn.c_proj", h, h),
                      norm(f"{b}.ln_2"), linear(f"{b}.mlp.c_fc", h, inter), linear(f"{b}.mlp.c_proj", inter, h)]
        return trace + [norm("ln_f"), [("wte.weight" if spec["tied_embeddings"] else "lm_head.weight", v * h)]]
    if spec["family"] == "llama":
        kv = h // spec["heads"] * (spec["kv_heads"] or spec["heads"])
        trace = [[("embed_tokens.weight", v * h)]]
        for i in range(layers):
            b = f"layers.{i}"
            # LlamaDecoderLayer.forward: norm, q/k/v/o, norm, then down_proj(act(gate_proj(x)) * up_proj(x))
            trace += [[(f"{b}.input_layernorm.weight", h)], [(f"{b}.q_proj.weight", h * h)],
                      [(f"{b}.k_proj.weight", h * kv)], [(f"{b}.v_proj.weight", h * kv)],
                      [(f"{b}.o_proj.weight", h * h)], [(f"{b}.post_attention_layernorm.weight", h)],
                      [(f"{b}.gate_proj.weight", h * inter)], [(f"{b}.up_proj.weight", h * inter)],
                      [(f"{b}.down_proj.weight", inter * h)]]
        head = "embed_tokens.weight" if spec["tied_embeddings"] else "lm_head.weight"
        return trace + [[("norm.weight", h)], [(head, v * h)]]
    raise ValueError(f"no module trace for the {spec['family']!r} family: use 'gpt2' or 'llama'")


def zero3_traced_gathers(trace: list[list[tuple[str, int]]], zero: dict | None = None) -> int:
    """Elements ZeRO-3 all-gathers in one micro-batch, replaying DeepSpeed 0.19.8's release rule over the module
    ``trace`` (:func:`module_trace`; forward, then backward in reverse), with prefetching off.

    Each module's fetch gathers those of its parameters that are not available (``fetch_sub_module``); parameters of
    at most ``stage3_param_persistence_threshold`` elements are always available. After the module, its parameters
    are released unless one of them is used by the modules that follow within ``stage3_max_reuse_distance``
    elements: ``__params_to_release`` walks the trace from the next step, adding every visited parameter's elements,
    and stops before the first module it reaches at or past the distance (partitioned_param_coordinator.py lines
    634-662; ``fetch_sub_module`` has already advanced ``__step_id``, line 490).
    """
    z = zero_settings(zero)
    threshold, distance = z["stage3_param_persistence_threshold"], z["stage3_max_reuse_distance"]
    steps = trace + trace[::-1]
    available, gathered = set(), 0
    for i, module in enumerate(steps):
        own = [(name, n) for name, n in module if n > threshold]
        for name, n in own:
            if name not in available:
                gathered += n
                available.add(name)
        release, traversed = {name for name, _ in own}, 0
        for later in steps[i + 1:]:
            if traversed >= distance:
                break
            for name, n in later:
                release.discard(name)
                traversed += n
        available -= release
    return gathered


def deepspeed_collectives(params: float, stage: int, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1,
                          zero: dict | None = None, persistent: float = 0, tied: float = 0,
                          trace: list | None = None) -> list[Collective]:
    """The collectives one optimizer step of DeepSpeed 0.19.8 runs, with the comms logger's byte counts.

    ``params``: elements; ``persistent``: those ZeRO-3 keeps whole (each at most ``stage3_param_persistence_threshold``
    elements: biases and norms; ``persistent_elements`` counts them); ``tied``: elements of a weight two modules use
    (GPT-2's embedding and LM head). Padding of partitions to a multiple of the world size is left out (at most N
    elements per parameter for ZeRO-3, per parameter group for ZeRO-1/2). ``trace``: the model's modules
    (:func:`module_trace`), where known: ZeRO-3's partial re-gathers are then replayed exactly.
    """
    _check(params, stage, grad_accum, world_size)
    z = zero_settings(zero)
    n, b, ga = world_size, dtype_bytes, grad_accum
    grads = params * b
    if n == 1:
        return []
    if stage == 0:
        return [Collective("all_reduce", "gradients, at the accumulation boundary", grads, 1, n,
                           "engine.py allreduce_gradients (lines 3088-3095) -> allreduce_bucket dist.all_reduce")]
    out = []
    if stage in (1, 2):
        per_micro = stage == 2  # engine.py allreduce_gradients line 3085: stage >= 2 reduces every micro-batch
        times = ga if per_micro else 1
        when = "every micro-batch" if per_micro else "at the accumulation boundary"
        if not z["reduce_scatter"]:
            out.append(Collective("all_reduce", f"gradients, {when} (reduce_scatter false)", grads, times, n,
                                  "stage_1_and_2.py average_tensor line 1618 -> gradient_reduction_w_predivide "
                                  "dist.all_reduce (line 1509)"))
        elif z["use_multi_rank_bucket_allreduce"]:
            out.append(Collective("all_reduce", f"gradients, {when} (use_multi_rank_bucket_allreduce)", grads, times,
                                  n, "stage_1_and_2.py average_tensor line 1695 -> allreduce_and_scatter -> "
                                     "allreduce_bucket dist.all_reduce (line 2384)"))
        else:
            out.append(Collective("reduce", f"each slice to the rank that owns it, {when}", grads, times, n,
                                  "stage_1_and_2.py average_tensor line 1697 -> allreduce_no_retain(rank=dst) -> "
                                  "allreduce_bucket dist.reduce (line 2387)"))
        out.append(Collective("all_gather", "updated bf16 partitions, after the optimizer step", grads / n, 1, n,
                              "stage_1_and_2.py step line 3155 all_gather_dp_groups -> runtime/utils.py "
                              "all_gather_into_tensor_dp_groups (line 1016)"))
        out.append(Collective("all_reduce", "overflow flag (uint8) and gradient norm (fp32)", 1 + 4, 1, n,
                              "stage_1_and_2.py has_overflow (line 3242), get_grad_norm_direct (line 2693)"))
        return out
    # ZeRO-3
    k = z["zero_hpz_partition_size"]
    hpz = 1 < k < n
    if hpz and n % k:
        raise ValueError(f"zero_hpz_partition_size {k} must divide the world size {n}")
    nonpersistent = params - persistent
    if zero3_regime(params, z, persistent, tied, traced=trace is not None) == "traced":
        gathered = zero3_traced_gathers(trace, z)
        again = gathered - nonpersistent
    else:
        again = zero3_regathered(params, z, persistent, tied)
        extra_forward = tied if again else 0  # released between its two forward uses too
        gathered = nonpersistent + extra_forward + again
    gathers = gathered * b  # full bytes gathered per micro-batch
    source = ("partitioned_param_coordinator.py fetch_sub_module -> __all_gather_params -> partition_parameters.py "
              "all_gather_coalesced (line 1362); released by __params_to_release (lines 634-662)")
    if hpz:  # ZeRO++: the first gather of a step reads the primary shards of all N ranks and leaves a secondary copy
        # sharded over the k ranks of the node; every later gather in that step reads it (partition_parameters.py
        # all_gather_coalesced lines 1572-1575); stage3.py _post_step invalidates it (line 2846)
        first = nonpersistent * b
        out.append(Collective("all_gather", "parameters, first gather of the step (all ranks)", first / n, 1, n,
                              source))
        if ga * gathers - first:
            out.append(Collective("all_gather", "parameters, later gathers from the hpz secondary copy",
                                  (ga * gathers - first) / k, 1, k, source))
    else:
        out.append(Collective("all_gather", "parameters for forward" + (" and again for backward" if again else
                                                                        ", kept for backward"),
                              gathers / n, ga, n, source))
    if persistent:
        out.append(Collective("all_gather", "persistent parameters, after the optimizer step", persistent * b / n,
                              1, n, "stage3.py _post_step (line 2841)"))
    if z["reduce_scatter"]:
        out.append(Collective("reduce_scatter", "gradients, every micro-batch", grads, ga, n,
                              "stage3.py __avg_scatter_grads (line 1931) -> coalesced_collectives.py "
                              "reduce_scatter_coalesced (line 128)"))
    else:
        out.append(Collective("all_reduce", "gradients, every micro-batch (reduce_scatter false)", grads, ga, n,
                              "stage3.py __reduce_and_partition_ipg_grads line 1673 -> __avg_scatter_contiguous_grads "
                              "dist.all_reduce (line 1880)"))
    out.append(Collective("all_reduce", "gradient norm (fp64)", 8, 1, n, "stage3.py get_grad_norm_direct (line 2469)"))
    return out


def persistent_elements(numels, threshold: int = ZERO_DEFAULTS["stage3_param_persistence_threshold"]) -> int:
    """Elements of the parameters ZeRO-3 keeps whole: those of at most ``threshold`` elements
    (partition_parameters.py ``_convert_to_deepspeed_param``, line 1292)."""
    return sum(x for x in numels if x <= threshold)


def logged_bytes(collectives: list[Collective]) -> dict:
    """Bytes per optimizer step by collective, as the comms logger records them (msg_size × count)."""
    out = dict.fromkeys(LOGGED_OPS, 0.0)
    for c in collectives:
        out[c.op] += c.logged_per_step
    return out


def logger_totals(entries) -> dict:
    """``logged_bytes`` from the comms logger's own records: ``[record name, msg_size, count]`` triples
    (``dscourse.scripts.comm_volume``); records that are none of LOGGED_OPS (broadcast) are left out."""
    out = dict.fromkeys(LOGGED_OPS, 0)
    for name, size, count in entries:
        if name in LOG_NAMES:
            out[LOG_NAMES[name]] += size * count
    return out


def step_report(params: float, stage: int, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1,
                zero: dict | None = None, persistent: float = 0, tied: float = 0, trace: list | None = None) -> dict:
    """One optimizer step of DeepSpeed 0.19.8 beside the paper: the JSON ``python -m dscourse.comm --stage`` prints."""
    cs = deepspeed_collectives(params, stage, world_size, dtype_bytes, grad_accum, zero, persistent, tied, trace)
    paper = sum(t.sent_per_rank(world_size) for t in paper_transfers(params, stage, dtype_bytes, grad_accum))
    wire = sum(c.wire_per_rank() for c in cs)
    return {
        "params": params, "stage": stage, "world_size": world_size, "dtype_bytes": dtype_bytes,
        "grad_accum": grad_accum, "zero": zero_settings(zero),
        "logged_bytes": logged_bytes(cs), "wire_bytes_per_rank": wire, "paper_wire_bytes_per_rank": paper,
        "zero3_gathers": zero3_regime(params, zero, persistent, tied, trace is not None) if stage == 3 else None,
        "psi_multiple": wire / (params * dtype_bytes) * world_size / (world_size - 1) if world_size > 1 else 0.0,
        "collectives": [{"op": c.op, "what": c.what, "logged_bytes": c.logged, "times": c.times, "ranks": c.ranks,
                         "wire_bytes_per_rank": c.wire_per_rank(), "source": c.source} for c in cs],
    }


MEASURED = Path(__file__).parent / "data" / "cpu_comm_volume.json"


def load_measured(path: str | Path | None = None) -> dict:
    """The committed comms-logger table (``benchmarks/comm_volume_cpu.py``)."""
    return json.loads(Path(path or MEASURED).read_text())


def model_for_run(run: dict, shapes: dict, dtype_bytes: int = 2) -> dict:
    """``step_report`` for one measured configuration, its model's sizes taken from the table's ``shapes``."""
    shape = shapes[run["shape"]]
    numels = shape["param_numels"]
    z = zero_settings(run["zero"])
    persistent = persistent_elements(numels, z["stage3_param_persistence_threshold"]) if run["stage"] == 3 else 0
    trace = module_trace(shape["spec"])
    distinct = dict(param for module in trace for param in module)  # a tied weight once, as parameters() yields it
    if sorted(distinct.values()) != sorted(numels):
        raise ValueError(f"module_trace({run['shape']}) does not hold the measured model's parameters")
    return step_report(sum(numels), run["stage"], run["world_size"], dtype_bytes, run["grad_accum"], run["zero"],
                       persistent, shape["tied"], trace)


def measured_vs_model(data: dict | None = None) -> list[dict]:
    """Per measured configuration: the comms logger's bytes per collective, the model's, and the largest relative
    error over the collectives (0 where both are 0)."""
    data = data or load_measured()
    rows = []
    for run in data["runs"]:
        if "error" in run:
            continue
        got = logger_totals(run["logged"])
        report = model_for_run(run, data["shapes"])
        want = report["logged_bytes"]
        err = max(abs(want[k] - got[k]) / got[k] if got[k] else float(want[k] != 0) for k in LOGGED_OPS)
        rows.append({"name": run["name"], "world_size": run["world_size"], "stage": run["stage"],
                     "grad_accum": run["grad_accum"], "zero": run["zero"], "logged": got, "model": want,
                     "error": err, "zero3_gathers": report["zero3_gathers"], "ranks_agree": run["ranks_agree"]})
    return rows


def logged_wire_per_rank(logged: dict, world_size: int) -> float:
    """Bytes each rank puts on the wire (ring algorithms) for the comms logger's totals, all on ``world_size``
    ranks (so not for ZeRO++'s node-local gathers)."""
    n = world_size
    return (logged["all_reduce"] * 2 * (n - 1) / n + logged["all_gather"] * (n - 1)
            + (logged["reduce_scatter"] + logged["reduce"]) * (n - 1) / n)


MEASURED_FIGURE = ("z0-ga1", "z1-ga1", "z2-ga1", "z2-no-multi-rank", "z2-ga2", "z3-p0-ga1", "z3-p0-reuse0-no-prefetch",
                   "z3-p0-ga2")


def step_transfers(params: float, stage: int, dtype_bytes: int = 2, grad_accum: int = 1) -> list[Transfer]:
    """The ZeRO paper's collectives (kept for callers of the paper model; ``paper_transfers``)."""
    return paper_transfers(params, stage, dtype_bytes, grad_accum)


def step_volume_bytes(params: float, stage: int, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1,
                      model: str = "deepspeed", zero: dict | None = None) -> float:
    """Bytes each rank sends (and receives) per optimizer step. ``model="deepspeed"``: what DeepSpeed 0.19.8 sends
    (3Ψ·(N−1)/N for its default ZeRO-1/2); ``"paper"``: 2Ψ·(N−1)/N for ZeRO-0/1/2, 3Ψ·(N−1)/N for ZeRO-3."""
    if model == "paper":
        return sum(t.sent_per_rank(world_size) for t in paper_transfers(params, stage, dtype_bytes, grad_accum))
    _model(model)
    return sum(c.wire_per_rank() for c in deepspeed_collectives(params, stage, world_size, dtype_bytes, grad_accum,
                                                                zero))


def step_time(params: float, stage: int, world_size: int, bus_bw: float, dtype_bytes: int = 2,
              grad_accum: int = 1, latency: float = 0.0, model: str = "deepspeed", zero: dict | None = None) -> float:
    """Seconds of communication per optimizer step at bus bandwidth ``bus_bw`` (no overlap with compute;
    ``latency`` per ring step for the paper's model only)."""
    if model == "paper":
        return sum(t.times * collective_time(t.op, t.size_bytes, world_size, bus_bw, latency)
                   for t in paper_transfers(params, stage, dtype_bytes, grad_accum))
    _model(model)
    if bus_bw <= 0:
        raise ValueError("bandwidth must be positive")
    return sum(c.seconds(bus_bw) for c in deepspeed_collectives(params, stage, world_size, dtype_bytes, grad_accum,
                                                                zero))


def _model(model: str) -> None:
    if model not in ("deepspeed", "paper"):
        raise ValueError(f"model must be 'deepspeed' or 'paper', not {model!r}")


def psi_multiple(stage: int, grad_accum: int = 1) -> float:
    """The paper's volume in units of Ψ·dtype_bytes as N → ∞: 2 for ZeRO-0/1/2 and 3 for ZeRO-3 (no accumulation).
    DeepSpeed's own multiple depends on its knobs and, for ZeRO-3, on the model (``step_report``'s psi_multiple)."""
    return sum(t.times * (2 if t.op == "all_reduce" else 1) for t in paper_transfers(1, stage, 1, grad_accum))


def table(params: float, world_size: int, bandwidths: dict | None = None, dtype_bytes: int = 2,
          grad_accum: int = 1, zero: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per stage, the volume per rank DeepSpeed sends and the paper counts, and DeepSpeed's time at
    each bandwidth."""
    bandwidths = bandwidths or BANDWIDTHS
    header = ["stage", "volume/rank", "paper", *(short_name(name) for name in bandwidths)]
    rows = []
    for stage in range(4):
        vol = step_volume_bytes(params, stage, world_size, dtype_bytes, grad_accum, zero=zero)
        paper = step_volume_bytes(params, stage, world_size, dtype_bytes, grad_accum, model="paper")
        rows.append([f"ZeRO-{stage}", format_volume(vol), format_volume(paper),
                     *(format_seconds(step_time(params, stage, world_size, bw, dtype_bytes, grad_accum, zero=zero))
                       for bw in bandwidths.values())])
    return header, rows


def short_name(name: str) -> str:
    """An interconnect's name without its parenthesis (a column header)."""
    return name.split(" (")[0]


def format_volume(n: float) -> str:
    """A communication volume to 3 significant digits (``dscourse.memory.format_bytes`` prints memory to 0.01 GB)."""
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


def main(argv=None) -> int:
    from .cli_util import OneLineParser, UsageError, positive_int
    from .memory import parse_count
    from .tables import text_table

    p = OneLineParser(prog="python -m dscourse.comm",
                      description="Communication volume and time per training step for ZeRO-0/1/2/3: what "
                                  "DeepSpeed 0.19.8 sends (its comms logger's byte counts), beside the ZeRO paper.")
    p.add_argument("--params", required=True, help="parameter count, e.g. 7e9 or 7B")
    p.add_argument("--gpus", type=positive_int, required=True, help="data-parallel ranks")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="communication data type")
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--stage", type=int, choices=[0, 1, 2, 3], default=None,
                   help="one stage: its collectives, what the comms logger records and the source line deciding each")
    p.add_argument("--zero", default=None, metavar="JSON",
                   help='zero_optimization keys, e.g. \'{"use_multi_rank_bucket_allreduce": false}\'')
    p.add_argument("--json", action="store_true", help="with --stage: one JSON object")
    p.add_argument("--bandwidth", type=float, action="append", default=None,
                   help="bus bandwidth in GB/s (repeatable; default: NVLink, InfiniBand, Ethernet presets)")
    try:
        args = p.parse_args(argv)
        try:
            zero = json.loads(args.zero) if args.zero else None
            if zero is not None and not isinstance(zero, dict):
                raise ValueError("not a JSON object")
            zero_settings(zero)
        except ValueError as e:
            raise UsageError(f"--zero: {str(e).splitlines()[0]}") from None
        if args.json and args.stage is None:
            raise UsageError("--json needs --stage")
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
    nbytes = DTYPE_BYTES[args.dtype]
    if args.stage is not None:
        try:
            report = step_report(params, args.stage, args.gpus, nbytes, args.grad_accum, zero)
        except ValueError as e:
            print(f"python -m dscourse.comm: error: {e}", file=sys.stderr)
            return 2
        report["seconds"] = {name: sum(c.seconds(bw) for c in deepspeed_collectives(
            params, args.stage, args.gpus, nbytes, args.grad_accum, zero)) for name, bw in bws.items()}
        if args.json:
            print(json.dumps(report, indent=1))
            return 0
        print(f"ZeRO-{args.stage}, {params / 1e9:.3g}B parameters, {args.gpus} ranks, {args.dtype}, gradient "
              f"accumulation {args.grad_accum}: DeepSpeed 0.19.8's collectives per optimizer step")
        print(text_table(["collective", "what", "logged msg_size", "x", "wire/rank", "decided by"],
                         [[c["op"], c["what"], format_volume(c["logged_bytes"]), c["times"],
                           format_volume(c["wire_bytes_per_rank"]), c["source"]] for c in report["collectives"]]))
        print(f"wire bytes per rank: {format_volume(report['wire_bytes_per_rank'])} "
              f"(the paper: {format_volume(report['paper_wire_bytes_per_rank'])})")
        return 0
    header, rows = table(params, args.gpus, bws, nbytes, args.grad_accum, zero)
    print(f"{params / 1e9:.3g}B parameters, {args.gpus} ranks, {args.dtype}, gradient accumulation "
          f"{args.grad_accum}: bytes each rank sends per optimizer step (DeepSpeed 0.19.8, and as the ZeRO paper "
          f"counts them), and DeepSpeed's time at each bus bandwidth")
    print(text_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BANDWIDTHS", "COLLECTIVES", "CPU_UNSUPPORTED", "DTYPE_BYTES", "LOGGED_OPS", "NO_BYTES", "ZERO_DEFAULTS",
           "Collective", "Transfer", "bus_bandwidth", "bus_factor", "collective_time",
           "deepspeed_collectives", "load_measured", "logged_bytes", "logged_wire_per_rank", "logger_totals",
           "measured_vs_model", "model_for_run", "paper_transfers", "persistent_elements",
           "psi_multiple", "ring_allreduce_time", "step_report", "step_time", "step_transfers", "step_volume_bytes",
           "short_name", "table", "zero3_regathered", "zero3_regime", "zero3_traced_gathers", "module_trace", "zero_settings"]
