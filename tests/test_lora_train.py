"""dscourse.scripts.lora_train's arguments (its runs need PEFT, which notebook 07 will pin when LoRA joins it)."""

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
