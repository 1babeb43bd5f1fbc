"""The kernel-free figures of the book carry the same numbers the calculators compute: every slider step and
dropdown entry is checked here against the dscourse function behind it; the figure HTML is deterministic."""

import math

import pytest

pytest.importorskip("plotly")

from dscourse.memory import CATEGORIES, PRESETS, estimate, peak_of  # noqa: E402
from dscourse.memory.peak import bar  # noqa: E402
from dscourse.plots import comm_explorer, loss_scale_explorer, memory_explorer  # noqa: E402


def _steps(fig):
    return fig.fig.layout.sliders[0].steps


def test_memory_explorer_matches_estimate():
    gpu_counts = (1, 8, 64)
    fig = memory_explorer(presets=["Llama-2-7B", "Llama-2-70B"], gpu_counts=gpu_counts, preset="Llama-2-7B", gpus=8)
    traces = fig.fig.data
    for step, n in zip(_steps(fig), gpu_counts):
        ys, indices = step.args[0]["y"], step.args[1]
        for y, i in zip(ys, indices):
            trace = traces[i]
            if trace.type != "bar":
                continue
            preset = "Llama-2-7B" if trace.visible else "Llama-2-70B"
            arch = PRESETS[preset]
            cat = next(c for c in CATEGORIES if trace.legendgroup == c)
            for stage, value in enumerate(y):
                pk = peak_of(arch, n, stage, 1, 2048, gpus_per_node=min(8, n))
                expected = bar(estimate(pk.setup, "allocated"), pk).get(cat)
                assert value == (round(expected / 1e9, 3) if expected is not None else None)
                if cat == "activations":  # the allocated bars add up to the peak itself
                    assert sum(bar(pk.states, pk).values()) == pk.peak_bytes
    # one dropdown entry per model, each showing only its own traces
    buttons = fig.fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["Llama-2-7B", "Llama-2-70B"]
    assert all(any(b.args[0]["visible"]) and not all(b.args[0]["visible"]) for b in buttons)


def test_static_figures_are_deterministic():
    assert memory_explorer()._repr_html_() == memory_explorer()._repr_html_()
    assert comm_explorer()._repr_html_() == comm_explorer()._repr_html_()


def test_comm_explorer_matches_step_time():
    from dscourse.comm import BANDWIDTHS, step_time

    fig = comm_explorer(presets=["Llama-2-7B"], world_sizes=(2, 64), world_size=2)
    for step, n in zip(_steps(fig), (2, 64)):
        for stage, y in enumerate(step.args[0]["y"]):
            assert y == [round(step_time(PRESETS["Llama-2-7B"].params, stage, n, bw), 6) for bw in BANDWIDTHS.values()]


def test_loss_scale_explorer_replays_deepspeed():
    pytest.importorskip("deepspeed")
    from dscourse.precision import grad_scenario, simulate_loss_scale

    fig = loss_scale_explorer(windows=(100, 1000), window=1000, steps=600)
    for step, w in zip(_steps(fig), (100, 1000)):
        update = step.args[0]
        trace = simulate_loss_scale(grad_scenario("healthy", 600, 0), "fp16", loss_scale_window=w)
        # the first dynamic traces belong to the first scenario ("healthy"): scale, skipped, error
        assert update["x"][1] == trace.skipped
        assert update["y"][0][-1] == math.log2(trace.scales[-1])
        assert update["name"][1] == f"跳过的步（{len(trace.skipped)}）"


def test_peak_timeline_carries_the_recorded_steps():
    from dscourse.calibration import load_peak_traces
    from dscourse.plots import peak_timeline

    traces = load_peak_traces()
    assert [t["stage"] for t in traces] == [2, 3]
    fig = peak_timeline(traces)
    lines = [d for d in fig.fig.data if d.mode == "lines"]
    for line, t in zip(lines, traces):
        # the curve's top is the step's recorded peak, which the phase peaks name
        assert max(line.y) == round(max(pk["bytes"] for pk in t["peaks"].values()) / 1e9, 3)
        assert set(t["peaks"]) == {"forward", "backward", "step"}
    assert [b.label for b in fig.fig.layout.updatemenus[0].buttons] == ["ZeRO-2", "ZeRO-3"]
    assert peak_timeline()._repr_html_() == peak_timeline()._repr_html_()


def test_knob_effects_figure_shows_the_peak_function():
    from dscourse.memory.knobs import knob_effects
    from dscourse.memory.shapes import PRESETS
    from dscourse.plots import knob_effects_figure

    fig = knob_effects_figure().fig
    assert len(fig.data) == 4 and [t.visible for t in fig.data] == [True, True, False, False]
    base, rows = knob_effects(PRESETS["Llama-2-7B"], 8, 3, 1, 4096, checkpointing=False)
    zero3_off = fig.data[3]
    assert list(zero3_off.x) == [round(p / 1e9, 2) for p in [base.peak_bytes] + [r["peak_bytes"] for r in rows]]
    assert knob_effects_figure()._repr_html_() == knob_effects_figure()._repr_html_()
