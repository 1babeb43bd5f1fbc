"""The pieces of dscourse.scripts.load_memory that run in one process: its reading of /proc and its arguments."""

import pytest

from dscourse.scripts import load_memory


def test_the_sampler_sees_private_memory_come_and_go():
    with load_memory.Sampler() as sampled:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page, so it is resident
        del block
    before = load_memory.rss()
    assert sampled.peak["private"] - before["private"] > 48 * 2**20


def test_arguments_say_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_memory.parse_args(["--model", str(tmp_path)])
    assert "--how and --out are required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_memory.parse_args(["--model", str(tmp_path), "--how", "zero3", "--out", str(tmp_path)])
    assert "no config.json there; write one first with --save" in capsys.readouterr().err
