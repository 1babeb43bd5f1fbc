"""4.5 communication: dscourse.comm against DeepSpeed's own comms logger.

The committed table (dscourse/data/cpu_comm_volume.json: 2 and 4 CPU ranks, ZeRO-0/1/2/3, accumulation 1 and 2,
the knobs) is checked configuration by configuration, and a small part of it is measured again here, for real.
"""

import json
import subprocess
import sys

import pytest

from dscourse import comm
from dscourse.launch import run_ranks

PY = sys.executable
DATA = comm.load_measured()
ROWS = comm.measured_vs_model(DATA)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"w{r['world_size']}-{r['name']}")
def test_model_equals_the_comms_logger(row):
    assert row["ranks_agree"]
    assert row["error"] <= 0.01, (row["logged"], row["model"])
    if row["zero3_gathers"] != "estimate":
        assert row["model"] == row["logged"]  # exact, to the byte, wherever the model is not an estimate


def _prefetch_off(zero: dict) -> bool:
    z = comm.zero_settings(zero)
    return min(z["stage3_prefetch_bucket_size"], z["stage3_max_live_parameters"]) == 0


TRACEABLE = [r for r in DATA["runs"] if r["stage"] == 3 and "error" not in r and _prefetch_off(r["zero"])
             and not r["zero"].get("zero_hpz_partition_size")]


@pytest.mark.parametrize("run", TRACEABLE, ids=lambda r: f"w{r['world_size']}-{r['name']}")
def test_traced_replay_equals_the_logger_wherever_prefetching_is_off(run):
    """zero3_traced_gathers replays DeepSpeed's release rule: one gather per use with a zero reuse distance, one per
    micro-batch with a long one, and for the tied embedding at 40k elements three of its four uses."""
    shape = DATA["shapes"][run["shape"]]
    elements = comm.zero3_traced_gathers(comm.module_trace(shape["spec"]), run["zero"])
    n, persistent = run["world_size"], comm.persistent_elements(
        shape["param_numels"], comm.zero_settings(run["zero"])["stage3_param_persistence_threshold"])
    logged = comm.logger_totals(run["logged"])["all_gather"]
    assert logged == (run["grad_accum"] * elements + persistent) * 2 // n  # bf16; all-gather logs one rank's shard


def test_traced_replay_counts_the_tied_embedding_per_use():
    trace = comm.module_trace(DATA["shapes"]["gpt2-tiny"]["spec"])
    total = sum(DATA["shapes"]["gpt2-tiny"]["param_numels"])
    tied = DATA["shapes"]["gpt2-tiny"]["tied"]
    p0 = {"stage3_param_persistence_threshold": 0}
    assert comm.zero3_traced_gathers(trace, p0) == total  # all kept: one gather per micro-batch
    assert comm.zero3_traced_gathers(trace, {**p0, "stage3_max_reuse_distance": 0}) == 2 * total + 2 * tied
    # 40k elements reach from the LM head's forward to its backward, not from one layer's forward to its backward
    assert comm.zero3_traced_gathers(trace, {**p0, "stage3_max_reuse_distance": 40_000}) == 2 * total + tied


@pytest.mark.engine
@pytest.mark.parametrize("shape", ["gpt2-tiny", "llama2-7b-scaled"])
def test_module_trace_is_the_order_the_real_model_runs(shape):
    """module_trace against forward hooks on the real transformers model: the same modules with parameters, in the
    order they run, the tied weight the same tensor."""
    import torch

    from dscourse.models import SHAPES, build_model

    model = build_model(SHAPES[shape])
    ran = []
    for module in model.modules():
        own = list(module.named_parameters(recurse=False))
        if own:
            module.register_forward_pre_hook(lambda m, args, own=own: ran.append([(id(p), p.numel()) for _, p in own]))
    ids = torch.zeros(1, 8, dtype=torch.long)
    model(input_ids=ids)
    trace = comm.module_trace(SHAPES[shape].as_dict())
    assert [[n for _, n in m] for m in ran] == [[n for _, n in m] for m in trace]
    first, last = ran[0][0][0], ran[-1][0][0]
    names_first, names_last = trace[0][0][0], trace[-1][0][0]
    assert (first == last) == (names_first == names_last) == SHAPES[shape].tied_embeddings


def test_table_covers_the_issue():
    runs = DATA["runs"]
    assert {r["world_size"] for r in runs} == {2, 4} and DATA["provenance"]["deepspeed"] == "0.19.8"
    for n in (2, 4):
        done = {(r["stage"], r["grad_accum"]) for r in runs if r["world_size"] == n and not r["zero"]}
        assert done == {(s, g) for s in range(4) for g in (1, 2)}
    knobs = {k for r in runs for k in r["zero"]}
    assert set(comm.NO_BYTES) - {"contiguous_gradients"} <= knobs
    assert set(comm.ZERO_DEFAULTS) | set(comm.CPU_UNSUPPORTED) <= knobs


def test_refused_knobs_are_the_ones_cpu_ranks_cannot_run():
    refused = {k for r in DATA["runs"] if "error" in r for k, v in r["zero"].items() if k in comm.CPU_UNSUPPORTED}
    assert refused == set(comm.CPU_UNSUPPORTED)
    assert all("not been implemented on CPU" in r["error"] for r in DATA["runs"] if "error" in r)
    with pytest.raises(ValueError, match="could not be measured on CPU"):
        comm.step_report(1e9, 3, 8, zero={"zero_quantized_weights": True})


def test_default_zero12_all_reduces_and_the_knob_restores_the_paper():
    psi, n = 1e9, 8
    ds = comm.step_report(psi, 2, n)
    assert ds["logged_bytes"]["all_reduce"] == pytest.approx(2 * psi + 5)  # bf16 gradients + two scalars
    assert ds["wire_bytes_per_rank"] == pytest.approx(1.5 * ds["paper_wire_bytes_per_rank"], rel=1e-8)
    fixed = comm.step_report(psi, 2, n, zero={"use_multi_rank_bucket_allreduce": False})
    assert fixed["logged_bytes"]["reduce"] == 2 * psi
    assert fixed["wire_bytes_per_rank"] == pytest.approx(fixed["paper_wire_bytes_per_rank"], rel=1e-8)
    # reduce_scatter false all-reduces too: the same bytes as the default
    assert comm.step_report(psi, 1, n, zero={"reduce_scatter": False})["logged_bytes"] == \
        comm.step_report(psi, 1, n)["logged_bytes"]


def test_zero3_gathers_once_when_the_trace_fits_and_twice_when_released():
    assert comm.zero3_regime(1e8) == "kept" and comm.zero3_regathered(1e8) == 0
    assert comm.zero3_regime(7e9) == "estimate" and comm.zero3_regathered(7e9) == pytest.approx(6e9)
    released = {"stage3_max_reuse_distance": 0, "stage3_prefetch_bucket_size": 0}
    assert comm.zero3_regathered(7e9, released) == 7e9


@pytest.mark.engine
def test_logger_measured_again_equals_the_model(tmp_path):
    """One launch on 2 ranks: ZeRO-2's default all-reduce and ZeRO-3 keeping its gathered parameters."""
    specs = [r for r in DATA["runs"] if r["world_size"] == 2 and r["name"] in ("z2-ga1", "z3-p0-ga1")]
    configs = [{k: r[k] for k in ("name", "stage", "grad_accum", "zero", "shape")} for r in specs]
    res = run_ranks("dscourse.scripts.comm_volume", ["--configs", json.dumps(configs)], nproc=2, timeout=600,
                    out_dir=tmp_path)
    for spec, got in zip(specs, res.ranks[0]["results"], strict=True):
        report = comm.model_for_run(spec, DATA["shapes"])
        assert comm.logger_totals(got["logged"]) == report["logged_bytes"], spec["name"]


def test_comm_cli_stage_json():
    r = subprocess.run([PY, "-m", "dscourse.comm", "--params", "7B", "--gpus", "64", "--stage", "2", "--json"],
                       capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and set(comm.COLLECTIVES) <= set(out["logged_bytes"])
    assert out["logged_bytes"]["all_reduce"] == 14e9 + 5 and out["wire_bytes_per_rank"] > 0
    assert all(c["source"] for c in out["collectives"])


@pytest.mark.parametrize("args", [["--stage", "4"], ["--json"], ["--zero", "{"], ["--zero", '{"nope": 1}'],
                                  ["--stage", "3", "--zero", '{"zero_hpz_partition_size": 3}'],
                                  ["--stage", "3", "--zero", '{"zero_quantized_gradients": true}']])
def test_comm_cli_bad_input_is_one_line(args):
    r = subprocess.run([PY, "-m", "dscourse.comm", "--params", "7B", "--gpus", "16", *args], capture_output=True,
                       check=False, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--configs", "[{}]"], ["--configs", "@/no/such/file"], ["--configs", "x"],
                                  ["--configs", "[]", "--shape", "nope"]])
def test_rank_script_bad_input_is_one_line(args, tmp_path):
    r = subprocess.run([PY, "-m", "dscourse.scripts.comm_volume", *args, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_rank_script_help():
    r = subprocess.run([PY, "-m", "dscourse.scripts.comm_volume", "--help"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0 and "comms_logger" in r.stdout
