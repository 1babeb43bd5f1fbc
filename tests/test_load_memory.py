"""The pieces of dscourse.scripts.load_memory that run in one process: its reading of /proc and its arguments."""

import pytest

from dscourse.scripts import load_memory


def test_the_sampler_sees_private_memory_come_and_go():
    import mmap
    import time

    size = 64 * 2**20
    before = load_memory.rss()
    with load_memory.Sampler() as sampled:
        # an anonymous mapping of its own (not the heap, which may already hold freed pages): new private memory
        block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # (the default is shared)
        for page in range(0, size, mmap.PAGESIZE):
            block[page] = 1  # touch every page, so it is resident
        time.sleep(0.05)  # held a while, as a loaded model is: the sampling thread gets its turns
        block.close()
    assert sampled.peak["private"] - before["private"] > 48 * 2**20
    assert load_memory.rss()["private"] - before["private"] < 16 * 2**20  # and it went away again


def test_arguments_say_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_memory.parse_args(["--model", str(tmp_path)])
    assert "--how and --out are required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_memory.parse_args(["--model", str(tmp_path), "--how", "zero3", "--out", str(tmp_path)])
    assert "no config.json there; write one first with --save" in capsys.readouterr().err


def test_host_when_loading_counts_a_private_copy_only_when_converting():
    from dscourse.memory.loading import host_when_loading

    same = host_when_loading(70e9, 8, "every_rank")
    converting = host_when_loading(70e9, 8, "every_rank_converting")
    assert same.private_per_node == 0 and same.page_cache == 140e9
    assert converting.private_per_rank == 280e9 and converting.private_per_node == 8 * 280e9
    with pytest.raises(ValueError, match="how must be one of every_rank, every_rank_converting, zero3"):
        host_when_loading(1e9, 8, "each")
    with pytest.raises(ValueError, match="ranks must be at least 1"):
        host_when_loading(1e9, 0, "zero3")
