"""Shapes from Hugging Face config.json files: the parameter count equals what transformers builds (meta device)."""

import json

import pytest

from dscourse.memory import FormulaError
from dscourse.memory.hf import MODEL_TYPES, arch_from_file, arch_from_hf, hf_config_of, hf_presets

# Small configs that exercise each family's options (GQA, biases, head_dim ≠ hidden/heads, n_inner, tying).
VARIANTS = [
    {"model_type": "llama", "hidden_size": 96, "intermediate_size": 200, "num_hidden_layers": 2,
     "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 333, "attention_bias": True, "mlp_bias": True},
    {"model_type": "llama", "hidden_size": 64, "intermediate_size": 100, "num_hidden_layers": 3,
     "num_attention_heads": 4, "vocab_size": 500, "tie_word_embeddings": True, "head_dim": 32},
    {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 120, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 700},
    {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48, "vocab_size": 300, "attention_bias": True},
    {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "head_dim": None},
    {"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24, "vocab_size": 300},
    {"model_type": "phi3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
     "pad_token_id": 0, "eos_token_id": 0},  # Phi3Config's default token ids (32000) lie outside this vocabulary
    {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 300, "n_positions": 128,
     "n_inner": 100},
]


def transformers_count(cfg: dict) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # a tied weight counted once


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: c["model_type"])
def test_parameter_count_equals_transformers_for_each_family(cfg):
    assert arch_from_hf(cfg).params == transformers_count(cfg)


@pytest.mark.parametrize("name", sorted(hf_presets()))
def test_every_shipped_preset_counts_like_transformers_and_names_its_source(name):
    path = hf_presets()[name]
    cfg = json.loads(path.read_text())
    assert cfg["_source"].startswith("https://huggingface.co/")
    arch = arch_from_file(path)
    assert arch.params == transformers_count(cfg)
    # and the dict the benchmarks build models from describes the same model
    assert arch_from_hf(hf_config_of(arch)).params == arch.params


def test_the_presets_cover_every_family():
    assert {json.loads(p.read_text())["model_type"] for p in hf_presets().values()} == set(MODEL_TYPES)


def test_published_totals():  # the model cards' own figures
    counts = {name: arch_from_file(p).params for name, p in hf_presets().items()}
    assert counts["Llama-3.2-1B"] == 1_235_814_400 and counts["Llama-3-8B"] == 8_030_261_248
    assert counts["Qwen2.5-0.5B"] == 494_032_768 and counts["Mistral-7B-v0.1"] == 7_241_732_096
    assert counts["gpt2-xl"] == 1_557_611_200


def test_unknown_model_type_names_the_known_ones():
    with pytest.raises(FormulaError, match="unknown model_type 'bert'.*llama, mistral, qwen2, qwen3, gemma2, phi3, gpt2"):
        arch_from_hf({"model_type": "bert"})
    with pytest.raises(FormulaError, match="hidden_size must be a whole number"):
        arch_from_hf({"model_type": "llama", "hidden_size": "big"})
