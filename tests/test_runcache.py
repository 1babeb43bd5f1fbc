"""A test session launches each multi-rank job once: what counts as the same launch, and what reuse gives back."""

import json

import pytest

from dscourse import runcache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSCOURSE_RUN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    return tmp_path


def test_outputs_do_not_count_where_they_are_but_inputs_count_by_content(cache):
    config = cache / "a" / "ds.json"
    config.parent.mkdir()
    config.write_text('{"zero_optimization": {"stage": 2}}')
    same = cache / "b" / "ds.json"
    same.parent.mkdir()
    same.write_text(config.read_text())
    key, outputs = runcache.launch_key("m", ["--config", str(config), "--save-dir", str(cache / "a" / "ckpt")], nproc=2)
    assert outputs == [3]
    assert runcache.launch_key("m", ["--config", str(same), "--save-dir", str(cache / "b" / "x")], nproc=2)[0] == key
    same.write_text('{"zero_optimization": {"stage": 3}}')
    assert runcache.launch_key("m", ["--config", str(same), "--save-dir", str(cache / "b" / "x")], nproc=2)[0] != key
    assert runcache.launch_key("m", ["--config", str(config), "--save-dir", str(cache / "a" / "ckpt")], nproc=4)[0] != key
    # an environment path is an output too while it holds nothing: HF_HOME of a fresh folder is the same anywhere
    fresh = cache / "hf"
    fresh.mkdir()
    assert (runcache.launch_key("m", [], env={"HF_HOME": str(fresh)})[0]
            == runcache.launch_key("m", [], env={"HF_HOME": str(cache / "elsewhere")})[0])


def test_reuse_copies_what_the_first_launch_wrote_to_the_new_places(cache):
    first_ckpt, first_out = cache / "run1" / "ckpt", cache / "run1" / "out"
    key, outputs = runcache.launch_key("m", ["--save-dir", str(first_ckpt)])
    first_ckpt.mkdir(parents=True)
    (first_ckpt / "step4").mkdir()
    (first_ckpt / "step4" / "weights.pt").write_bytes(b"\x00\x01")
    first_out.mkdir()
    (first_out / "rank0.json").write_text('{"loss": 1.5}')
    runcache.store(key, ["--save-dir", str(first_ckpt)], outputs, first_out, {"ranks": [{"loss": 1.5}], "log": "ok"})

    second_ckpt, second_out = cache / "run2" / "ckpt", cache / "run2" / "out"
    assert runcache.launch_key("m", ["--save-dir", str(second_ckpt)]) == (key, outputs)
    second_out.mkdir(parents=True)
    stored = runcache.load(key, ["--save-dir", str(second_ckpt)], outputs, second_out)
    assert stored == {"ranks": [{"loss": 1.5}], "log": "ok"}
    assert (second_ckpt / "step4" / "weights.pt").read_bytes() == b"\x00\x01"
    assert json.loads((second_out / "rank0.json").read_text()) == {"loss": 1.5}
    assert runcache.load("another", [], [], second_out) is None


def test_nothing_is_kept_without_a_session_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DSCOURSE_RUN_CACHE", raising=False)
    assert runcache.cache_root() is None
    runcache.store("k", [], [], tmp_path, {"ranks": []})
    assert runcache.load("k", [], [], tmp_path) is None and runcache.summary() is None


@pytest.mark.engine
def test_a_second_identical_launch_is_reused_and_reuse_false_launches_again(cache):
    from dscourse.launch import run_ranks

    args = ["--sizes", "1e3", "--iters", "1", "--ops", "all_reduce"]
    first = run_ranks("dscourse.scripts.allreduce_bench", args, nproc=2, timeout=600, out_dir=cache / "o1")
    again = run_ranks("dscourse.scripts.allreduce_bench", args, nproc=2, timeout=600, out_dir=cache / "o2")
    fresh = run_ranks("dscourse.scripts.allreduce_bench", args, nproc=2, timeout=600, out_dir=cache / "o3", reuse=False)
    assert again.ranks == first.ranks and (cache / "o2" / "rank0.json").exists()
    assert fresh.ranks[0]["world_size"] == 2
    ledger = [json.loads(line) for line in (cache / "cache" / "ledger.jsonl").read_text().splitlines()]
    assert [row["reused"] for row in ledger] == [False, True]  # reuse=False bypasses the session's cache
    assert runcache.summary().startswith("multi-rank launches: 1 run (")
