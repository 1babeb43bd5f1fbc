"""Gradient accumulation's held tensors, counted in real DeepSpeed engines (one CPU rank), equal the peak model's term."""

import pytest

from dscourse.launch import run_ranks
from dscourse.memory.formulas import Setup
from dscourse.memory.peak import Zero, accumulation_host_bytes, accumulation_terms

pytestmark = pytest.mark.engine  # real engines: not in the fast loop (-m "not engine")

BUCKET = 1_000_000  # a reduce_bucket_size of its own, so the bucket is seen to follow the setting
VARIANTS = ["1+oo", "2", "2+oo", "3+oo"]
# peak.py's term -> the attribute of the engine that holds it (dscourse.scripts.accum_memory.attribute)
ATTRIBUTE = {"grads16": "param.grad", "buckets": "ipg_buckets", "grads_accum": "all_grad_tensors"}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    res = run_ranks("dscourse.scripts.accum_memory",
                    ["--shape", "gpt2-tiny", "--grad-accum", "3", "--zero-json", f'{{"reduce_bucket_size": {BUCKET}}}',
                     "--variants", *VARIANTS], nproc=1, timeout=600, out_dir=tmp_path_factory.mktemp("accum"))
    return {v["variant"]: v for v in res.ranks[0]["variants"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_what_the_micro_steps_before_the_boundary_hold_is_the_accumulation_term(variants, variant):
    run = variants[variant]
    stage, offload = run["stage"], "cpu" if "oo" in run["flags"] else "none"
    setup = Setup(params=run["params"], stage=stage, offload_optimizer=offload)
    want = {ATTRIBUTE[k]: v for k, v in accumulation_terms(setup, Zero(reduce_bucket_size=BUCKET)).items()}
    for held in run["micro_steps"][:-1]:  # after each backward before the boundary: nothing else, to the byte
        assert held == want, (variant, held, want)
    # the host copy that ZeRO-2 + optimizer offload accumulates into, kept from step to step
    assert sum(run["kept"].values()) == accumulation_host_bytes(setup), (variant, run["kept"])


def test_zero1_offload_keeps_every_bf16_gradient_and_the_reduce_bucket(variants):
    """The planner's GA picks on the H200 (ZeRO-1 + optimizer offload): 2 bytes per parameter and the bucket."""
    held = variants["1+oo"]["micro_steps"][0]
    assert held == {"param.grad": 2 * variants["1+oo"]["params"], "ipg_buckets": 2 * BUCKET}
