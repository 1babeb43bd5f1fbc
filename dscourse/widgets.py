"""ipywidgets front ends: thin layers over the pure functions of :mod:`dscourse.memory`.

Written for ipywidgets 7.7 (Colab) and 8 alike: only widgets and keyword arguments both have.
"""

from __future__ import annotations

import html

from .memory import FORMULAS, PRESETS, FormulaError, Setup, arch_setup, estimate, format_bytes, parse_count, peak
from .memory.lora import TARGET_SETS
from .memory.peak import Lora, bar
from .plots import stacked_memory_bar

FREE = "自定义 (free size)"
# The model's field names (in FormulaError messages) as the calculator's controls are labelled
LABELS = {"stage": "“ZeRO stage”", "gpus": "GPU 总数（每节点 GPU × 节点数）", "gpus_per_node": "“每节点 GPU”",
          "largest_layer": "最大层的参数量", "offload_optimizer": "“offload 优化器”", "offload_param": "“offload 参数”",
          "formula": "“公式”", "seq": "“序列长度”", "micro_batch": "“micro-batch”"}


def _say(e: Exception) -> str:
    return e.worded(LABELS) if isinstance(e, FormulaError) else str(e)


class _Controls:
    """Controls that code sets by name, as a reader would (the tests and the notebooks' demo cells do):
    ``widget.set(stage=3, gpus=8)`` returns what the widget then shows (its ``result``)."""

    def set(self, **values):
        for name, value in values.items():
            getattr(self, name).value = value
        return self.result


class MemoryCalculator(_Controls):
    """Model size, GPUs, nodes, stage, offload and formula → GPU and host memory, with a stacked bar.

    ``calc.set(stage=3, gpus=8)`` changes controls from code (the tests do); ``calc.result`` is the
    current :class:`~dscourse.memory.Estimate` (or the :class:`FormulaError` explaining why none), between
    steps; ``calc.peak`` the step's :class:`~dscourse.memory.Peak` (for a preset; None for a free size).
    """

    def __init__(self, preset: str = "Llama-2-7B", gpus: int = 8, stage: int = 2, formula: str = "allocated",
                 seq: int = 2048, micro_batch: int = 1, gpu_memory_gb: float = 80):
        import ipywidgets as w

        style = {"description_width": "120px"}
        self.preset = w.Dropdown(options=list(PRESETS) + [FREE], value=preset, description="模型", style=style)
        self.size = w.Text(value="7B", description="参数量", style=style, disabled=preset != FREE)
        self.gpus_per_node = w.Dropdown(options=[1, 2, 4, 8, 16], value=min(8, gpus), description="每节点 GPU",
                                        style=style)
        self.nodes = w.BoundedIntText(value=max(1, gpus // min(8, gpus)), min=1, max=4096, description="节点数",
                                      style=style)
        self.stage = w.Dropdown(options=[0, 1, 2, 3], value=stage, description="ZeRO stage", style=style)
        self.offload_optimizer = w.Dropdown(options=["none", "cpu"], value="none", description="offload 优化器",
                                            style=style)
        self.offload_param = w.Dropdown(options=["none", "cpu"], value="none", description="offload 参数",
                                        style=style)
        self.formula = w.Dropdown(options=list(FORMULAS), value=formula, description="公式", style=style)
        self.seq = w.Dropdown(options=[512, 1024, 2048, 4096, 8192], value=seq, description="序列长度", style=style)
        self.micro_batch = w.BoundedIntText(value=micro_batch, min=1, max=1024, description="micro-batch",
                                            style=style)
        self.checkpointing = w.Checkbox(value=False, description="激活检查点", style=style)
        self.gpu_memory = w.Dropdown(options=[24, 40, 48, 80, 141], value=gpu_memory_gb, description="显卡显存 GB",
                                     style=style)
        self.lora_rank = w.Dropdown(options=[("0（全参数微调）", 0)] + [(str(r), r) for r in (8, 16, 64)], value=0, description="LoRA rank",
                                    style=style)
        self.lora_targets = w.Dropdown(options=list(TARGET_SETS), value="q_proj,v_proj", description="LoRA 作用于",
                                       style=style)
        self.summary = w.HTML()
        self.chart = w.Output()
        self.controls = [self.preset, self.size, self.gpus_per_node, self.nodes, self.stage,
                         self.offload_optimizer, self.offload_param, self.formula, self.seq, self.micro_batch,
                         self.checkpointing, self.gpu_memory, self.lora_rank, self.lora_targets]
        for c in self.controls:
            c.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox([w.VBox(self.controls[:7]), w.VBox(self.controls[7:])]),
                              self.summary, self.chart])
        self.result = None
        self.peak = None
        self._update()

    def _changed(self, change):
        self.size.disabled = self.preset.value != FREE
        self._update()

    def lora(self) -> Lora | None:
        return Lora(self.lora_rank.value, self.lora_targets.value) if self.lora_rank.value else None

    def setup(self) -> Setup:
        arch = PRESETS.get(self.preset.value)
        gpn = self.gpus_per_node.value
        kw = dict(gpus=gpn * self.nodes.value, gpus_per_node=gpn, stage=self.stage.value,
                  offload_optimizer=self.offload_optimizer.value, offload_param=self.offload_param.value)
        if arch:
            return arch_setup(arch, **kw, lora=self.lora())
        if self.lora():
            raise FormulaError("LoRA 的 adapter 大小取决于模型的层：请选一个模型，而不是自定义规模")
        return Setup(params=parse_count(self.size.value), **kw)

    def _update(self):
        try:
            setup = self.setup()
            self.result = estimate(setup, self.formula.value)
        except (FormulaError, ValueError) as e:
            self.result = e
            self.peak = None
            self.summary.value = f'<p style="color:#b00020">⚠ {html.escape(_say(e))}</p>'
            self.chart.outputs = ()
            return
        arch = PRESETS.get(self.preset.value)
        self.peak = self._peak(setup)
        self.summary.value = self._summary_html(setup)
        rows = []
        for s in range(4):
            if not self._valid_stage(setup, s):
                continue
            other = Setup(**{**setup.__dict__, "stage": s,
                             "persistent_params": arch_setup(arch, stage=s, lora=self.lora()).persistent_params
                             if arch else 0})
            try:
                est = estimate(other, self.formula.value)
            except FormulaError:
                continue
            pk = self._peak(other)
            rows.append((f"ZeRO-{s}", bar(est, pk) if pk else est.gpu))
        fig = stacked_memory_bar(rows, name="memory-calculator", limit_gb=self.gpu_memory.value,
                                 title=f"{self.formula.value}: {setup.params / 1e9:.2f}B 参数, {setup.gpus} GPU")
        # Set the Output widget's state rather than display() into it: no stray iopub outputs, and the
        # figure is saved with the widget state.
        self.chart.outputs = ({"output_type": "display_data", "metadata": {},
                               "data": {"text/html": fig._repr_html_(), "text/plain": repr(fig)}},)

    def _peak(self, setup: Setup):
        arch = PRESETS.get(self.preset.value)
        return peak(setup, arch, self.micro_batch.value, self.seq.value, self.checkpointing.value,
                    lora=self.lora()) if arch else None

    @staticmethod
    def _valid_stage(setup: Setup, stage: int) -> bool:
        try:
            Setup(**{**setup.__dict__, "stage": stage})
            return True
        except FormulaError:
            return False

    def _summary_html(self, setup: Setup) -> str:
        est, pk = self.result, self.peak
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in est.notes)
        if pk is None:
            verdict = "（自定义规模没有模型结构，算不出训练一步的峰值）"
        else:
            top = bar(est, pk)
            total = sum(top.values())
            fits = "✅ 放得下" if total <= self.gpu_memory.value * 1e9 else "❌ 放不下"
            phase = {"forward": "前向", "backward": "反向", "step": "优化器 step"}[pk.peak_phase]
            verdict = (f"；训练一步的峰值（{phase}）<b>{format_bytes(total)}</b>（{fits} {self.gpu_memory.value} GB，"
                       "还要给分配器缓存留余量）")
        return (f"<p><b>{est.formula}</b>：每张 GPU 模型状态（两步之间）<b>{format_bytes(est.gpu_bytes)}</b>{verdict}；"
                f"每个节点主机内存 <b>{format_bytes(est.cpu_bytes)}</b>；"
                f"共 {setup.gpus} 张 GPU / {setup.nodes} 个节点。</p><ul>{notes}</ul>")


class PlanWidget(_Controls):
    """The planner (``python -m dscourse.memory plan``) with controls: model, GPUs, memory per GPU and node, sequence
    length, global batch → the configurations that fit, cheapest first, and the ``ds_config.json`` of the first.

    It calls :func:`dscourse.memory.cli.run_plan` with the controls as arguments: the same peak function, headroom,
    cost model and config checker as the command line. ``widget.set(gpus=4)`` changes controls from code;
    ``widget.result`` is the plan (a dict as ``--json`` prints it) or the :class:`FormulaError` saying why none.
    """

    def __init__(self, model: str = "Llama-3-8B", gpus: int = 8, gpu_memory_gb: int = 24, host_memory_gb: int = 512,
                 seq: int = 4096, global_batch: int = 64, top: int = 5):
        import ipywidgets as w

        from .memory.hf import hf_presets

        style = {"description_width": "120px"}
        self.top = top
        self.model = w.Dropdown(options=list(hf_presets()), value=model, description="模型 (config.json)", style=style)
        self.gpus = w.Dropdown(options=[1, 2, 4, 8, 16, 32, 64], value=gpus, description="GPU 数", style=style)
        self.gpu_memory = w.Dropdown(options=[8, 12, 16, 24, 40, 48, 80, 141], value=gpu_memory_gb,
                                     description="每张显存 GB", style=style)
        self.host_memory = w.Dropdown(options=[64, 128, 256, 512, 1024, 2048], value=host_memory_gb,
                                      description="每节点内存 GB", style=style)
        self.seq = w.Dropdown(options=[512, 1024, 2048, 4096, 8192], value=seq, description="序列长度", style=style)
        self.global_batch = w.Dropdown(options=[8, 16, 32, 64, 128, 256, 512], value=global_batch,
                                       description="全局 batch", style=style)
        self.controls = [self.model, self.gpus, self.gpu_memory, self.host_memory, self.seq, self.global_batch]
        self.summary = w.HTML()
        for c in self.controls:
            c.observe(lambda _change: self._update(), names="value")
        self.widget = w.VBox([w.HBox([w.VBox(self.controls[:3]), w.VBox(self.controls[3:])]), self.summary])
        self.result = None
        self._update()

    def argv(self) -> list[str]:
        """The command line that gives the same plan."""
        return ["--model-config", self.model.value, "--gpus", str(self.gpus.value),
                "--gpu-memory", f"{self.gpu_memory.value}GB", "--host-memory", f"{self.host_memory.value}GB",
                "--seq", str(self.seq.value), "--global-batch", str(self.global_batch.value), "--top", str(self.top)]

    def _update(self):
        import json

        from .memory.cli import run_plan

        try:
            self.result = run_plan([*self.argv(), "--json"])
        except FormulaError as e:
            self.result = e
            self.summary.value = f'<p style="color:#b00020">⚠ {html.escape(_say(e))}</p>'
            return
        r = self.result
        head = "".join(f"<th>{h}</th>" for h in ("#", "方案", "micro-batch", "梯度累积", "激活检查点", "峰值/GPU",
                                                 "主机内存/节点", "一步（模型）"))
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{html.escape(c['variant'])}</td><td>{c['micro_batch']}</td>"
            f"<td>{c['grad_accum']}</td><td>{'开' if c['checkpointing'] else '关'}</td>"
            f"<td>{format_bytes(c['peak_gpu_bytes'])}</td><td>{format_bytes(c['host_bytes_per_node'])}</td>"
            f"<td>{c['step_seconds']:.3g} s</td></tr>" for i, c in enumerate(r["candidates"]))
        cmd = html.escape("python -m dscourse.memory plan " + " ".join(self.argv()))
        self.summary.value = (
            f"<p>{html.escape(r['model'])}（{r['params'] / 1e9:.2f}B）：{r['fits']} 种配置放得下"
            f"（峰值再留 {100 * r['headroom']:.0f}% 余量），最便宜的 {len(r['candidates'])} 种：</p>"
            f"<table><tr>{head}</tr>{rows}</table>"
            f"<p>第 1 种的 <code>ds_config.json</code>（4.2 节的构建器生成，检查器通过）：</p>"
            f"<pre>{html.escape(json.dumps(r['candidates'][0]['ds_config'], indent=1))}</pre>"
            f"<p>同样的结果：<code>{cmd}</code></p>")


class ConfigBuilder(_Controls):
    """A form → the DeepSpeed config as strict JSON, checked by :mod:`dscourse.config` as it changes.

    ``builder.set(stage=3, offload_param="cpu")``; ``builder.config`` is the dict, ``builder.problems``
    what the checker says of it (for the chosen integration and world size).
    """

    def __init__(self, stage: int = 2, integration: str = "hf", world_size: int = 8):
        import ipywidgets as w

        style = {"description_width": "120px"}
        self.stage = w.Dropdown(options=[0, 1, 2, 3], value=stage, description="ZeRO stage", style=style)
        self.offload_optimizer = w.Dropdown(options=["none", "cpu"], value="none", description="offload 优化器",
                                            style=style)
        self.offload_param = w.Dropdown(options=["none", "cpu"], value="none", description="offload 参数",
                                        style=style)
        self.precision = w.Dropdown(options=["bf16", "fp16", "fp32"], value="bf16", description="精度", style=style)
        self.integration = w.Dropdown(options=[("Hugging Face Trainer / Accelerate", "hf"),
                                               ("plain deepspeed.initialize", "deepspeed")],
                                      value=integration, description="集成方式", style=style)
        self.micro_batch = w.BoundedIntText(value=4, min=1, max=4096, description="micro-batch", style=style)
        self.grad_accum = w.BoundedIntText(value=1, min=1, max=4096, description="梯度累积", style=style)
        self.world_size = w.BoundedIntText(value=world_size, min=1, max=65536, description="GPU 总数",
                                           style=style)
        self.json = w.HTML()
        self.report = w.HTML()
        self.controls = [self.stage, self.offload_optimizer, self.offload_param, self.precision, self.integration,
                         self.micro_batch, self.grad_accum, self.world_size]
        for c in self.controls:
            c.observe(lambda change: self._update(), names="value")
        self.widget = w.HBox([w.VBox(self.controls + [self.report]), self.json])
        self.config, self.problems = None, []
        self._update()

    @property
    def result(self) -> dict | None:
        """The config it shows (None while the controls make none)."""
        return self.config

    def _update(self):
        import json

        from .config import build_config, check_config

        try:
            self.config = build_config(self.stage.value, micro_batch=self.micro_batch.value,
                                       grad_accum=self.grad_accum.value, world_size=self.world_size.value,
                                       precision=self.precision.value, offload_optimizer=self.offload_optimizer.value,
                                       offload_param=self.offload_param.value, integration=self.integration.value)
        except ValueError as e:
            self.config, self.problems = None, []
            self.json.value = ""
            self.report.value = f'<p style="color:#b00020">⚠ {html.escape(str(e))}</p>'
            return
        self.problems = check_config(self.config, target=self.integration.value, world_size=self.world_size.value)
        text = json.dumps(self.config, indent=2)
        self.json.value = f"<pre style='font-size:12px;line-height:1.3'>{html.escape(text)}</pre>"
        if self.problems:
            items = "".join(f"<li>{html.escape(str(p))}</li>" for p in self.problems)
            self.report.value = f"<p>检查器发现 {len(self.problems)} 个问题：</p><ul>{items}</ul>"
        else:
            self.report.value = "<p>✅ 检查通过：DeepSpeed 能加载，" + (
                "Trainer 会填好每个 \"auto\"。" if self.integration.value == "hf" else "不含 \"auto\"。") + "</p>"


class LossScaleExplorer(_Controls):
    """DeepSpeed's dynamic loss scaler over a synthetic gradient history: the ``"fp16"`` keys → the scale,
    the skipped steps, and the exception when it gets stuck at the minimum.

    A thin layer over :func:`dscourse.precision.simulate_loss_scale` (which drives DeepSpeed's own
    ``DynamicLossScaler.update_scale``). ``explorer.set(hysteresis=1, scenario="diverged")`` changes controls
    from code; ``explorer.result`` is the :class:`~dscourse.precision.ScaleTrace` (or the ``ValueError``
    DeepSpeed's config model raised).
    """

    def __init__(self, scenario: str = "healthy", precision: str = "fp16", initial_scale_power: int = 16,
                 loss_scale_window: int = 1000, hysteresis: int = 2, min_loss_scale: int = 1,
                 consecutive_hysteresis: bool = False, steps: int = 3000, seed: int = 0):
        import ipywidgets as w

        from .precision import SCENARIOS

        style = {"description_width": "150px"}
        layout = w.Layout(width="420px")
        self.steps, self.seed = steps, seed
        self.scenario = w.Dropdown(options=[(text, key) for key, text in SCENARIOS.items()], value=scenario,
                                   description="梯度情景", style=style, layout=w.Layout(width="640px"))
        self.precision = w.Dropdown(options=["fp16", "bf16"], value=precision, description="精度", style=style)
        self.initial_scale_power = w.IntSlider(value=initial_scale_power, min=0, max=32,
                                               description="initial_scale_power", style=style, layout=layout)
        self.loss_scale_window = w.IntSlider(value=loss_scale_window, min=10, max=2000, step=10,
                                             description="loss_scale_window", style=style, layout=layout)
        self.hysteresis = w.IntSlider(value=hysteresis, min=1, max=8, description="hysteresis", style=style,
                                      layout=layout)
        self.min_loss_scale = w.Dropdown(options=[2 ** k for k in range(0, 13)], value=min_loss_scale,
                                         description="min_loss_scale", style=style)
        self.consecutive_hysteresis = w.Checkbox(value=consecutive_hysteresis, description="consecutive_hysteresis",
                                                 style=style)
        self.summary = w.HTML()
        self.chart = w.Output()
        self.controls = [self.scenario, self.precision, self.initial_scale_power, self.loss_scale_window,
                         self.hysteresis, self.min_loss_scale, self.consecutive_hysteresis]
        for c in self.controls:
            c.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([self.scenario, w.HBox([w.VBox(self.controls[1:4]), w.VBox(self.controls[4:])]),
                              self.summary, self.chart])
        self.result = None
        self._update()

    def fp16_keys(self) -> dict:
        return {"initial_scale_power": self.initial_scale_power.value,
                "loss_scale_window": self.loss_scale_window.value, "hysteresis": self.hysteresis.value,
                "min_loss_scale": self.min_loss_scale.value,
                "consecutive_hysteresis": self.consecutive_hysteresis.value}

    def _update(self):
        from .plots import scale_figure
        from .precision import grad_scenario, simulate_loss_scale

        history = grad_scenario(self.scenario.value, self.steps, self.seed)
        try:
            self.result = simulate_loss_scale(history, self.precision.value, **self.fp16_keys())
        except ValueError as e:  # DeepSpeed's config model rejected the keys
            self.result = e
            self.summary.value = f'<p style="color:#b00020">⚠ {html.escape(_say(e))}</p>'
            self.chart.outputs = ()
            return
        trace = self.result
        self.summary.value = self._summary_html(trace)
        fig = scale_figure(trace, history, name="loss-scale-explorer",
                           title="DeepSpeed DynamicLossScaler (fp16)" if trace.precision == "fp16"
                           else "DeepSpeed LossScaler (bf16: static scale 1)")
        self.chart.outputs = ({"output_type": "display_data", "metadata": {},
                               "data": {"text/html": fig._repr_html_(), "text/plain": repr(fig)}},)

    @staticmethod
    def _summary_html(trace) -> str:
        import math

        if trace.error:
            end = (f'<span style="color:#b00020">第 {trace.failed_at} 步抛出 <code>{html.escape(trace.error)}</code>'
                   f"，训练中止</span>")
        else:
            end = "跑完全程"
        return (f"<p><b>{trace.precision}</b>：{trace.steps} 步，跳过 <b>{len(trace.skipped)}</b> 步，"
                f"最终 loss scale 2^{math.log2(trace.final_scale):g}；{end}。</p>")
