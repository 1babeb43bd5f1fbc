"""4.4 mixed precision: formats, underflow, master weights, DeepSpeed's loss scaler, bf16 on real ranks, GPU data."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dscourse import precision as P

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")

# ---------------------------------------------------------------------------------------------- formats


def test_format_table_matches_ieee_and_torch_finfo():
    f = {x.name: x for x in P.format_table()}
    assert {"fp32", "tf32", "bf16", "fp16"} <= set(f)
    assert (f["fp16"].max, f["fp16"].smallest_normal, f["fp16"].smallest_subnormal, f["fp16"].eps) == \
        (65504.0, 2.0**-14, 2.0**-24, 2.0**-10)
    assert (f["bf16"].exponent_bits, f["bf16"].mantissa_bits, f["bf16"].eps) == (8, 7, 2.0**-7)
    assert f["bf16"].smallest_normal == f["fp32"].smallest_normal == 2.0**-126
    assert f["bf16"].smallest_subnormal == 2.0**-133 and f["fp32"].smallest_subnormal == 2.0**-149
    assert f["tf32"].dtype is None and f["tf32"].bits == 19 and f["tf32"].eps == f["fp16"].eps
    assert f["tf32"].smallest_subnormal is None
    # The IEEE-style formats follow from their bit layouts alone.
    for name, (e, m) in {"fp32": (8, 23), "bf16": (8, 7), "fp16": (5, 10), "fp8_e5m2": (5, 2)}.items():
        if name in f:
            lay = P.layout_format(name, e, m)
            assert (lay.max, lay.smallest_normal, lay.smallest_subnormal, lay.eps, lay.bits) == \
                (f[name].max, f[name].smallest_normal, f[name].smallest_subnormal, f[name].eps, f[name].bits)
    if "fp8_e4m3" in f:  # e4m3fn is not IEEE-like: no inf, so its max is 448, not 240
        assert f["fp8_e4m3"].max == 448 and P.layout_format("e4m3", 4, 3).max == 240


def test_smallest_subnormal_survives_and_half_of_it_rounds_to_zero():
    for f in P.format_table():
        if f.dtype:
            dtype = getattr(torch, f.dtype)
            assert torch.tensor(f.smallest_subnormal).to(dtype).float().item() == f.smallest_subnormal
            assert torch.tensor(f.smallest_subnormal / 2).to(dtype).float().item() == 0.0


def test_format_rows_have_every_column():
    rows = P.format_rows(P.format_table())
    assert all(len(r) == len(P.FORMAT_HEADER) for r in rows)
    assert rows[[r[0] for r in rows].index("fp16")][6].endswith("(2^-24)")


# ---------------------------------------------------------------------------------------------- underflow


def test_cast_report_on_known_values():
    g = torch.tensor([2.0**-26, 2.0**-20, 1.0, 1e5, 0.0])
    r = P.cast_report(g, torch.float16)
    assert r["elements"] == 4  # the zero is left out
    assert (r["zero"], r["subnormal"], r["overflow"]) == (0.25, 0.25, 0.25)
    scaled = P.cast_report(g[:3], torch.float16, 2.0**16)
    assert (scaled["zero"], scaled["subnormal"], scaled["overflow"]) == (0.0, 0.0, 1 / 3)  # 2^16 > 65504: inf
    assert P.cast_report(g, torch.bfloat16)["zero"] == 0.0


def test_real_gradients_underflow_in_fp16_and_loss_scaling_helps():
    grads = P.model_gradients("gpt2-tiny")
    plain, scaled = (P.cast_report(grads, torch.float16, s) for s in (1.0, 2.0**16))
    assert plain["zero"] > 0 and plain["subnormal"] > 0.05
    assert scaled["zero"] < plain["zero"] / 5 and scaled["overflow"] == 0
    assert P.cast_report(grads, torch.bfloat16)["zero"] == 0
    curve = P.underflow_curve(grads, torch.float16, [0, 8, 16])
    assert curve == sorted(curve) and curve[-1] > 0.3
    bins, counts = P.log2_histogram(grads, -50, 10)
    assert len(bins) == len(counts) == 60 and sum(counts) == (grads != 0).sum().item()
    # A real fp16 backward (with the loss scaled) gives gradients close to fp32.
    low = P.model_gradients("gpt2-tiny", dtype=torch.float16, scale=2.0**16)
    assert ((low - grads).norm() / grads.norm()).item() < 0.01


def test_reference_gradients_are_exact_zeros_where_fp32_leaves_rounding_noise():
    """The reference (float64, one thread, noise floor) has zeros exactly where the math has them: the unused
    position rows and the attention key biases (softmax ignores a shift shared by all keys). An fp32 backward
    leaves CPU-dependent noise there and agrees with the reference elsewhere."""
    grads = P.model_gradients("gpt2-tiny")
    assert P.exact_zero_gradients("gpt2-tiny") == {"transformer.wpe.weight": 64, "transformer.h.0.attn.c_attn.bias": 64,
                                                   "transformer.h.1.attn.c_attn.bias": 64}
    from dscourse.models import build_model, synthetic_batch

    torch.manual_seed(0)
    model = build_model("gpt2-tiny")
    ids = synthetic_batch("gpt2-tiny", 4, 0, seed=0)
    model(input_ids=ids, labels=ids).loss.backward()
    fp32 = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert ((fp32 - grads).norm() / grads.norm()).item() < 1e-5
    bias = model.transformer.h[0].attn.c_attn.bias.grad
    assert bias[64:128].abs().max().item() < 2.0**-30 < bias[:64].abs().min().item()  # noise vs real gradients


# ---------------------------------------------------------------------------------------------- master weights


def test_bf16_loses_small_updates():
    r = P.lost_update(1.0, 1e-4)
    assert r["lost"] and r["low"] == 1.0 and r["half_ulp"] == 2.0**-8
    assert not P.lost_update(1.0, 1e-2)["lost"]
    assert not P.lost_update(1.0, 1e-4, "float32")["lost"]


def test_master_weights_track_fp32_and_pure_bf16_falls_behind():
    runs = P.train_master_weights(steps=60, lr=2e-5)
    last = {m: sum(r["losses"][-10:]) / 10 for m, r in runs.items()}
    assert abs(last["bf16 + fp32 master"] - last["fp32"]) < 0.01
    assert last["pure bf16"] - last["fp32"] > 0.02
    assert runs["fp32"]["unchanged"][-1] < 0.01 < runs["pure bf16"]["unchanged"][-1]
    with pytest.raises(ValueError):
        P.train_master_weights(steps=1, modes=("fp8",))


# ---------------------------------------------------------------------------------------------- loss scaler


class _Rank0:
    @staticmethod
    def get_rank(group=None):
        return 0


def _reference_scales(overflows, init_power=16, window=1000, hysteresis=2, min_scale=1, consecutive=False):
    """Drive DeepSpeed's DynamicLossScaler directly (constructed by hand, not through dscourse)."""
    from deepspeed.runtime.fp16 import loss_scaler as ls

    scaler = ls.DynamicLossScaler(init_scale=2**init_power, scale_window=window, min_scale=min_scale,
                                  delayed_shift=hysteresis, consecutive_hysteresis=consecutive)
    saved = ls.dist
    ls.dist = _Rank0
    scales, error = [], None
    try:
        for o in overflows:
            scales.append(scaler.cur_scale)
            try:
                scaler.update_scale(o)
            except Exception as e:  # noqa: BLE001
                error = str(e)
                break
    finally:
        ls.dist = saved
    return scales, error


def test_the_scaler_is_deepspeeds_class_built_from_the_fp16_section():
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler

    s = P.build_loss_scaler("fp16", initial_scale_power=12, loss_scale_window=50, hysteresis=3, min_loss_scale=4)
    assert type(s) is DynamicLossScaler
    assert (s.cur_scale, s.scale_window, s.delayed_shift, s.min_scale) == (2**12, 50, 3, 4)
    assert type(P.build_loss_scaler("bf16")) is LossScaler and P.build_loss_scaler("bf16").cur_scale == 1.0
    assert P.build_loss_scaler("fp16").cur_scale == 2**16  # DeepSpeed's default initial_scale_power


def test_scale_halves_on_overflow_only_after_hysteresis():
    t = P.simulate_loss_scale([True, True, True, False])
    assert t.scales == [2**16, 2**16, 2**15, 2**14] and t.skipped == [0, 1, 2]
    assert "hysteresis is 2" in t.messages[0] and "reducing to 32768" in t.messages[1]
    assert P.simulate_loss_scale([True, False], hysteresis=1).scales == [2**16, 2**15]


def test_scale_doubles_after_the_window_and_hysteresis_refills():
    t = P.simulate_loss_scale([False] * 7, loss_scale_window=3)
    assert t.scales == [2**16] * 4 + [2**17] * 3 and t.skipped == []
    # After the doubling, hysteresis is back to 2: the next overflow only uses it up.
    t = P.simulate_loss_scale([True, True, False, False, False, True, False], loss_scale_window=2)
    assert t.scales == [2**16, 2**16, 2**15, 2**15, 2**15, 2**16, 2**16]


def test_at_minimum_deepspeed_raises():
    t = P.simulate_loss_scale([True] * 5, initial_scale_power=1, hysteresis=1, min_loss_scale=1)
    assert t.scales == [2.0, 1.0] and t.failed_at == 1
    assert t.error == ("Exception: Current loss scale already at minimum - cannot decrease scale anymore. "
                       "Exiting run.")
    assert P.AT_MINIMUM in t.error
    beyond = P.simulate_loss_scale(P.grad_scenario("beyond fp16"))
    assert beyond.failed_at == 17 and len(beyond.skipped) == 18  # 2^16 → 1 in 16 halvings, 1 + 1 hysteresis
    assert P.simulate_loss_scale(P.grad_scenario("beyond fp16"), initial_scale_power=8).failed_at < beyond.failed_at
    bf16 = P.simulate_loss_scale(P.grad_scenario("beyond fp16"), "bf16")
    assert bf16.error is None and bf16.skipped == []
    diverged = P.simulate_loss_scale(P.grad_scenario("diverged"), "bf16")
    assert diverged.error is None and len(diverged.skipped) == 1500  # bf16 skips every NaN step, silently


def test_zero0_optimizer_stays_at_the_minimum_without_raising():
    t = P.simulate_zero0_loss_scale([True] * 20, initial_scale_power=3, hysteresis=4)
    assert t.error is None and t.scales[:5] == [8, 4, 2, 1, 1]  # no hysteresis there
    assert len(t.skipped) == 20


@settings(max_examples=30, deadline=None)
@given(overflows=st.lists(st.booleans(), min_size=1, max_size=120), power=st.integers(0, 20),
       window=st.integers(1, 20), hysteresis=st.integers(1, 4), min_power=st.integers(0, 4),
       consecutive=st.booleans())
def test_simulation_matches_deepspeeds_class_driven_directly(overflows, power, window, hysteresis, min_power,
                                                              consecutive):
    t = P.simulate_loss_scale(overflows, initial_scale_power=power, loss_scale_window=window, hysteresis=hysteresis,
                              min_loss_scale=2**min_power, consecutive_hysteresis=consecutive)
    scales, error = _reference_scales(overflows, power, window, hysteresis, 2**min_power, consecutive)
    assert t.scales == scales
    assert (t.error is not None) == (error is not None)
    assert t.skipped == [i for i, o in enumerate(overflows[:len(scales)]) if o]


def test_simulation_leaves_deepspeed_as_it_was():
    from deepspeed.runtime.fp16 import loss_scaler as ls
    from deepspeed.utils import logger

    before = (ls.dist, list(logger.handlers), logger.level)
    P.simulate_loss_scale([True, True, False])
    assert (ls.dist, list(logger.handlers), logger.level) == before


def test_deepspeeds_config_model_rejects_bad_keys():
    for keys in ({"loss_scale_window": 0}, {"min_loss_scale": 0}, {"min_loss_scale": 0.5}, {"windows": 3}):
        with pytest.raises(ValueError):
            P.simulate_loss_scale([False], **keys)
    with pytest.raises(ValueError):
        P.build_loss_scaler("fp8")


def test_scenarios_are_seeded_and_named():
    assert P.grad_scenario("healthy", 100) == P.grad_scenario("healthy", 100)
    assert P.grad_scenario("healthy", 100, seed=1) != P.grad_scenario("healthy", 100)
    assert all(math.isnan(x) for x in P.grad_scenario("diverged", 1600)[1500:])
    with pytest.raises(ValueError):
        P.grad_scenario("exploding")


def test_scale_figure_marks_the_failure():
    t = P.simulate_loss_scale(P.grad_scenario("beyond fp16"))
    from dscourse.plots import scale_figure

    html = scale_figure(t, P.grad_scenario("beyond fp16"), name="x")._repr_html_()
    texts = [json.dumps(text)[1:-1] for text in ("第 17 步抛出异常", "跳过的步（18）")]  # as the figure's JSON spells them
    assert 'id="x"' in html and all(text in html for text in texts)


# ---------------------------------------------------------------------------------------------- widget


def test_loss_scale_explorer_is_a_thin_layer_over_the_simulation():
    from dscourse.widgets import LossScaleExplorer

    ex = LossScaleExplorer(steps=600)
    assert ex.result.error is None and "跑完全程" in ex.summary.value
    assert 'id="loss-scale-explorer"' in ex.chart.outputs[0]["data"]["text/html"]
    trace = ex.set(loss_scale_window=50, hysteresis=1)
    expected = P.simulate_loss_scale(P.grad_scenario("healthy", 600), loss_scale_window=50, hysteresis=1)
    assert trace.scales == expected.scales and trace.skipped == expected.skipped
    trace = ex.set(scenario="beyond fp16")
    assert trace.failed_at == 16 and "Current loss scale already at minimum" in ex.summary.value  # hysteresis 1
    trace = ex.set(precision="bf16")
    assert trace.error is None and trace.final_scale == 1.0
    ex.set(precision="fp16", min_loss_scale=4096, initial_scale_power=8)  # scale starts below its floor
    assert ex.result.error is not None


# ---------------------------------------------------------------------------------------------- memory


def test_model_state_bytes_per_precision():
    psi = 1000
    assert sum(P.model_state_bytes(psi, 1, 0, "fp32").values()) == 12 * psi  # + 4Ψ grads during the step = 16
    assert sum(P.model_state_bytes(psi, 1, 0, "bf16").values()) == 14 * psi  # + 2Ψ grads = 16
    assert sum(P.model_state_bytes(psi, 4, 2, "bf16").values()) == 2 * psi + 12 * psi // 4
    assert sum(P.model_state_bytes(psi, 4, 2, "fp32").values()) == 4 * psi + 12 * psi // 4
    with pytest.raises(ValueError):
        P.model_state_bytes(psi, 4, 3, "fp32")


# ---------------------------------------------------------------------------------------------- real ranks


def test_bf16_and_fp32_deepspeed_runs_agree_on_two_ranks():
    from dscourse.launch import run_ranks

    # notebook 04's launch, argument for argument (launched once per test session)
    runs = [{"name": "bf16", "precision": "bf16"}, {"name": "fp32", "precision": "fp32"},
            {"name": "bf16, comm fp32", "precision": "bf16", "extra": {"communication_data_type": "fp32"}},
            {"name": "fp16", "precision": "fp16"}]
    res = run_ranks("dscourse.scripts.precision_run",
                    ["--shape", "gpt2-tiny", "--stage", "2", "--steps", "30", "--micro-batch", "4", "--pool", "4",
                     "--lr", "1e-3", "--count-bytes", "--runs", json.dumps(runs)], nproc=2, timeout=600)
    for rank in res.ranks:
        by = {r["name"]: r for r in rank["runs"]}
        bf16, fp32 = by["bf16"], by["fp32"]
        assert len(bf16["losses"]) == len(fp32["losses"]) == 30
        assert by["bf16, comm fp32"]["communication_data_type"] == "float32"
        assert max(abs(a - b) for a, b in zip(bf16["losses"], fp32["losses"])) < 0.05
        assert fp32["losses"][-1] < fp32["losses"][0] - 0.2  # it learns
        assert (bf16["param_dtype"], fp32["param_dtype"]) == ("bfloat16", "float32")
        assert (bf16["communication_data_type"], fp32["communication_data_type"]) == ("bfloat16", "float32")
        assert bf16["skipped_steps"] == fp32["skipped_steps"] == 0
        for r in (bf16, fp32):
            held = sum(r["held_after_step"]["cpu"].values())
            assert abs(held - sum(P.model_state_bytes(r["params"], 2, 2, r["precision"]).values())) <= 64
        if not torch.ops.mkldnn._is_mkldnn_fp16_supported():
            assert by["fp16"]["error"] == "ValueError: Type fp16 is not supported on your device."


# ---------------------------------------------------------------------------------------------- GPU data


def test_gpu_precision_data_has_both_precisions_and_provenance():
    data = P.load_gpu_precision()
    prov = data["provenance"]
    for key in ("gpu", "torch", "cuda", "deepspeed", "transformers", "date", "shape", "micro_batch", "seq"):
        assert prov.get(key), key
    assert "H100" in prov["gpu"] and prov["deepspeed"] == "0.19.8" and not prov["dry_run"]
    runs = data["runs"]
    assert {r["precision"] for r in runs} == {"fp16", "bf16"}
    for r in runs:
        assert "error" not in r and r["tokens_per_second"] > 0 and r["steps"] >= 100
        assert len(r["losses"]) == len(r["loss_scale"]) == len(r["skipped"]) == r["steps"]
        assert sum(r["skipped"]) == r["skipped_steps"] and math.isfinite(r["final_loss"])
        if r["precision"] == "fp16":
            assert all(math.log2(s).is_integer() for s in r["loss_scale"])
            # Whenever the scale went down, the step before overflowed (DeepSpeed's scaler, hysteresis 2).
            assert all(r["skipped"][t - 1] for t in range(1, r["steps"]) if r["loss_scale"][t] < r["loss_scale"][t - 1])
        else:
            assert set(r["loss_scale"]) == {1.0} and r["skipped_steps"] == 0
    probe = next(r for r in runs if r.get("fp16", {}).get("initial_scale_power") == 32)
    assert probe["loss_scale"][0] == 2.0**32 and probe["skipped_steps"] > 0
