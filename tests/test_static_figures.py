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


def test_sharding_figure_shows_held_per_param():
    from dscourse.memory.sharding import MOMENTS, STRATEGIES, held_per_param
    from dscourse.plots import sharding_figure

    fig = sharding_figure(gpu_counts=(4, 16), gpus=16, group=8)
    cats = ("params", "grads", "master", "optim")
    for step, n in zip(_steps(fig), (4, 16)):
        ys = step.args[0]["y"]
        for k, moment in enumerate(MOMENTS):
            block = ys[k * (len(cats) + 1):(k + 1) * (len(cats) + 1)]
            for c, y in zip(cats, block):
                assert y == [round(held_per_param(s, n, 8, moment)[c], 4) for s in STRATEGIES]
            assert block[-1] == [round(sum(v), 4) for v in zip(*block[:-1])]  # the totals above the stacks
    # at the optimizer step FULL_SHARD and ZeRO-3 hold the same 16 bytes per element (page 4.6), at rest 12 vs 16
    assert sum(held_per_param("FULL_SHARD", 16, 8, "step").values()) == 16 / 16
    assert sum(held_per_param("ZeRO-3", 16, 8, "rest").values()) == 16 / 16
    assert sum(held_per_param("FULL_SHARD", 16, 8, "rest").values()) == 12 / 16


# --- One style for every figure: the book's template and palette ----------------------------------------------

def _specs(html: str) -> list[dict]:
    """The plotly figures that :func:`dscourse.plots.figure_html` wrote into ``html``."""
    import json
    import re

    return [json.loads(m) for m in re.findall(r"var f=(\{.*?\});function draw", html, re.S)]


def _colors(node, found=None):
    """Every colour a figure sets itself (trace, shape, annotation), not its template's."""
    found = set() if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template":
                continue
            if isinstance(value, str) and key.endswith("color"):
                found.add(value)
            else:
                _colors(value, found)
    elif isinstance(node, list):
        for item in node:
            _colors(item, found)
    return found


def _assert_book_style(spec: dict, where: str):
    from dscourse.plots import NEUTRALS, PALETTE, tint

    assert spec["layout"]["template"]["layout"]["colorway"] == list(PALETTE), f"{where}: not the book's template"
    rgb = {tint(c, 0)[: tint(c, 0).rindex(",")] for c in PALETTE}
    for color in _colors({"data": spec["data"], "layout": spec["layout"]}):
        ok = color in PALETTE or color in NEUTRALS or color[: color.rfind(",")] in rgb or color == "white"
        assert ok, f"{where}: colour {color} is outside the book's palette (dscourse.plots.PALETTE)"


def _package_figures():
    from dscourse import plots, precision

    yield "memory_explorer", plots.memory_explorer(presets=["Llama-2-7B"], gpu_counts=(1, 8), gpus=8)
    yield "peak_timeline", plots.peak_timeline()
    yield "oom_attempts", plots.oom_attempts()
    yield "universal_repartition", plots.universal_repartition()
    yield "loss_scale_explorer", plots.loss_scale_explorer(windows=(50, 1000), window=1000) if _has_deepspeed() else None
    yield "comm_explorer", plots.comm_explorer(presets=["Llama-2-7B"], world_sizes=(2, 16), world_size=16)
    yield "knob_effects_figure", plots.knob_effects_figure()
    yield "sharding_figure", plots.sharding_figure()
    yield "stacked_memory_bar", plots.stacked_memory_bar([("a", {"params": 2e9, "grads": 1e9})], limit_gb=80)
    yield "comm_measured_figure", plots.comm_measured_figure(4)
    yield "comm_figure", plots.comm_figure(7e9, 64, 2)
    yield "throughput_figure", plots.throughput_figure()
    yield "slowdown_figure", plots.slowdown_figure()
    yield "loss_figure", plots.loss_figure({"a": {1: 2.0, 2: 1.5}}, "t", "loss")
    if _has_deepspeed():
        trace = precision.simulate_loss_scale([0.0] * 20, initial_scale_power=4)
        yield "scale_figure", plots.scale_figure(trace)


def _has_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def test_every_package_figure_has_the_book_style():
    from dscourse.plots import Figure, figure_html

    seen = 0
    for name, fig in _package_figures():
        if fig is None:
            continue
        html = fig._repr_html_() if isinstance(fig, Figure) else figure_html(fig, "x")
        (spec,) = _specs(html)
        _assert_book_style(spec, name)
        seen += 1
    assert seen >= 11


def test_every_notebook_figure_has_the_book_style():
    """What a reader sees in a notebook page: each committed figure was drawn with the one template and palette."""
    import json
    from pathlib import Path

    seen = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                html = out.get("data", {}).get("text/html", "")
                for spec in _specs("".join(html) if isinstance(html, list) else html):
                    _assert_book_style(spec, f"{path.stem} cell {i}")
                    seen += 1
    assert seen >= 15, seen
