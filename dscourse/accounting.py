"""Count the bytes a live DeepSpeed engine holds on this rank.

The walk starts at the engine's module and optimizer and follows attributes, lists, dicts and
the ``ds_tensor`` partitions that ZeRO-3 hangs on each parameter. Every distinct storage is
counted once (views of a flat buffer share a storage), under the first path that reached it, and
each path is put in one of the categories of :data:`CATEGORIES`. Nothing is estimated: these are
the ``nbytes`` of the storages DeepSpeed allocated.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

CATEGORIES = ("params", "master", "grads", "optim", "buffers")

# Order matters: the first pattern that matches a path decides its category.
_RULES = [
    ("optim", re.compile(r"\.state\b|exp_avg|exp_avg_sq|optimizer_swapper")),
    ("grads", re.compile(r"\.grad$")),
    ("buffers", re.compile(r"ipg|bucket|param_buffer_of_bit16|temp_grad_buffer")),  # communication buckets, reused every step
    # the inner torch optimizer's params are the fp32 master copies (or the model's own params,
    # already counted under module.* when training in fp32)
    ("master", re.compile(r"fp32|master|param_groups")),
    ("grads", re.compile(r"grad")),
    ("params", re.compile(r"^module\.|bit16_groups|fp16_groups|bf16_groups|fp16_partitioned|lp_param|ds_tensor|\.param\b")),
]

_CONTAINERS = (list, tuple, set, frozenset)
_SKIP_TYPES = (str, bytes, int, float, bool, type(None))
# Objects outside these packages are not DeepSpeed's state: don't follow them (process groups,
# accelerators, loggers, the config...).
_FOLLOW_MODULES = ("deepspeed.runtime", "deepspeed.ops", "torch.optim", "torch.nn.modules")
_SKIP_ATTRS = {"_parameters_ref", "param_names", "_config", "config", "ds_config", "_modules",
               "accelerator", "timers", "monitor", "tput_timer", "flops_profiler", "dp_process_group",
               "real_dp_process_group", "partition_count", "_global_grad_norm"}


def classify(path: str) -> str:
    for category, pattern in _RULES:
        if pattern.search(path):
            return category
    return "buffers"


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, t.device.index, s.data_ptr()), s.nbytes()


def walk_tensors(engine, max_depth: int = 8):
    """Yield ``(path, tensor)`` for every tensor reachable from ``engine``'s module and optimizer."""
    seen_objects: set[int] = set()

    def visit(obj, path, depth):
        if depth > max_depth or isinstance(obj, _SKIP_TYPES):
            return
        if isinstance(obj, torch.Tensor):
            yield path, obj
            # ZeRO-3 keeps the rank's partition in param.ds_tensor; the param itself is empty.
            ds_tensor = getattr(obj, "ds_tensor", None)
            if isinstance(ds_tensor, torch.Tensor):
                yield path + ".ds_tensor", ds_tensor
            grad = obj.grad
            if isinstance(grad, torch.Tensor):
                yield path + ".grad", grad
            return
        if id(obj) in seen_objects:
            return
        seen_objects.add(id(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                key = k if isinstance(k, (str, int)) else "param"
                yield from visit(v, f"{path}[{key}]", depth + 1)
        elif isinstance(obj, _CONTAINERS):
            for i, v in enumerate(obj):
                yield from visit(v, f"{path}[{i}]", depth + 1)
        elif isinstance(obj, torch.nn.Module):
            for name, p in obj.named_parameters(recurse=True):
                yield from visit(p, f"{path}.{name}", depth + 1)
            for name, b in obj.named_buffers(recurse=True):
                yield from visit(b, f"{path}.{name}", depth + 1)
        elif type(obj).__module__.startswith(_FOLLOW_MODULES) and hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                if k not in _SKIP_ATTRS:
                    yield from visit(v, f"{path}.{k.lstrip('_')}", depth + 1)

    yield from visit(engine.module, "module", 0)
    yield from visit(engine.optimizer, "optimizer", 0)


def _count(root, local=lambda t: t) -> tuple[dict, dict, dict]:
    """Walk ``root.module`` and ``root.optimizer`` and count each storage once: bytes by device kind and
    category, elements by category, and every counted path. ``local`` maps a tensor to what this rank holds."""
    seen = set()
    totals: dict = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    elements = dict.fromkeys(CATEGORIES, 0)
    paths = {}
    for path, t in walk_tensors(root):
        t = local(t)
        key, nbytes = _storage_key(t)
        if nbytes == 0 or key in seen or t.device.type == "meta":
            continue
        seen.add(key)
        category = classify(path)
        totals[t.device.type][category] += nbytes
        elements[category] += nbytes // t.element_size()
        paths[path] = (t.device.type, category, nbytes)
    return {dev: dict(cats) for dev, cats in totals.items()}, elements, paths


def count_engine_bytes(engine) -> dict:
    """Bytes held by this rank, per device kind ("cpu", "cuda", ...) and category.

    Returns ``{"cuda": {"params": n, ...}, "cpu": {...}, "paths": {path: (device, category, nbytes)}}``.
    """
    result, _, paths = _count(engine)
    result["paths"] = paths
    return result


def count_fsdp_bytes(module, optimizer) -> dict:
    """Bytes (and elements) held by this rank under PyTorch FSDP2, by device kind and category.

    The same walk and the same categories as :func:`count_engine_bytes`, with each ``DTensor`` (FSDP2's
    sharded parameters, their gradients and the optimizer state built from them) replaced by its local
    shard. FSDP2's fp32 shards are both the parameters and the optimizer's master weights, so they count
    as ``params``; a gathered bf16 copy that has been freed (storage of size 0) counts nothing.
    Returns ``{"cpu": {"params": n, ...}, "elements": {"params": n, ...}, "paths": {...}}``.
    """
    from types import SimpleNamespace

    from torch.distributed.tensor import DTensor

    result, elements, paths = _count(SimpleNamespace(module=module, optimizer=optimizer),
                                     lambda t: t.to_local() if isinstance(t, DTensor) else t)
    result["elements"] = elements
    result["paths"] = paths
    return result


def saved_for_backward_bytes(model, **inputs) -> int:
    """Bytes of the tensors autograd keeps for backward during ``model(**inputs)``: every distinct storage saved by the
    forward's operations, the model's own parameters left out (a frozen weight that a matmul keeps for its input's
    gradient is not an activation). What activation memory is, counted rather than read off an allocator."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs)
    return sum(saved.values())


def lora_activation_delta(arch, lora, seq: int, checkpointing: bool = False, micro_batch: int = 1) -> int:
    """Bytes LoRA saves for backward minus what full fine-tuning saves, counted on two real bf16 models of ``arch``
    built by transformers from its config (random weights, the same seed): one with every parameter training, one with
    PEFT's adapters (``lora``: a :class:`dscourse.memory.peak.Lora`) and the rest frozen, cast to bf16 as DeepSpeed's
    bf16 engine casts the whole module. Small shapes only: it runs on the CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .memory.hf import hf_config_of

    def count(with_lora: bool) -> int:
        torch.manual_seed(0)
        config = AutoConfig.for_model(**hf_config_of(arch))
        config._attn_implementation = "eager" if arch.family == "gemma2" else "sdpa"
        model = AutoModelForCausalLM.from_config(config)
        if with_lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=2 * lora.rank, lora_dropout=0.0,
                                                     target_modules=list(lora.modules)))
        model = model.to(torch.bfloat16).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ids = torch.randint(0, arch.vocab, (micro_batch, seq), generator=torch.Generator().manual_seed(1))
        return saved_for_backward_bytes(model, input_ids=ids, labels=ids)

    return count(True) - count(False)
