"""LoRA in the peak model: what the adapters add to the model states, and what freezing the base removes from the
activations, counted on real models with PEFT adapters (the GPU check waits for benchmarks/gpu_nvme_lora.sh)."""

import pytest

from dscourse.accounting import lora_activation_delta
from dscourse.memory import FormulaError, Setup, estimate
from dscourse.memory.lora import TARGET_SETS, lora_state_bytes, lora_trainable
from dscourse.memory.peak import LORA_FAMILIES, Lora, arch_setup, lora_activation_terms, peak, peak_of
from dscourse.memory.shapes import PRESETS, Arch

SEQ = 64


def tiny(family: str) -> Arch:
    """Every width distinct (hidden, intermediate, q, kv, head_dim), so that a wrong term cannot hide behind another."""
    return Arch(f"tiny-{family}", 3, 128, 4, 1000, 344, kv_heads=2, family=family, positions=SEQ, seq=SEQ,
                head_dim=48 if family == "qwen3" else None, qkv_bias=family == "qwen2")


@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-ckpt", "ckpt"])
@pytest.mark.parametrize("targets", list(TARGET_SETS))
@pytest.mark.parametrize("family", LORA_FAMILIES)
def test_lora_activations_are_what_autograd_keeps(family, targets, checkpointing):
    a, lora = tiny(family), Lora(16, targets)
    counted = lora_activation_delta(a, lora, SEQ, checkpointing)
    assert counted == sum(lora_activation_terms(a, SEQ, 1, lora, checkpointing).values())
    assert counted < 0  # a frozen base keeps less for backward


def test_lora_states_and_peak_on_a_published_model():
    arch, lora = PRESETS["Llama-2-70B"], Lora(16)
    full, tuned = peak_of(arch, gpus=8, stage=3, seq=4096), peak_of(arch, gpus=8, stage=3, seq=4096, lora=lora)
    t = lora_trainable(arch, 16)
    assert tuned.setup.trainable == t and tuned.setup.params == arch.params + t
    states = lora_state_bytes(arch.params + t, t, 8, 3)
    assert tuned.states.gpu["master"] == round(states["master"]) and tuned.states.gpu["optim"] == round(states["optim"])
    assert tuned.peak_bytes < full.peak_bytes - 100e9  # 70B: the fp32 master and Adam state of 8.6B params per GPU gone
    # the activations: the frozen base keeps less, but most of full fine-tuning's
    acts = {p: pk.phases["forward"]["activations"] for p, pk in (("full", full), ("lora", tuned))}
    assert 0.5 * acts["full"] < acts["lora"] < acts["full"]
    # ZeRO-2: the whole bf16 base on every GPU, gradients and optimizer step for the adapters only
    z2 = peak_of(arch, gpus=8, stage=2, seq=4096, lora=lora)
    assert z2.phases["step"]["step_grads"] == pytest.approx(6 * t / 8)


def test_lora_inputs_that_have_no_answer():
    with pytest.raises(FormulaError, match="LoRA targets must be one of"):
        Lora(8, "everything")
    with pytest.raises(FormulaError, match="rank must be a whole number"):
        Lora(0)
    with pytest.raises(FormulaError, match="LoRA is counted for the llama"):
        peak_of(PRESETS["GPT-2 XL (1.5B)"], seq=1024, lora=Lora(8))
    with pytest.raises(FormulaError, match="LoRA with offload is not modelled"):
        arch_setup(PRESETS["Llama-2-70B"], 8, 3, offload_optimizer="cpu", lora=Lora(8))
    setup = Setup(params=1000, trainable=10, stage=2, gpus=2)
    with pytest.raises(FormulaError, match="only the allocated family"):
        estimate(setup, "paper")
    with pytest.raises(FormulaError, match="build it with arch_setup"):
        peak(arch_setup(PRESETS["Llama-2-70B"], 8, 3), PRESETS["Llama-2-70B"], 1, 4096, lora=Lora(8))
