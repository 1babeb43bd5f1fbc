"""The memory calculator widget: set controls as a reader would, read what it shows."""

import pytest

from dscourse.memory import PRESETS, FormulaError, Setup, estimate
from dscourse.widgets import FREE, MemoryCalculator


def test_calculator_shows_the_chosen_formula_for_the_chosen_setup():
    calc = MemoryCalculator(preset="Llama-2-7B", gpus=8, stage=2, formula="allocated")
    expected = estimate(Setup(params=PRESETS["Llama-2-7B"].params, gpus=8, gpus_per_node=8, stage=2,
                              largest_layer=PRESETS["Llama-2-7B"].largest_layer), "allocated")
    assert calc.result.gpu_bytes == expected.gpu_bytes
    assert "每张 GPU 模型状态" in calc.summary.value and "训练一步的峰值" in calc.summary.value
    # the peak it shows is the one peak function's, at the calculator's sequence and micro-batch
    from dscourse.memory import peak_of

    assert calc.peak.peak_bytes == peak_of(PRESETS["Llama-2-7B"], 8, 2, 1, 2048, gpus_per_node=8).peak_bytes
    calc.set(checkpointing=True)
    assert calc.peak.peak_bytes < peak_of(PRESETS["Llama-2-7B"], 8, 2, 1, 2048, gpus_per_node=8).peak_bytes
    chart = calc.chart.outputs[0]["data"]["text/html"]
    assert 'id="memory-calculator"' in chart and "ZeRO-3" in chart  # the stacked bar of every stage


def test_changing_stage_nodes_and_formula_updates_the_result():
    calc = MemoryCalculator(preset="Llama-2-13B", gpus=8, stage=2)
    before = calc.result.gpu_bytes
    calc.set(stage=3)
    assert calc.result.gpu_bytes < before
    calc.set(nodes=4)  # 32 GPUs: the 1/N terms shrink again
    assert calc.result.setup.gpus == 32 and calc.result.setup.nodes == 4
    calc.set(formula="paper")
    assert calc.result.gpu_bytes == 16 * PRESETS["Llama-2-13B"].params / 32


def test_free_size_and_offload_with_host_memory():
    calc = MemoryCalculator(preset="Llama-2-7B", gpus=1, stage=3)
    calc.set(preset=FREE, size="70b", offload_optimizer="cpu", offload_param="cpu")
    assert calc.result.setup.params == 70 * 10**9
    assert calc.result.cpu_bytes > 1e12  # 70B with everything on the host needs > 1 TB of RAM
    assert "主机内存" in calc.summary.value
    assert calc.size.disabled is False


def test_bad_input_shows_a_message_instead_of_a_result():
    calc = MemoryCalculator()
    calc.set(preset=FREE, size="lots")
    assert isinstance(calc.result, ValueError) and "lots" in calc.summary.value
    assert calc.chart.outputs == ()
    calc.set(size="7B", stage=2, offload_param="cpu")
    assert isinstance(calc.result, FormulaError) and "stage 3" in calc.summary.value
    calc.set(stage=3)
    assert not isinstance(calc.result, Exception)


def test_config_builder_shows_strict_json_checked_as_it_changes():
    import json

    from dscourse.config import build_config
    from dscourse.widgets import ConfigBuilder

    builder = ConfigBuilder(stage=2, integration="hf", world_size=8)
    assert builder.config == build_config(2, micro_batch=4, world_size=8, integration="hf")
    assert builder.problems == [] and "检查通过" in builder.report.value
    shown = builder.json.value.removeprefix("<pre style='font-size:12px;line-height:1.3'>").removesuffix("</pre>")
    assert json.loads(shown.replace("&quot;", '"')) == builder.config  # what the reader copies is strict JSON
    builder.set(stage=3, offload_param="cpu", integration="deepspeed")
    assert builder.config["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "auto" not in json.dumps(builder.config)
    builder.set(stage=2)  # parameter offload under stage 2: refused with a message, no config shown
    assert builder.config is None and "stage 3" in builder.report.value


def test_planner_widget_shows_what_the_plan_command_says_and_why_nothing_fits():
    from dscourse.memory.cli import run_plan
    from dscourse.widgets import PlanWidget

    plan = PlanWidget(model="Llama-3-8B", gpus=8, gpu_memory_gb=24, host_memory_gb=512, seq=4096, global_batch=64)
    assert plan.result == run_plan([*plan.argv(), "--json"])  # the command line's plan, candidate for candidate
    first = plan.result["candidates"][0]
    assert first["variant"] in plan.summary.value and "&quot;stage&quot;: 3" in plan.summary.value  # its ds_config
    assert "python -m dscourse.memory plan --model-config Llama-3-8B --gpus 8" in plan.summary.value
    fits = plan.result["fits"]
    more = plan.set(gpu_memory=80)  # more memory: more configurations fit, the cheapest no slower
    assert more["fits"] > fits
    assert more["candidates"][0]["step_seconds"] <= first["step_seconds"]
    short = plan.set(gpus=1, gpu_memory=8, host_memory=64, global_batch=8)
    assert isinstance(short, FormulaError) and "short" in plan.summary.value  # says what is short, not a traceback
    plan.set(gpus=16)  # a global batch of 8 cannot be split over 16 GPUs
    assert "multiple of the 16 GPUs" in plan.summary.value


def _same_state(widget, model_id: str, saved: dict, where: str) -> int:
    """Compare a live widget tree with the state a notebook saved for it, model by model; how many were compared."""
    import json

    state = saved[model_id]["state"]
    mine = json.loads(json.dumps(widget.get_state(), default=list))
    compared = 1
    for key, value in mine.items():
        if key not in state or key in ("layout", "style", "tabbable", "tooltip"):
            continue
        if key == "children":
            assert len(value) == len(state[key]), where
            for child, ref in zip(widget.children, state[key]):
                compared += _same_state(child, ref.removeprefix("IPY_MODEL_"), saved, f"{where}/{child.__class__.__name__}")
        else:
            assert state[key] == value, (f"{where} {getattr(widget, 'description', '')!r} {key}: saved "
                                         f"{str(state[key])[:120]}, the code builds {str(value)[:120]}: re-execute")
    return compared


@pytest.mark.parametrize("notebook", ["01_memory_accounting", "05_multi_node"])
def test_saved_widget_state_is_what_the_cell_builds(notebook):
    """In the static book a widget is a picture of its saved state, so that state must be what the widget's own cell
    builds (stage=2 in the code, stage 2 on the page), not what a later cell left it at."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    saved = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    shown = 0
    for cell in nb["cells"]:
        views = [o["data"]["application/vnd.jupyter.widget-view+json"] for o in cell.get("outputs", [])
                 if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        if not views:
            continue
        *body, last = "".join(cell["source"]).rstrip().splitlines()
        namespace = {}
        exec("\n".join(body), namespace)
        widget = eval(last, namespace)
        assert _same_state(widget, views[0]["model_id"], saved, notebook) > 5
        shown += 1
    assert shown >= 1
