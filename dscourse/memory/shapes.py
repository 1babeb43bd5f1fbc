"""Model shapes for the calculator: parameter counts and activation memory, from the architecture alone.

Pure arithmetic (no torch), checked in the tests against models that transformers builds from
the same configs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    intermediate: int
    kv_heads: int | None = None  # grouped-query attention (Llama-2-70B: 8)
    tied_embeddings: bool = False
    # "gpt2" (LayerNorm, biases everywhere, learned positions) or one of the gated-MLP RMSNorm families
    # "llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3" (Hugging Face's model_type)
    family: str = "llama"
    positions: int = 1024  # gpt2's learned position table
    seq: int = 1024  # the sequence length the course's scripts train with
    head_dim: int | None = None  # default hidden // heads (Qwen3, Gemma-2 set their own)
    qkv_bias: bool = False  # biases on q, k, v (Qwen2; Llama's attention_bias)
    o_bias: bool = False  # bias on the attention output projection (Llama's attention_bias)
    mlp_bias: bool = False  # Llama's mlp_bias

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def params(self) -> int:
        return param_count(self)

    @property
    def dim(self) -> int:
        """Width of one attention head."""
        return self.head_dim or self.hidden // self.heads

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.family == "gemma2" else 2  # Gemma-2 norms before and after attention and MLP

    @property
    def largest_layer(self) -> int:
        """Parameters of the largest single module: the embedding (or LM head) table."""
        return max(self.vocab * self.hidden, self.intermediate * self.hidden)


def param_count(a: Arch) -> int:
    h, i, v = a.hidden, a.intermediate, a.vocab
    if a.family == "gpt2":
        per_layer = (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h) + 4 * h  # attn, mlp, 2 LN
        return a.layers * per_layer + v * h + a.positions * h + 2 * h  # wte (tied head), wpe, final LN
    q, kv = a.heads * a.dim, (a.kv_heads or a.heads) * a.dim
    attention = h * q + 2 * h * kv + q * h + a.qkv_bias * (q + 2 * kv) + a.o_bias * h  # q, k, v, o
    mlp = 3 * h * i + a.mlp_bias * (2 * i + h)  # gate, up, down (Phi-3 fuses gate and up: the same count)
    norms = a.norms_per_layer * h + (2 * a.dim if a.family == "qwen3" else 0)  # Qwen3's q_norm, k_norm per head
    per_layer = attention + mlp + norms
    embeddings = v * h * (1 if a.tied_embeddings else 2)
    return a.layers * per_layer + embeddings + h


# Presets for the calculator (published configs; parameter counts computed, not quoted).
PRESETS = {
    "Llama-3.2-1B": Arch("Llama-3.2-1B", 16, 2048, 32, 128256, 8192, kv_heads=8, tied_embeddings=True),
    "GPT-2 XL (1.5B)": Arch("GPT-2 XL (1.5B)", 48, 1600, 25, 50257, 6400, family="gpt2"),
    "Llama-2-7B": Arch("Llama-2-7B", 32, 4096, 32, 32000, 11008),
    "Llama-2-13B": Arch("Llama-2-13B", 40, 5120, 40, 32000, 13824),
    "Llama-2-70B": Arch("Llama-2-70B", 80, 8192, 64, 32000, 28672, kv_heads=8),
}
