"""dscourse.scripts.lora_train and dscourse.memory.lora (the runs themselves are in notebook 07, under strict nbval)."""

import pytest

from dscourse.scripts import lora_train


def test_bad_arguments_get_one_clear_line(capsys):
    for argv, says in ((["--lora-rank", "-1"], "--lora-rank must be 0 or more"),
                       (["--shape", "llama2-7b-scaled", "--lora-rank", "0", "--save-adapter", "a"],
                        "--save-adapter saves a LoRA adapter")):
        with pytest.raises(SystemExit):
            lora_train.parse_args(["--config", "c.json", "--out", "o", *argv])
        assert says in capsys.readouterr().err
    assert lora_train.parse_args(["--config", "c.json", "--out", "o"]).lora_rank == 8


def test_lora_formula_keeps_only_16_bit_weights_for_the_frozen_base():
    from dscourse.memory.lora import lora_state_bytes, lora_trainable
    from dscourse.models import SHAPES

    psi, t = 1e9, 1e6
    z3 = lora_state_bytes(psi + t, t, 8, 3)
    assert z3 == {"params": 2 * (psi + t) / 8, "grads": 2 * t / 8, "master": 4 * t / 8, "optim": 8 * t / 8}
    assert lora_state_bytes(psi + t, t, 8, 2)["params"] == 2 * (psi + t)  # ZeRO-2: the whole base on every rank
    full = lora_state_bytes(psi, psi, 8, 3)
    assert sum(full.values()) == 16 * psi / 8  # full fine-tuning: the paper's 16 bytes per parameter
    # llama-tiny: hidden 64, 2 layers, q and v 64 wide: 2 layers x 2 targets x 8 x (64 + 64)
    assert lora_trainable(SHAPES["llama-tiny"], 8) == 4096
    with pytest.raises(ValueError, match="unknown LoRA target 'gate'"):
        lora_trainable(SHAPES["llama-tiny"], 8, targets=("gate",))
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        lora_state_bytes(psi, t, 8, 4)
