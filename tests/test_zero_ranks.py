"""Real DeepSpeed engines on 2 CPU ranks: the bytes each rank holds equal the `allocated` formula."""

import pytest

from dscourse.calibration import counted_vs_formula, variant_runs
from dscourse.launch import run_ranks

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")

VARIANTS = [(0, "none", "none"), (1, "none", "none"), (2, "none", "none"), (3, "none", "none"),
            (2, "cpu", "none"), (3, "cpu", "cpu")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The four stages exactly as notebook 01 launches them (so one launch serves both in a test session), and the
    two offload variants in a second launch."""
    out = {}
    for variants in (["0", "1", "2", "3"], ["2+oo", "3+oo+op"]):
        res = run_ranks("dscourse.scripts.zero_memory",
                        ["--shape", "gpt2-small-cpu", "--variants", *variants, "--micro-batch", "1", "--steps", "2"],
                        nproc=2, timeout=600, out_dir=tmp_path_factory.mktemp("zero"))
        out.update(variant_runs(res.ranks))
    assert sorted(out) == sorted(VARIANTS)
    return out


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v)))
def test_counted_bytes_equal_the_allocated_formula(runs, variant):
    for rank in runs[variant]:
        for category, counted, formula in counted_vs_formula(rank):
            # Adam's per-tensor `step` counters (4 bytes each) and a 1-byte overflow flag are not modelled.
            assert abs(counted - formula) <= 512, (variant, rank["rank"], category, counted, formula)


def test_ranks_hold_different_partitions_of_the_same_size(runs):
    r0, r1 = runs[(3, "none", "none")]
    assert r0["held_after_step"] == r1["held_after_step"]


def test_zero_stages_train_the_same_numbers(runs):
    base = runs[(0, "none", "none")][0]["losses"]
    for ranks in runs.values():
        assert ranks[0]["losses"][0] == pytest.approx(base[0], abs=1e-6)  # same init, same first batch
        assert ranks[0]["losses"][1] == pytest.approx(base[1], abs=2e-2)  # one bf16 update later


@pytest.mark.parametrize("argv, says", [
    (["--variants", "3", "3", "--variant-zero-json", "{}"], "one JSON object per variant: 1 given for 2"),
    (["--variant-zero-json", "{}"], "one JSON object per variant: 1 given for 0"),
    (["--variants", "3", "--variant-zero-json", "{reduce_bucket_size: 1}"], "is not JSON"),
])
def test_per_variant_zero_json_is_checked_before_any_rank_starts(argv, says, capsys):
    from dscourse.scripts.zero_memory import parse_args

    with pytest.raises(SystemExit):
        parse_args([*argv, "--out", "x"])
    assert says in capsys.readouterr().err
