"""A model's shape from its Hugging Face ``config.json``, read locally (no network, no transformers import).

Every key that decides memory is read from the file; a key the file leaves out takes the default of
transformers' configuration class for that ``model_type`` (``models/<type>/configuration_<type>.py``,
transformers 5.23), the value ``AutoConfig`` would give it. ``tests/test_hf_configs.py`` proves the parameter
count equals what transformers builds from the same file on the meta device, for every family here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import package_path
from .formulas import FormulaError
from .shapes import Arch

# Defaults of each configuration class, for the keys read below (None: falls back as the class does).
_DEFAULTS = {
    "llama": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=None, head_dim=None, vocab_size=32000, tie_word_embeddings=False,
                  attention_bias=False, mlp_bias=False, max_position_embeddings=2048),
    "mistral": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=None, vocab_size=32000, tie_word_embeddings=False,
                    max_position_embeddings=131072),
    "qwen2": dict(hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=None, vocab_size=151936, tie_word_embeddings=False,
                  max_position_embeddings=32768),
    "qwen3": dict(hidden_size=4096, intermediate_size=22016, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
                  attention_bias=False, max_position_embeddings=32768),
    "gemma2": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=256, vocab_size=256000, tie_word_embeddings=True,
                   attention_bias=False, max_position_embeddings=8192),
    "phi3": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=None, head_dim=None, vocab_size=32064, tie_word_embeddings=False,
                 max_position_embeddings=4096),
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12, n_inner=None, vocab_size=50257, n_positions=1024,
                 tie_word_embeddings=True),
}
MODEL_TYPES = tuple(_DEFAULTS)
PRESET_DIR = package_path("configs") / "models"


def _int(cfg: dict, key: str, minimum: int = 1) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FormulaError(f"config.json: {key} must be a whole number ≥ {minimum}, not {value!r}")
    return value


def arch_from_hf(cfg: dict, name: str | None = None) -> Arch:
    """The :class:`Arch` of a parsed ``config.json`` (a dict). Raises ``FormulaError`` on what it cannot read."""
    if not isinstance(cfg, dict):
        raise FormulaError("config.json must hold one JSON object")
    model_type = cfg.get("model_type")
    if model_type not in _DEFAULTS:
        raise FormulaError(f"unknown model_type {model_type!r} in config.json: this calculator knows "
                           f"{', '.join(MODEL_TYPES)}")
    c = {**_DEFAULTS[model_type], **{k: v for k, v in cfg.items() if k in _DEFAULTS[model_type]}}
    name = name or cfg.get("_name_or_path") or model_type
    if model_type == "gpt2":
        if c["tie_word_embeddings"] is False:
            raise FormulaError("config.json: a GPT-2 with an untied LM head is not supported")
        hidden = _int(c, "n_embd")
        inner = c["n_inner"] if c["n_inner"] is not None else 4 * hidden  # GPT2MLP: n_inner or 4 * n_embd
        c["n_inner"] = inner
        arch = Arch(name, _int(c, "n_layer"), hidden, _int(c, "n_head"), _int(c, "vocab_size"), _int(c, "n_inner"),
                    tied_embeddings=True, family="gpt2", positions=_int(c, "n_positions"),
                    seq=_int(c, "n_positions"))
    else:
        hidden, heads = _int(c, "hidden_size"), _int(c, "num_attention_heads")
        if c["num_key_value_heads"] is None:  # LlamaConfig, Phi3Config: None means multi-head attention
            c["num_key_value_heads"] = heads
        kv = _int(c, "num_key_value_heads")
        if heads % kv:
            raise FormulaError(f"config.json: {heads} attention heads do not split into {kv} key/value groups")
        if c["head_dim"] is None:
            c["head_dim"] = hidden // heads
        attention_bias = bool(c.get("attention_bias", False))
        arch = Arch(name, _int(c, "num_hidden_layers"), hidden, heads, _int(c, "vocab_size"),
                    _int(c, "intermediate_size"), kv_heads=kv, tied_embeddings=bool(c["tie_word_embeddings"]),
                    family=model_type, positions=_int(c, "max_position_embeddings"),
                    seq=min(_int(c, "max_position_embeddings"), 4096), head_dim=_int(c, "head_dim"),
                    qkv_bias=attention_bias or model_type == "qwen2",  # Qwen2Attention: bias=True on q, k, v
                    o_bias=attention_bias, mlp_bias=bool(c.get("mlp_bias", False)))
    return arch


def load_config(path) -> dict:
    """A ``config.json`` as a dict; ``FormulaError`` with one line if it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FormulaError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FormulaError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise FormulaError(f"{path} is not JSON: {e}") from None


def arch_from_file(path) -> Arch:
    return arch_from_hf(load_config(path), name=Path(path).stem if Path(path).name != "config.json" else None)


def hf_presets() -> dict[str, Path]:
    """The published configs shipped with the course: {name: path}."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.json"))}


def hf_config_of(arch: Arch) -> dict:
    """A ``config.json`` dict that transformers builds into a model of ``arch`` (the benchmarks use it)."""
    if arch.family == "gpt2":
        return {"model_type": "gpt2", "n_layer": arch.layers, "n_embd": arch.hidden, "n_head": arch.heads,
                "vocab_size": arch.vocab, "n_positions": arch.positions, "n_inner": arch.intermediate,
                "tie_word_embeddings": True}
    cfg = {"model_type": arch.family, "num_hidden_layers": arch.layers, "hidden_size": arch.hidden,
           "num_attention_heads": arch.heads, "num_key_value_heads": arch.kv_heads or arch.heads,
           "head_dim": arch.dim, "vocab_size": arch.vocab, "intermediate_size": arch.intermediate,
           "tie_word_embeddings": arch.tied_embeddings, "max_position_embeddings": arch.positions}
    if arch.family in ("llama", "qwen3", "gemma2"):
        cfg["attention_bias"] = arch.o_bias
    if arch.family == "llama":
        cfg["mlp_bias"] = arch.mlp_bias
    return cfg
