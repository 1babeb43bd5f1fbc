"""Plotly figures that render the same in Jupyter, Colab and the static book, and stay nbval-stable.

:func:`show` emits the figure as HTML with a deterministic element id (nbval compares outputs) and
draws it with the page's ``Plotly`` when there is one: the book ships plotly.js itself (copied from
the plotly package by ``book/_ext/vendor_assets.py``), so the built HTML loads nothing from the network. Where the
page has no Plotly (Colab, a fresh Jupyter) the output loads the same plotly.js version from its CDN.
"""

from __future__ import annotations

import itertools
import json
from statistics import median

from .memory import CATEGORIES, CATEGORY_LABELS

# One palette for the whole book (Tableau 10, as Vega orders it): every trace colour a figure sets is one of these
# or a neutral grey, and the book's template gives the same colours, in this order, to traces that set none.
PALETTE = ("#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC")
NEUTRALS = ("#1a1a1a", "#333", "#888", "rgba(128,128,128,0.2)")  # text, reference lines, shaded bands
BLUE, ORANGE, RED, TEAL, GREEN, YELLOW, PURPLE, PINK, BROWN, GREY = PALETTE
COLORS = {"params": BLUE, "grads": ORANGE, "master": RED, "optim": TEAL,
          "buffers": PURPLE, "workspace": GREY, "step": YELLOW, "activations": BROWN}
_ids = itertools.count(1)
_TEMPLATE = None


def tint(color: str, alpha: float) -> str:
    """A palette colour made translucent (shaded bands behind a curve)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def book_template():
    """The book's one plotly template: ``plotly_white`` with :data:`PALETTE` as its colour order. Every figure the
    book or a notebook shows passes through :func:`figure_html`, which applies it."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.graph_objects as go
        import plotly.io as pio

        template = go.layout.Template(pio.templates["plotly_white"])
        template.layout.colorway = PALETTE
        _TEMPLATE = template
    return _TEMPLATE


def figure_html(fig, element_id: str, height: int = 420) -> str:
    import plotly.graph_objects as go
    import plotly.offline

    fig = go.Figure(fig)  # a copy: the caller's figure keeps its own layout
    fig.update_layout(template=book_template())
    spec = json.dumps(fig.to_plotly_json(), sort_keys=True, default=str, separators=(",", ":"))
    cdn = f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    return (f'<div id="{element_id}" class="dscourse-plot" style="width:100%;height:{height}px"></div>\n'
            f"<script>(function(){{var f={spec};"
            f'function draw(){{Plotly.newPlot("{element_id}",f.data,f.layout,{{responsive:true,displaylogo:false}});}}'
            f"if(window.Plotly){{draw();}}else{{var s=document.createElement('script');s.src='{cdn}';"
            f"s.onload=draw;document.head.appendChild(s);}}}})();</script>")


class Figure:
    """Wraps a plotly figure so that Jupyter displays it through :func:`figure_html`."""

    def __init__(self, fig, name: str | None = None, height: int = 420):
        self.fig, self.height = fig, height
        self.name = name or f"dscourse-fig-{next(_ids)}"

    def _repr_html_(self):
        return figure_html(self.fig, self.name, self.height)

    def __repr__(self):
        return f"<figure {self.name}: {self.fig.layout.title.text or ''}>"


def stacked_memory_bar(rows: list[tuple[str, dict]], title: str = "", name: str | None = None,
                       limit_gb: float | None = None) -> Figure:
    """One stacked bar per (label, bytes by category): GPU bytes per rank, in GB."""
    import plotly.graph_objects as go

    fig = go.Figure()
    labels = [label for label, _ in rows]
    for cat in CATEGORIES:
        values = [bytes_.get(cat, 0) / 1e9 for _, bytes_ in rows]
        if any(values):
            fig.add_bar(name=CATEGORY_LABELS[cat], x=labels, y=[round(v, 3) for v in values],
                        marker_color=COLORS[cat])
    if limit_gb:
        fig.add_hline(y=limit_gb, line_dash="dash", annotation_text=f"{limit_gb:g} GB GPU")
    fig.update_layout(barmode="stack", title=title, yaxis_title="每张 GPU 的 GB（10^9 字节）",
                      legend_orientation="h", legend_y=-0.2, margin=dict(t=50, b=40, l=60, r=20))
    return Figure(fig, name)


def show(fig, name: str | None = None, height: int = 420):
    """Display a plotly figure (or a :class:`Figure`) in a notebook."""
    from IPython.display import display

    display(fig if isinstance(fig, Figure) else Figure(fig, name, height))


# --- Figures that stay interactive in the static book -------------------------------------------------------
# ipywidgets need a kernel, so in the built HTML a widget is a picture of its last state. These figures carry
# every answer with them instead: each slider step and dropdown entry holds results precomputed here by the same
# functions the widgets call (dscourse.memory, dscourse.precision), and plotly.js switches between them in the
# reader's browser. No formula is rewritten in JavaScript.


def _slider(steps: list[dict], active: int, prefix: str) -> dict:
    return dict(active=active, steps=steps, currentvalue=dict(prefix=prefix), pad=dict(t=50), x=0.0, len=1.0)


def _dropdown(buttons: list[dict], active: int) -> dict:
    return dict(type="dropdown", active=active, buttons=buttons, x=0.0, xanchor="left", y=1.18, yanchor="top",
                showactive=True)


def memory_explorer(presets: list[str] | None = None, gpu_counts=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                    formula: str = "allocated", seq: int = 2048, micro_batch: int = 1, preset: str = "Llama-2-7B",
                    gpus: int = 8, gpu_memory_gb: float = 80, name: str = "memory-explorer") -> Figure:
    """GPU memory per rank at the peak of a training step for ZeRO-0..3 (stacked by category): a dropdown picks
    the model, a slider the number of GPUs. Every bar is :func:`dscourse.memory.peak.bar`: the family's
    :func:`~dscourse.memory.estimate` with the additions of :func:`~dscourse.memory.peak_of` on top, on the setup
    the calculator widget builds (8 GPUs per node)."""
    import plotly.graph_objects as go

    from .memory import PRESETS, FormulaError, estimate, peak_of
    from .memory.peak import bar

    presets = list(presets or PRESETS)
    stages = [f"ZeRO-{s}" for s in range(4)]
    # gb[preset][n][category] -> GB per stage (None where the formula has no answer)
    gb, totals = {}, {}
    for p in presets:
        arch = PRESETS[p]
        gb[p], totals[p] = {}, {}
        for n in gpu_counts:
            per_cat = {c: [] for c in CATEGORIES}
            tot = []
            for s in range(4):
                try:
                    pk = peak_of(arch, n, s, micro_batch, seq, gpus_per_node=min(8, n))
                    gpu = bar(estimate(pk.setup, formula), pk)
                    tot.append(round(sum(gpu.values()) / 1e9, 2))
                except FormulaError:
                    gpu = {}
                    tot.append(None)
                for c in CATEGORIES:
                    per_cat[c].append(round(gpu[c] / 1e9, 3) if c in gpu else None)
            gb[p][n], totals[p][n] = per_cat, tot
    fig = go.Figure()
    dynamic = []  # (trace index, preset, category or None for the totals)
    for p in presets:
        cats = [c for c in CATEGORIES if any(v for n in gpu_counts for v in gb[p][n][c] if v)]
        for c in cats:
            fig.add_bar(name=CATEGORY_LABELS[c], x=stages, y=gb[p][gpus][c], marker_color=COLORS[c],
                        legendgroup=c, visible=p == preset, hovertemplate="%{x}: %{y:.2f} GB<extra>" +
                        CATEGORY_LABELS[c] + "</extra>")
            dynamic.append((len(fig.data) - 1, p, c))
        fig.add_scatter(x=stages, y=totals[p][gpus], text=[f"{t:.1f} GB" if t is not None else "" for t in
                                                          totals[p][gpus]],
                        mode="text", textposition="top center", showlegend=False, visible=p == preset,
                        hoverinfo="skip", cliponaxis=False)
        dynamic.append((len(fig.data) - 1, p, None))
    index = {i: (p, c) for i, p, c in dynamic}

    def ys(n):
        return [gb[p][n][c] if c else totals[p][n] for p, c in index.values()]

    def texts(n):
        return [None if c else [f"{t:.1f} GB" if t is not None else "" for t in totals[p][n]]
                for p, c in index.values()]

    steps = [dict(label=str(n), method="restyle", args=[{"y": ys(n), "text": texts(n)}, list(index)])
             for n in gpu_counts]
    buttons = [dict(label=p, method="restyle", args=[{"visible": [index[i][0] == p for i in range(len(fig.data))]}])
               for p in presets]
    fig.add_hline(y=gpu_memory_gb, line_dash="dash", line_color="#888",
                  annotation_text=f"{gpu_memory_gb:g} GB GPU", annotation_position="top right")
    fig.update_layout(barmode="stack", yaxis_title="每张 GPU 的 GB（10^9 字节）",
                      title=dict(text=f"训练一步中每张 GPU 的显存峰值（{formula} 公式 + 步内增量，序列 {seq}，micro-batch {micro_batch}）",
                                 y=0.98, font_size=15),
                      sliders=[_slider(steps, list(gpu_counts).index(gpus), "GPU 总数（每节点 8 张）：")],
                      updatemenus=[_dropdown(buttons, presets.index(preset))],
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1, font_size=11),
                      margin=dict(t=120, b=40, l=60, r=210))  # room for the legend: plotly measures CJK text short
    return Figure(fig, name, height=560)


def peak_timeline(traces: list[dict] | None = None, name: str = "peak-timeline") -> Figure:
    """Memory over one training step, from ``torch.cuda.memory._record_memory_history`` on an H200
    (``dscourse/data/gpu_peak_h200.json``, ``traces``): allocated GB after each allocation event, the phases
    shaded, each phase's peak marked with what was live then; a dropdown picks the ZeRO stage."""
    import plotly.graph_objects as go

    from .calibration import load_peak_traces
    from .memory.peak import PHASE_LABELS as labels

    traces = traces if traces is not None else load_peak_traces()
    fig = go.Figure()
    spans = []
    for k, t in enumerate(traces):
        # the stored curve is thinned to a few hundred events; put each phase's peak event back in
        points = sorted({*map(tuple, t["curve"]), *((pk["event"], pk["bytes"]) for pk in t["peaks"].values())})
        x = [e for e, _ in points]
        y = [round(b / 1e9, 3) for _, b in points]
        fig.add_scatter(x=x, y=y, mode="lines", name=f"ZeRO-{t['stage']}", visible=k == 0, line_color=BLUE,
                        hovertemplate="事件 %{x}：%{y:.2f} GB<extra></extra>")
        px, py, text = [], [], []
        for phase, pk in t["peaks"].items():
            top = ", ".join(f"{c.rsplit('/', 1)[-1]} {b / 1e9:.2f}" for c, b in pk["top"][1:4])
            px.append(pk["event"])
            py.append(round(pk["bytes"] / 1e9, 3))
            text.append(f"{labels[phase]}峰值 {pk['bytes'] / 1e9:.2f} GB<br>{top}")
        fig.add_scatter(x=px, y=py, mode="markers", marker=dict(size=10, color=RED), visible=k == 0,
                        name="峰值", text=text, hovertemplate="%{text}<extra></extra>")
        marks = sorted(t["marks"].items(), key=lambda kv: kv[1]) + [("end", t["events"])]
        spans.append([(labels[a], m0, m1) for (a, m0), (_, m1) in itertools.pairwise(marks)])
    shades = {labels["forward"]: tint(TEAL, 0.15), labels["backward"]: tint(ORANGE, 0.12), labels["step"]: tint(PURPLE, 0.15)}

    def shapes(k):
        return [dict(type="rect", xref="x", yref="paper", x0=a, x1=b, y0=0, y1=1, line_width=0,
                     fillcolor=shades[label], layer="below") for label, a, b in spans[k]]

    def notes(k):
        return [dict(x=(a + b) / 2, y=1.02, xref="x", yref="paper", text=label, showarrow=False)
                for label, a, b in spans[k]]

    buttons = [dict(label=f"ZeRO-{t['stage']}", method="update",
                    args=[{"visible": [i // 2 == k for i in range(2 * len(traces))]},
                          {"shapes": shapes(k), "annotations": notes(k)}]) for k, t in enumerate(traces)]
    t0 = traces[0]
    fig.update_layout(shapes=shapes(0), annotations=notes(0),
                      title=dict(text=f"一步训练中的显存（{t0['model']}，micro-batch {t0['micro_batch']} × {t0['seq']}，"
                                      "H200 实测）", y=0.97, font_size=15),
                      xaxis_title="分配/释放事件序号", yaxis_title="已分配 GB（10^9 字节）",
                      updatemenus=[_dropdown(buttons, 0)], showlegend=False, margin=dict(t=110, b=50, l=60, r=20))
    return Figure(fig, name, height=460)


def oom_attempts(tries: list[dict] | None = None, name: str = "oom-attempts") -> Figure:
    """A reader's attempts on a 24 GB card (``dscourse.calibration.oom_walkthrough``): the predicted peak of each
    as a bar, green where it fits the cap and red where not, the measured peak (or where it ran out of memory)
    beside it, and the cap as a line."""
    import plotly.graph_objects as go

    from .calibration import oom_walkthrough
    from .memory.peak import PHASE_LABELS as labels

    tries = tries if tries is not None else oom_walkthrough()

    def setting(r):
        return (f"{r['variant'].replace(' +offload opt', ' + offload')}, {r['micro_batch']}×{r['seq']}"
                + (f" ×{r['grad_accum']}" if r["grad_accum"] > 1 else "") + (" ckpt" if r["checkpointing"] else ""))

    y = [f"{i}. {setting(r)}" for i, r in enumerate(tries, 1)]
    fig = go.Figure()
    fig.add_bar(y=y, x=[round(r["predicted"] / 1e9, 2) for r in tries], orientation="h", name="峰值模型的预测",
                marker_color=[GREEN if r["predicted_fits"] else RED for r in tries],
                text=[labels[r["predicted_phase"]] for r in tries], textposition="inside",
                hovertemplate="预测峰值 %{x:.2f} GB（%{text}）<extra></extra>")
    ok = [(yy, r) for yy, r in zip(y, tries) if not r["oom_phase"]]
    fig.add_scatter(y=[yy for yy, _ in ok], x=[round(r["measured"] / 1e9, 2) for _, r in ok], mode="markers",
                    name="实测峰值（放得下）", marker=dict(symbol="diamond", size=11, color=NEUTRALS[0]),
                    hovertemplate="实测峰值 %{x:.2f} GB<extra></extra>")
    bad = [(yy, r) for yy, r in zip(y, tries) if r["oom_phase"]]
    fig.add_scatter(y=[yy for yy, _ in bad], x=[r["limit"] / 1e9 for _, r in bad], mode="markers",
                    name="OOM", marker=dict(symbol="x", size=12, color=NEUTRALS[0]),
                    text=[f"第 {r['oom_step']} 步的{labels[r['oom_phase']]}里 OOM，申请 {r['oom_asked'] / 2**30:.2f} GiB 被拒"
                          for _, r in bad], hovertemplate="%{text}<extra></extra>")
    cap = tries[0]["limit"] / 1e9 if tries else 24
    fig.add_vline(x=cap, line_dash="dash", line_color=NEUTRALS[1])
    fig.update_layout(title=f"Llama-3.2-1B 在 {cap:.0f} GB 上限下的 {len(tries)} 次尝试", barmode="overlay",
                      xaxis_title="每张 GPU 的峰值（GB）", yaxis_autorange="reversed", legend_orientation="h",
                      legend_y=-0.2, margin=dict(l=230, t=60))
    return Figure(fig, name, height=460)


def universal_repartition(shape: str = "gpt2-tiny", before: int = 4, after: int = 2,
                          name: str = "universal-repartition") -> Figure:
    """Why a ZeRO checkpoint needs converting before another number of ranks can load it: the flat fp32 buffer of
    ``shape``'s parameters cut evenly over ``before`` ranks (what each ``*_optim_states.pt`` holds), the universal
    checkpoint's one file per parameter, and the cut over ``after`` ranks that loading makes from it. Element
    counts from :func:`dscourse.memory.peak.param_tensors`; DeepSpeed's alignment padding left out."""
    import plotly.graph_objects as go

    from .memory.peak import param_tensors
    from .models import SHAPES

    sizes = param_tensors(SHAPES[shape])
    total = sum(sizes)
    rows = {"before": f"保存（{before} 个 rank）", "files": "通用检查点", "after": f"续训（{after} 个 rank）"}
    fig = go.Figure()
    for key, ranks in (("before", before), ("after", after)):
        cut = [round(total * r / ranks) for r in range(ranks + 1)]
        fig.add_bar(y=[rows[key]] * ranks, x=[b - a for a, b in itertools.pairwise(cut)], base=cut[:-1],
                    orientation="h", marker_color=[PALETTE[r % len(PALETTE)] for r in range(ranks)],
                    marker_line_color="white", marker_line_width=1, showlegend=False,
                    text=[f"rank {r}" for r in range(ranks)], textposition="inside",
                    customdata=[f"元素 {a:,}–{b - 1:,}" for a, b in itertools.pairwise(cut)],
                    hovertemplate="%{text}：%{customdata}<extra></extra>")
    starts = [0, *itertools.accumulate(sizes)][:-1]
    fig.add_bar(y=[rows["files"]] * len(sizes), x=sizes, base=starts, orientation="h",
                marker_color=[NEUTRALS[2] if k % 2 else tint(GREY, 0.6) for k in range(len(sizes))],
                marker_line_color="white", marker_line_width=1, showlegend=False,
                text=[f"参数张量 {k + 1}：{n:,} 个元素" for k, n in enumerate(sizes)],
                hovertemplate="%{text}<extra></extra>")
    fig.update_layout(title=f"{shape}（{total:,} 个参数）的 fp32 主权重与 Adam 状态怎样切分", barmode="overlay",
                      xaxis_title="展平后的参数下标", yaxis=dict(categoryorder="array",
                                                           categoryarray=list(rows.values())[::-1]),
                      margin=dict(l=120, t=60))
    return Figure(fig, name, height=320)


def loss_scale_explorer(windows=(50, 100, 200, 500, 1000, 2000), window: int = 1000, scenario: str = "healthy",
                        steps: int = 3000, seed: int = 0, name: str = "loss-scale-static") -> Figure:
    """DeepSpeed's dynamic loss scaler (fp16, other keys at DeepSpeed's defaults) over each gradient scenario:
    a dropdown picks the scenario, a slider ``loss_scale_window``. Every trace is
    :func:`dscourse.precision.simulate_loss_scale` (DeepSpeed's own ``DynamicLossScaler``) on
    :func:`~dscourse.precision.grad_scenario`, as the explorer widget computes it."""
    import math

    import plotly.graph_objects as go

    from .precision import SCENARIOS, grad_scenario, simulate_loss_scale

    fp16_max_log2 = math.log2(65504.0)  # torch.finfo(torch.float16).max
    fig = go.Figure()
    dynamic, owner = [], []
    runs = {}
    for key in SCENARIOS:
        history = grad_scenario(key, steps, seed)
        runs[key] = {w: simulate_loss_scale(history, "fp16", loss_scale_window=w) for w in windows}
        safe = [None if math.isnan(g) else round(fp16_max_log2 - g, 1) for g in history]
        visible = key == scenario
        fig.add_scatter(x=list(range(steps)), y=safe, mode="lines", name="不溢出的最大 scale（log2）",
                        line=dict(color=GREY, width=1), visible=visible)
        owner.append(key)
        for kind in ("scale", "skipped", "error"):
            if kind == "scale":
                fig.add_scatter(mode="lines", line_shape="hv", name="log2(loss scale)", line_color=BLUE,
                                visible=visible)
            elif kind == "skipped":
                fig.add_scatter(mode="markers", name="跳过的步", marker=dict(color=RED, size=6, symbol="x"),
                                visible=visible)
            else:
                fig.add_scatter(mode="markers+text", textposition="top left", showlegend=False, visible=visible,
                                marker=dict(color=RED, size=10, symbol="line-ns-open"),
                                textfont=dict(color=RED))
            owner.append(key)
            dynamic.append((len(fig.data) - 1, key, kind))

    def update(w):
        xs, ys, names, texts = [], [], [], []
        for _, key, kind in dynamic:
            trace = runs[key][w]
            if kind == "scale":
                x, y = [], []
                for t, s in enumerate(trace.scales):  # a step function: keep the points where it changes
                    if not y or math.log2(s) != y[-1] or t == trace.steps - 1:
                        x.append(t)
                        y.append(math.log2(s))
                xs.append(x), ys.append(y), names.append("log2(loss scale)"), texts.append(None)
            elif kind == "skipped":
                xs.append(trace.skipped), ys.append([math.log2(trace.scales[t]) for t in trace.skipped])
                names.append(f"跳过的步（{len(trace.skipped)}）"), texts.append(None)
            else:
                failed = trace.error is not None
                xs.append([trace.failed_at] if failed else []), ys.append([math.log2(trace.scales[-1])] if failed else [])
                names.append(""), texts.append([f"第 {trace.failed_at} 步抛出异常：loss scale 已到最小值"] if failed else [])
        return {"x": xs, "y": ys, "name": names, "text": texts}

    first = update(window)
    for j, (i, _, _) in enumerate(dynamic):
        fig.data[i].update(x=first["x"][j], y=first["y"][j], name=first["name"][j], text=first["text"][j])
    slider_steps = [dict(label=str(w), method="restyle", args=[update(w), [i for i, _, _ in dynamic]]) for w in windows]
    buttons = [dict(label=text.split("：")[0], method="restyle",
                    args=[{"visible": [o == key for o in owner]}]) for key, text in SCENARIOS.items()]
    fig.update_layout(xaxis_title="步", yaxis_title="log2(loss scale)",
                      title=dict(text="DeepSpeed DynamicLossScaler（fp16；其余键取默认值）", y=0.98, font_size=15),
                      sliders=[_slider(slider_steps, list(windows).index(window), "loss_scale_window：")],
                      updatemenus=[_dropdown(buttons, list(SCENARIOS).index(scenario))],
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      margin=dict(t=120, b=40, l=60, r=20))
    return Figure(fig, name, height=520)


def comm_explorer(presets: list[str] | None = None, world_sizes=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                  preset: str = "Llama-2-7B", world_size: int = 16, dtype_bytes: int = 2, grad_accum: int = 1,
                  name: str = "comm-explorer") -> Figure:
    """Communication seconds per optimizer step, per ZeRO stage, at each interconnect (log scale): a dropdown picks
    the model, a slider the number of GPUs. Every bar is :func:`dscourse.comm.step_time`, as
    :func:`comm_figure` draws one setting of it."""
    import plotly.graph_objects as go

    from .comm import BANDWIDTHS, format_seconds, short_name, step_time
    from .memory import PRESETS

    presets = list(presets or PRESETS)
    links = [short_name(n) for n in BANDWIDTHS]
    colors = (BLUE, ORANGE, RED, TEAL)

    def times(p, n, stage):
        return [step_time(PRESETS[p].params, stage, n, bw, dtype_bytes, grad_accum) for bw in BANDWIDTHS.values()]

    fig = go.Figure()
    owner = []
    for p in presets:
        for stage in range(4):
            t = times(p, world_size, stage)
            fig.add_bar(name=f"ZeRO-{stage}", x=links, y=[round(v, 6) for v in t], text=[format_seconds(v) for v in t],
                        textposition="outside", marker_color=colors[stage], legendgroup=f"ZeRO-{stage}",
                        visible=p == preset, cliponaxis=False)
            owner.append((p, stage))
    steps = []
    for n in world_sizes:
        all_t = [times(p, n, stage) for p, stage in owner]
        steps.append(dict(label=str(n), method="restyle",
                          args=[{"y": [[round(v, 6) for v in t] for t in all_t],
                                 "text": [[format_seconds(v) for v in t] for t in all_t]}]))
    buttons = [dict(label=p, method="restyle", args=[{"visible": [o == p for o, _ in owner]}]) for p in presets]
    fig.update_layout(barmode="group", yaxis_type="log",
                      yaxis_title="每步通信时间（秒，对数坐标）",
                      title=dict(text=f"每步通信时间（{dtype_bytes} 字节的参数/梯度，不与计算重叠）", y=0.98, font_size=15),
                      sliders=[_slider(steps, list(world_sizes).index(world_size), "GPU 总数：")],
                      updatemenus=[_dropdown(buttons, presets.index(preset))],
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      margin=dict(t=120, b=40, l=70, r=20))
    return Figure(fig, name, height=520)


def knob_effects_figure(model: str = "Llama-2-7B", gpus: int = 8, seq: int = 4096, micro_batch: int = 1,
                        name: str = "knob-effects") -> Figure:
    """The per-GPU peak with one ``zero_optimization`` key changed from its default (:mod:`dscourse.memory.knobs`),
    ZeRO-2 and ZeRO-3 side by side; a dropdown switches activation checkpointing."""
    import plotly.graph_objects as go

    from .memory.knobs import knob_effects, value_text
    from .memory.peak import PHASE_LABELS
    from .memory.shapes import PRESETS

    arch = PRESETS[model]
    fig, buttons = go.Figure(), []
    for k, checkpointing in enumerate((True, False)):
        for stage, color in ((2, ORANGE), (3, BLUE)):
            base, rows = knob_effects(arch, gpus, stage, micro_batch, seq, checkpointing)
            labels = ["全部默认"] + [f"{r['knob']} = {value_text(r['value'])}" for r in rows]
            peaks = [base.peak_bytes] + [r["peak_bytes"] for r in rows]
            phases = [base.peak_phase] + [r["peak_phase"] for r in rows]
            fig.add_bar(y=[f"ZeRO-{stage} · {label}" for label in labels], x=[round(p / 1e9, 2) for p in peaks],
                        orientation="h", name=f"ZeRO-{stage}", marker_color=color, visible=k == 0,
                        # the label inside its bar, not as a tick label: on a phone the long key names would
                        # otherwise take most of the width from the bars
                        text=[f"{label}<br>{p / 1e9:.2f} GB（峰值在{PHASE_LABELS[ph]}）"
                              for label, p, ph in zip(labels, peaks, phases)],
                        textposition="inside", insidetextanchor="start", textfont=dict(color="#1a1a1a", size=12),
                        marker_opacity=0.45, constraintext="none", cliponaxis=False,
                        showlegend=k == 0, hovertemplate="%{text}<extra></extra>")
        buttons.append(dict(label="激活重算：开" if checkpointing else "激活重算：关", method="update",
                            args=[{"visible": [i // 2 == k for i in range(4)]}]))
    fig.update_layout(updatemenus=[_dropdown(buttons, 0)], barmode="overlay",
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.12, yanchor="top"),
                      title=dict(text=f"只改一个键的峰值（{model}，{gpus} 卡）",
                                 y=0.97, font_size=15),
                      xaxis_title="每张 GPU 的峰值 GB（10^9 字节）", yaxis=dict(autorange="reversed", showticklabels=False),
                      uniformtext=dict(minsize=10, mode="show"), margin=dict(t=130, b=50, l=10, r=10))
    return Figure(fig, name, height=640)


def sharding_figure(gpu_counts=(2, 4, 8, 16, 32, 64, 128), gpus: int = 16, group: int = 8,
                    name: str = "sharding") -> Figure:
    """Bytes per parameter each rank holds, DeepSpeed's ZeRO stages beside FSDP2's strategies, stacked by what the
    bytes are (:func:`dscourse.memory.sharding.held_per_param`): a slider picks the GPU count, a dropdown the moment."""
    import plotly.graph_objects as go

    from .memory.sharding import MOMENTS, STRATEGIES, held_per_param

    labels = [f"{STRATEGIES[s][0]}<br>{s}" for s in STRATEGIES]
    cats = ("params", "grads", "master", "optim")

    def ys(n, moment):
        held = {s: held_per_param(s, n, group, moment) for s in STRATEGIES}
        return [[round(held[s][c], 4) for s in STRATEGIES] for c in cats]

    def totals(n, moment):
        return [f"{sum(held_per_param(s, n, group, moment).values()):.3g} 字节" for s in STRATEGIES]

    fig = go.Figure()
    for moment_index, moment in enumerate(MOMENTS):
        for c, y in zip(cats, ys(gpus, moment)):
            fig.add_bar(name=CATEGORY_LABELS[c], x=labels, y=y, marker_color=COLORS[c], legendgroup=c,
                        visible=moment_index == 0, showlegend=moment_index == 0,
                        hovertemplate="%{x}：%{y:.3g} 字节/参数<extra>" + CATEGORY_LABELS[c] + "</extra>")
        # the total above each bar, as an invisible-marker scatter so that it rides on the stack
        fig.add_scatter(x=labels, y=[sum(v) for v in zip(*ys(gpus, moment))], text=totals(gpus, moment),
                        mode="text", textposition="top center", showlegend=False, visible=moment_index == 0,
                        hoverinfo="skip", cliponaxis=False)
    per_moment = len(cats) + 1
    steps = []
    for n in gpu_counts:
        y, text = [], []
        for moment in MOMENTS:
            bars = ys(n, moment)
            y += bars + [[round(sum(v), 4) for v in zip(*bars)]]
            text += [None] * len(cats) + [totals(n, moment)]
        steps.append(dict(label=str(n), method="restyle", args=[{"y": y, "text": text}]))
    buttons = [dict(label=label, method="restyle",
                    args=[{"visible": [i // per_moment == k for i in range(per_moment * len(MOMENTS))]}])
               for k, label in enumerate(MOMENTS.values())]
    fig.update_layout(barmode="stack", yaxis_title="每个 rank 每个参数的字节", xaxis_tickfont_size=11,
                      title=dict(text=f"bf16 + Adam 的模型状态：DeepSpeed 与 FSDP2（每组 {group} 张卡）", y=0.97,
                                 font_size=15),
                      sliders=[_slider(steps, list(gpu_counts).index(gpus), "GPU 总数：")],
                      updatemenus=[_dropdown(buttons, 0)],
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
                      margin=dict(t=120, b=40, l=60, r=20))
    return Figure(fig, name, height=540)


def comm_figure(params: float, world_size: int, dtype_bytes: int = 2, grad_accum: int = 1,
                bandwidths: dict | None = None, name: str = "comm-time"):
    """Grouped bars: seconds of communication per step, per ZeRO stage, at each bandwidth (log scale)."""
    import plotly.graph_objects as go

    from .comm import BANDWIDTHS, format_seconds, short_name, step_time

    bandwidths = bandwidths or BANDWIDTHS
    fig = go.Figure()
    for stage in range(4):
        times = [step_time(params, stage, world_size, bw, dtype_bytes, grad_accum) for bw in bandwidths.values()]
        fig.add_bar(name=f"ZeRO-{stage}", x=[short_name(n) for n in bandwidths], y=[round(t, 6) for t in times],
                    text=[format_seconds(t) for t in times], textposition="outside")
    fig.update_layout(barmode="group", yaxis_type="log", legend_orientation="h",
                      legend_y=-0.3, yaxis_title="每步通信时间（秒，对数坐标）",
                      title=f"{params / 1e9:.3g}B 参数，{world_size} 张 GPU，{dtype_bytes} 字节的梯度/参数，不与计算重叠", margin=dict(t=60, b=60, l=70, r=20))
    return Figure(fig, name, height=460)


def comm_measured_figure(world_size: int = 4, names=None, data: dict | None = None, name: str = "comm-logged"):
    """Grouped bars: bytes per rank per optimizer step in units of Ψ × 2 bytes × (N−1)/N (the paper's "2Ψ" for data
    parallelism reads 2), per measured configuration: DeepSpeed's comms logger, ``dscourse.comm`` and the ZeRO paper."""
    import plotly.graph_objects as go

    from .comm import MEASURED_FIGURE, load_measured, logged_wire_per_rank, measured_vs_model, model_for_run

    names = names or MEASURED_FIGURE
    data = data or load_measured()
    rows = {r["name"]: r for r in measured_vs_model(data) if r["world_size"] == world_size}
    runs = {r["name"]: r for r in data["runs"] if r["world_size"] == world_size}
    n = world_size
    fig = go.Figure()
    series = {"DeepSpeed comms logger": [], "dscourse.comm": [], "ZeRO paper": []}
    for key in names:
        run, row = runs[key], rows[key]
        unit = sum(data["shapes"][run["shape"]]["param_numels"]) * 2 * (n - 1) / n
        series["DeepSpeed comms logger"].append(logged_wire_per_rank(row["logged"], n) / unit)
        series["dscourse.comm"].append(logged_wire_per_rank(row["model"], n) / unit)
        series["ZeRO paper"].append(model_for_run(run, data["shapes"])["paper_wire_bytes_per_rank"] / unit)
    for label, ys in series.items():
        fig.add_bar(name=label, x=list(names), y=[round(y, 4) for y in ys], text=[f"{y:.2f}" for y in ys],
                    textposition="outside", cliponaxis=False)
    fig.update_layout(barmode="group", legend_orientation="h", legend_y=-0.35,
                      yaxis_title="每 rank 每步字节，以 Ψ·2 字节·(N−1)/N 为单位",
                      title=f"gpt2-tiny，{n} 个 CPU rank，bf16：实测、模型与论文",
                      margin={"t": 60, "b": 90, "l": 70, "r": 20})
    return Figure(fig, name, height=460)


def scale_figure(trace, log2_max_grad=None, title: str = "", name: str = "loss-scale"):
    """log2(loss scale) over the steps of a :class:`dscourse.precision.ScaleTrace`, the largest scale that would not
    overflow, and the skipped steps."""
    import math

    import plotly.graph_objects as go

    fig = go.Figure()
    steps = list(range(trace.steps))
    # The scale is a step function: keep only the points where it changes (smaller figures).
    xs, ys = [], []
    for t, s in enumerate(trace.scales):
        if not ys or math.log2(s) != ys[-1] or t == trace.steps - 1:
            xs.append(t)
            ys.append(math.log2(s))
    fig.add_scatter(x=xs, y=ys, mode="lines", line_shape="hv", name="log2(loss scale)", line_color="#4C78A8")
    if log2_max_grad is not None:
        # torch.finfo(torch.float16).max and torch.finfo(torch.bfloat16).max
        limit = math.log2(65504.0 if trace.precision == "fp16" else 3.3895313892515355e38)
        safe = [None if math.isnan(g) else round(limit - g, 2) for g in log2_max_grad[:max(trace.steps, 1)]]
        if trace.precision == "fp16":  # bf16's limit (~2^128) would flatten the plot
            fig.add_scatter(x=steps, y=safe, mode="lines", name="不溢出的最大 scale",
                            line=dict(color="#BAB0AC", width=1))
    skipped = trace.skipped
    fig.add_scatter(x=skipped, y=[math.log2(trace.scales[t]) for t in skipped], mode="markers",
                    name=f"跳过的步（{len(skipped)}）", marker=dict(color="#E45756", size=6, symbol="x"))
    if trace.error:
        fig.add_vline(x=trace.failed_at, line_dash="dash", line_color="#E45756")
        fig.add_annotation(x=trace.failed_at, y=1, yref="paper", text=f"第 {trace.failed_at} 步抛出异常",
                           showarrow=False, xanchor="right", font=dict(color="#E45756"))
    fig.update_layout(title=title, xaxis_title="步", yaxis_title="log2(loss scale)",
                      legend_orientation="h", legend_y=-0.2, margin=dict(t=50, b=40, l=60, r=20))
    return Figure(fig, name)


def throughput_figure(data: dict | None = None):
    """Tokens/s against tokens per optimizer step (log x), a line per variant; pinned offload runs dashed.
    The grey band marks "30–50% slower than ZeRO-2"."""
    import plotly.graph_objects as go

    from .gpu_results import VARIANT_ORDER, load_throughput, per_variant, row_label, throughput_rows

    rows = throughput_rows(data)
    colors = dict(zip(VARIANT_ORDER, ["#4C78A8", "#72B7B2", "#54A24B", "#F58518", "#E45756", "#B279A2", "#9D755D"]))
    fig = go.Figure()
    labels, cells = per_variant(rows, lambda r: r["tokens_per_second"])
    tokens = {row_label(r): r["tokens_per_step"] for r in rows}
    for (v, pinned), got in cells.items():
        pts = [label for label in labels if label in got]
        name = v + (" (pin_memory)" if pinned else "")
        fig.add_scatter(x=[tokens[label] for label in pts], y=[median(got[label]) for label in pts],
                        mode="lines+markers", name=name,
                        line={"color": colors.get(v, "#333"), "dash": "dash" if pinned else "solid"},
                        text=[f"micro-batch {label}" + (f"（{len(got[label])} 台机器的中位数）" if len(got[label]) > 1 else "")
                              for label in pts],
                        hovertemplate="%{text}<br>每步 %{x:,} 个 token<br>%{y:,.0f} tokens/s<extra>" + name + "</extra>")
    zero2 = [(tokens[label], median(values)) for label, values in cells.get(("ZeRO-2", False), {}).items()]
    if zero2:
        zero2.sort()
        xs = [x for x, _ in zero2]
        fig.add_scatter(x=xs + xs[::-1], y=[0.7 * y for _, y in zero2] + [0.5 * y for _, y in zero2[::-1]],
                        fill="toself", mode="none",
                        fillcolor="rgba(128,128,128,0.2)", name="ZeRO-2 的 50–70%（即慢 30–50%）", hoverinfo="skip")
    prov = (data or load_throughput())["provenance"]
    fig.update_layout(title=f"{prov['shape']}，seq {prov['seq']}，{prov['gpu'].split(',')[0]}：吞吐与每步 token 数",
                      xaxis={"title": "每个优化器步的 token 数（micro-batch × 累积步数 × 1024）", "type": "log"},
                      yaxis={"title": "tokens/s"}, legend={"font": {"size": 11}}, margin={"t": 60})
    return fig


def slowdown_figure(data: dict | None = None):
    """Offload slowdown (%) against tokens per optimizer step, pinned and unpinned, with the claimed 30–50% band."""
    import plotly.graph_objects as go

    from .gpu_results import offload_slowdown, per_variant, row_label

    rows = [r for r in offload_slowdown(data) if r["same_lease"]]  # an offload run beside its own baseline
    fig = go.Figure()
    xs = sorted({r["tokens_per_step"] for r in rows})
    if xs:
        fig.add_scatter(x=[xs[0], xs[-1], xs[-1], xs[0]], y=[30, 30, 50, 50], fill="toself", mode="none",
                        fillcolor="rgba(128,128,128,0.2)", name="原文：慢 30–50%", hoverinfo="skip")
    labels, cells = per_variant(rows, lambda r: r["slowdown"])
    tokens = {row_label(r): r["tokens_per_step"] for r in rows}
    baseline = {r["variant"]: r["baseline"] for r in rows}
    for (v, pinned), got in cells.items():
        pts = [label for label in labels if label in got]
        name = f"{v} vs {baseline[v]}" + (" (pin_memory)" if pinned else "")
        fig.add_scatter(x=[tokens[label] for label in pts], y=[100 * median(got[label]) for label in pts],
                        mode="lines+markers", name=name, line={"dash": "dash" if pinned else "solid"},
                        hovertemplate="每步 %{x:,} 个 token：慢 %{y:.0f}%<extra>" + name + "</extra>")
    fig.update_layout(title="CPU offload 让训练慢多少（同 stage、同 micro-batch 对比）",
                      xaxis={"title": "每个优化器步的 token 数", "type": "log"},
                      yaxis={"title": "比不 offload 慢（%）", "range": [0, 100]}, margin={"t": 60})
    return fig


def loss_figure(curves: dict[str, dict], title: str, name: str):
    """Loss against step, one line per run (a :class:`dscourse.plots.Figure`)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, curve in curves.items():
        steps = sorted(int(s) for s in curve)
        values = {int(k): v for k, v in curve.items()}
        fig.add_trace(go.Scatter(x=steps, y=[values[s] for s in steps], mode="lines+markers", name=label))
    fig.update_layout(title=title, xaxis_title="步", yaxis_title="loss",
                      legend_orientation="h", legend_y=-0.25, margin=dict(t=50, b=40, l=60, r=20))
    return Figure(fig, name)
