"""ipywidgets front ends for 4.5 (ipywidgets 7.7 and 8): thin layers over :mod:`.commands` and :mod:`dscourse.comm`.

``builder.set(launcher="torchrun", nodes=4)`` and ``calc.set(stage=3)`` change controls from code (the tests do).
"""

from __future__ import annotations

import html

from .commands import LAUNCHERS, build_plan

STYLE = {"description_width": "130px"}


class LaunchCommandBuilder:
    """Nodes, GPUs per node, launcher, master address and port → the exact command for every node, validated.

    ``builder.plan`` is the current :class:`~dscourse.multinode.commands.Plan` (its ``problems`` list what is wrong).
    """

    def __init__(self, launcher: str = "deepspeed", nodes: int = 2, gpus_per_node: int = 8,
                 master_addr: str = "10.0.0.1", master_port: int = 29500, hosts: str = "",
                 script: str = "train.py --deepspeed ds_config.json"):
        import ipywidgets as w

        self.launcher = w.Dropdown(options=[(text, key) for key, text in LAUNCHERS.items()], value=launcher,
                                   description="启动方式", style=STYLE, layout=w.Layout(width="520px"))
        self.nodes = w.BoundedIntText(value=nodes, min=1, max=4096, description="节点数", style=STYLE)
        self.gpus_per_node = w.BoundedIntText(value=gpus_per_node, min=1, max=64, description="每节点 GPU",
                                              style=STYLE)
        self.master_addr = w.Text(value=master_addr, description="master 地址", style=STYLE)
        self.master_port = w.BoundedIntText(value=master_port, min=0, max=70000, description="master 端口",
                                            style=STYLE)
        self.hosts = w.Text(value=hosts, placeholder="worker-1,worker-2 (留空自动命名)", description="主机名",
                            style=STYLE, layout=w.Layout(width="520px"))
        self.script = w.Text(value=script, description="训练脚本", style=STYLE, layout=w.Layout(width="520px"))
        self.include = w.Text(value="", placeholder="worker-1@worker-2:0,1（仅 deepspeed）", description="--include",
                              style=STYLE, layout=w.Layout(width="520px"))
        self.exclude = w.Text(value="", placeholder="worker-2:0（仅 deepspeed）", description="--exclude",
                              style=STYLE, layout=w.Layout(width="520px"))
        self.report = w.HTML()
        self.output = w.HTML()
        self.controls = [self.launcher, self.nodes, self.gpus_per_node, self.master_addr, self.master_port,
                         self.hosts, self.script, self.include, self.exclude]
        for c in self.controls:
            c.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([w.HBox([w.VBox([self.launcher, self.hosts, self.script, self.include, self.exclude]),
                                      w.VBox([self.nodes, self.gpus_per_node, self.master_addr, self.master_port])]),
                              self.report, self.output])
        self.plan = None
        self._update()

    def set(self, **values):
        for name, value in values.items():
            getattr(self, name).value = value
        return self.plan

    def _update(self):
        import shlex

        hosts = [h.strip() for h in self.hosts.value.split(",") if h.strip()] or None
        try:
            parts = shlex.split(self.script.value) or ["train.py"]
        except ValueError as e:  # an unclosed quote
            self.plan = None
            self.report.value = f'<p style="color:#b00020">⚠ 训练脚本参数无法解析：{html.escape(str(e))}</p>'
            self.output.value = ""
            return
        self.plan = build_plan(self.launcher.value, self.nodes.value, self.gpus_per_node.value,
                               self.master_addr.value.strip(), self.master_port.value, hosts=hosts,
                               script=parts[0], script_args=parts[1:], include=self.include.value.strip(),
                               exclude=self.exclude.value.strip())
        items = "".join(f'<li style="color:{"#b00020" if p.severity == "error" else "#8a6d00"}">'
                        f"{'❌' if p.severity == 'error' else '⚠'} {html.escape(str(p))}</li>"
                        for p in self.plan.problems)
        if self.plan.ok:
            shape = (f"{self.plan.nodes} 节点 × {self.plan.gpus_per_node} GPU" if self.plan.active is None
                     else f"过滤后 {len(self.plan.active)} 个节点")
            head = (f"<p>✅ {self.plan.world_size} 个 rank（{shape}），"
                    f"{len(self.plan.commands)} 条命令。</p>")
        else:
            head = "<p>❌ 这样启动不起来：</p>"
        self.report.value = head + (f"<ul>{items}</ul>" if items else "")
        self.output.value = ("<pre style='font-size:12px;line-height:1.35;white-space:pre-wrap'>"
                             f"{html.escape(self.plan.text())}</pre>" if self.plan.ok else "")


class CommCalculator:
    """Parameters, GPUs, dtype, gradient accumulation → bytes per rank per step and seconds at each bandwidth."""

    def __init__(self, params: str = "7B", gpus: int = 16, dtype: str = "bf16", grad_accum: int = 1):
        import ipywidgets as w

        from dscourse.comm import DTYPE_BYTES

        self.params = w.Text(value=params, description="参数量", style=STYLE)
        self.gpus = w.BoundedIntText(value=gpus, min=1, max=100000, description="GPU 数 (N)", style=STYLE)
        self.dtype = w.Dropdown(options=list(DTYPE_BYTES), value=dtype, description="通信精度", style=STYLE)
        self.grad_accum = w.BoundedIntText(value=grad_accum, min=1, max=4096, description="梯度累积", style=STYLE)
        self.table = w.HTML()
        self.chart = w.Output()
        self.controls = [self.params, self.gpus, self.dtype, self.grad_accum]
        for c in self.controls:
            c.observe(lambda change: self._update(), names="value")
        self.widget = w.VBox([w.HBox([w.VBox(self.controls[:2]), w.VBox(self.controls[2:])]), self.table,
                              self.chart])
        self.rows = None
        self._update()

    def set(self, **values):
        for name, value in values.items():
            getattr(self, name).value = value
        return self.rows

    def _update(self):
        from dscourse.comm import DTYPE_BYTES, table
        from dscourse.memory import parse_count
        from dscourse.plots import comm_figure
        from dscourse.tables import text_table

        try:
            params = parse_count(self.params.value)
        except ValueError as e:
            self.rows = None
            self.table.value = f'<p style="color:#b00020">⚠ {html.escape(str(e))}</p>'
            self.chart.outputs = ()
            return
        nbytes = DTYPE_BYTES[self.dtype.value]
        header, self.rows = table(params, self.gpus.value, dtype_bytes=nbytes, grad_accum=self.grad_accum.value)
        self.table.value = ("<pre style='font-size:12px'>" + html.escape(text_table(header, self.rows)) + "</pre>")
        fig = comm_figure(params, self.gpus.value, nbytes, self.grad_accum.value, name="comm-calculator")
        self.chart.outputs = ({"output_type": "display_data", "metadata": {},
                               "data": {"text/html": fig._repr_html_(), "text/plain": repr(fig)}},)
