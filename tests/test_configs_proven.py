"""Every config the book shows is loaded by DeepSpeed and trains on 2 CPU ranks."""

import json

import pytest

from dscourse import package_path
from dscourse.config import build_config
from dscourse.launch import run_ranks

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")

CONFIGS = package_path("configs")
SHOWN = sorted(p.name for p in CONFIGS.glob("*.json"))
# trained through `accelerate launch --deepspeed_config_file` with DummyOptim in notebook 03 (strict nbval asserts it)
ACCELERATE_ONLY = ["ds_config_accelerate.json"]


def test_the_book_shows_these_configs():
    assert SHOWN == ["ds_config_accelerate.json", "ds_config_zero2.json", "ds_config_zero2_plain.json",
                     "ds_config_zero3_offload.json"]


@pytest.mark.parametrize("name", [n for n in SHOWN if n not in ACCELERATE_ONLY])
def test_config_trains(name, tmp_path):
    cfg = json.loads((CONFIGS / name).read_text())  # strict JSON, as the Trainer reads it
    uses_auto = "auto" in json.dumps(cfg)
    args = ["--config", str(CONFIGS / name)] + (["--trainer"] if uses_auto else [])
    ranks = run_ranks("dscourse.scripts.train_step", args, nproc=2, timeout=600, out_dir=tmp_path).ranks
    for rank in ranks:
        assert rank["zero_stage"] == cfg["zero_optimization"]["stage"]
        assert len(rank["losses"]) == 2 and all(0 < x < 20 for x in rank["losses"])
        assert rank["bf16"] is True and rank["fp16"] is False
        assert "auto" not in json.dumps(rank["filled"])  # the Trainer filled every "auto"


def test_plain_config_file_is_the_builders_output():
    shown = json.loads((CONFIGS / "ds_config_zero2_plain.json").read_text())
    assert shown == build_config(2, micro_batch=2, world_size=2)


BUILDER_VARIANTS = [(0, "none", "none"), (1, "none", "none"), (3, "none", "none"), (2, "cpu", "none"),
                    (3, "cpu", "cpu")]


@pytest.fixture(scope="module")
def builder_runs(tmp_path_factory):
    """The builder's configs for BUILDER_VARIANTS, trained one after the other in one launch of 2 ranks."""
    folder = tmp_path_factory.mktemp("builder")
    paths = []
    for stage, oo, op in BUILDER_VARIANTS:
        paths.append(folder / f"zero{stage}-{oo}-{op}.json")
        paths[-1].write_text(json.dumps(build_config(stage, micro_batch=2, world_size=2, offload_optimizer=oo,
                                                     offload_param=op)))
    ranks = run_ranks("dscourse.scripts.train_step", ["--config", *map(str, paths), "--steps", "1"], nproc=2,
                      timeout=600, out_dir=folder / "out").ranks
    rank0 = next(r for r in ranks if r["rank"] == 0)
    return dict(zip(BUILDER_VARIANTS, rank0["configs"], strict=True))


@pytest.mark.parametrize("variant", BUILDER_VARIANTS, ids=lambda v: "-".join(map(str, v)))
def test_builder_configs_train_with_plain_deepspeed(builder_runs, variant):
    run = builder_runs[variant]
    assert run["zero_stage"] == variant[0] and run["losses"][0] > 0
    assert run["offload_optimizer"] is (variant[1] == "cpu")


def test_builder_hf_config_trains_through_the_trainer(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(build_config(3, integration="hf", offload_optimizer="cpu")))
    rank0 = run_ranks("dscourse.scripts.train_step", ["--config", str(path), "--trainer", "--steps", "1"],
                      nproc=2, timeout=600, out_dir=tmp_path / "out").ranks[0]
    assert rank0["zero_stage"] == 3
    assert rank0["filled_zero"]["reduce_bucket_size"] == 64 * 64  # h² for the tiny model
