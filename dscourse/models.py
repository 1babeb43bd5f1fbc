"""Transformer models built from configs (never downloaded), and synthetic token batches.

``SHAPES`` names every model shape the course uses, so a notebook, a script and a test that say
``"gpt2-tiny"`` mean the same model.
"""

from __future__ import annotations

from .memory.formulas import DEFAULT_PARAM_PERSISTENCE_THRESHOLD
from .memory.shapes import Arch


def _gpt2(name, layers, hidden, heads, vocab, seq):
    return Arch(name, layers, hidden, heads, vocab, 4 * hidden, tied_embeddings=True, family="gpt2",
                positions=seq, seq=seq)


def _llama(name, layers, hidden, heads, vocab, intermediate, seq):
    return Arch(name, layers, hidden, heads, vocab, intermediate, positions=seq, seq=seq)


SHAPES = {
    # CPU scale: small enough that 4 ranks train in seconds.
    "gpt2-tiny": _gpt2("gpt2-tiny", 2, 64, 4, 512, 32),
    "llama-tiny": _llama("llama-tiny", 2, 64, 4, 512, 172, 32),
    "gpt2-small-cpu": _gpt2("gpt2-small-cpu", 4, 256, 4, 4096, 64),
    # Llama-2-7B with every width divided by 64, so every module holds ~4096x fewer elements: ZeRO-3's
    # gather schedule, decided in elements per module (dscourse.comm), is 7B's with its thresholds / 4096.
    "llama2-7b-scaled": _llama("llama2-7b-scaled", 32, 64, 4, 500, 172, 32),
    # Big enough that a rank's copy of it (~58M parameters, 116 MB in bf16) stands far above the noise of a
    # process's resident memory: the host-memory-when-loading measurement (dscourse.scripts.load_memory).
    "llama-load-cpu": _llama("llama-load-cpu", 8, 512, 8, 32000, 1376, 256),
    # GPU scale.
    "gpt2-350m": _gpt2("gpt2-350m", 24, 1024, 16, 50257, 1024),
    "gpt2-1.3b": _gpt2("gpt2-1.3b", 24, 2048, 16, 50257, 1024),
    "llama-1b": _llama("llama-1b", 16, 2048, 32, 32000, 5632, 1024),
}


# Adam's learning rate for the training demos, by shape. The CPU models memorise their few batches at 1e-3.
# GPT-2 350M at 1e-3 without warm-up bounced on an H100 (bf16 loss 11.0, 11.4, 9.5, 11.4 at steps 3-9), and
# in that regime bf16 rounding differences between ZeRO stages grew to 17% of the loss; 4.4's benchmark
# trains it at 2e-4.
_LEARNING_RATE = {"gpt2-350m": 2e-4, "gpt2-1.3b": 2e-4, "llama-1b": 2e-4}


def learning_rate(shape: Arch | str) -> float:
    """The learning rate the course's training scripts use for ``shape`` unless told otherwise."""
    name = shape if isinstance(shape, str) else shape.name
    return _LEARNING_RATE.get(name, 1e-3)


def build_model(shape: Arch | str, dtype=None):
    """A randomly initialised causal LM of ``shape`` (seeded by the caller)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    shape = SHAPES[shape] if isinstance(shape, str) else shape
    if shape.family == "gpt2":
        cfg = GPT2Config(n_layer=shape.layers, n_embd=shape.hidden, n_head=shape.heads,
                         vocab_size=shape.vocab, n_positions=shape.positions,
                         bos_token_id=shape.vocab - 1, eos_token_id=shape.vocab - 1,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    elif shape.family == "llama":
        cfg = LlamaConfig(num_hidden_layers=shape.layers, hidden_size=shape.hidden,
                          num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads or shape.heads,
                          intermediate_size=shape.intermediate, vocab_size=shape.vocab,
                          max_position_embeddings=shape.seq, tie_word_embeddings=shape.tied_embeddings)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown architecture family {shape.family!r}: use 'gpt2' or 'llama'")
    if dtype is not None:
        model = model.to(dtype)
    return model.to(torch.float32) if dtype is None else model


def count_params(model) -> tuple[int, int]:
    """(total parameters counted once, parameters of the largest module's own weights)."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return total, largest


def persistent_params(model, threshold: int = DEFAULT_PARAM_PERSISTENCE_THRESHOLD) -> int:
    """Parameters ZeRO-3 keeps whole on every rank: those of at most ``threshold`` elements
    (``stage3_param_persistence_threshold``, default 1e5; DeepSpeed's ``mark_persistent_parameters``)."""
    return sum(p.numel() for p in model.parameters() if p.numel() <= threshold)


def synthetic_batch(shape: Arch | str, micro_batch: int, step: int, seed: int = 0, device="cpu"):
    """Token ids for one micro-batch, the same on every rank for the same (seed, step)."""
    import torch

    shape = SHAPES[shape] if isinstance(shape, str) else shape
    g = torch.Generator().manual_seed(seed * 100003 + step)
    ids = torch.randint(0, shape.vocab, (micro_batch, shape.seq), generator=g)
    return ids.to(device)
