# %% [markdown]
# # 4.4 实验：数值格式、loss scaling 与 fp32 主权重
#
# 原文的目录列出了“混合精度训练”一节，正文却没有写。本 notebook 把它补全，**每个数都由代码算出或实测**：
#
# 1. fp32 / tf32 / bf16 / fp16 / fp8 的位数、范围、最小正规数和次正规数（subnormal）、精度，全部来自 `torch.finfo`；
#    一个真实模型的梯度落在这些范围的什么位置；
# 2. 为什么要 loss scaling：fp16 梯度下溢（underflow）成 0；为什么要 fp32 主权重（master weights）：bf16 里 `1 + 1e-4 == 1`，
#    以及它对真实训练曲线的影响；
# 3. DeepSpeed 自己的动态 loss scaler（`DynamicLossScaler`）：用它真实的 `update_scale(overflow)` 回放，交互式地调
#    `initial_scale_power`、`loss_scale_window`、`hysteresis`、`min_loss_scale`；复现
#    “Current loss scale already at minimum” 报错，并检验各种“修复”是否真的有效；
# 4. 在 2 个 CPU rank 上用 DeepSpeed 真实地跑 bf16 与 fp32：loss 曲线、配置键（`fp16`、`bf16`、`communication_data_type`）、
#    逐字节清点的显存；fp16 在 DeepSpeed 的 CPU 加速器上为什么跑不了；
# 5. 一张 H100 上 fp16 与 bf16 的实测：吞吐、跳过的步数、loss scale 轨迹。
#
# 文中引用的 DeepSpeed 行为都来自 DeepSpeed 0.19.8 的源码，每处都注明了文件和函数。

# %%
# NBVAL_IGNORE_OUTPUT
import deepspeed
import torch
import transformers

from dscourse import scale

print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
print(f"scale: {scale.scale()} ({scale.ranks()} ranks)")
transformers.logging.set_verbosity_error()  # quiet transformers' one-time notices in the cells below

# %% [markdown]
# ## 1. 数值格式：位数、范围与精度
#
# 一个二进制浮点数由符号位、指数位（exponent，决定**范围**）和尾数位（mantissa，决定**精度**）组成。
# 下表直接读 `torch.finfo`：`max` 是最大有限值，`smallest_normal` 是最小正规数，`eps` 是 1.0 到下一个可表示数的距离。
# `torch.finfo` 没有“最小次正规数”这一项：它等于 `smallest_normal × eps`（最小正规数以下再少一个最低位），
# 下面把它和它的一半真的转换成该格式，确认前者保留、后者变成 0。
#
# tf32（TensorFloat-32）不是一种存储格式，PyTorch 里没有对应的 dtype：它是 Ampere 及以后 GPU 的 Tensor Core 做 fp32 矩阵乘法时的
# 计算模式（`torch.backends.cuda.matmul.allow_tf32` / `torch.set_float32_matmul_precision("high")`），
# 输入按 1 + 8 + 10 位舍入。它那一行由位布局算出，次正规数一栏留空。

# %%
import math

from dscourse.book import glue
from dscourse.precision import FORMAT_HEADER, format_rows, format_table
from dscourse.tables import text_table

formats = {f.name: f for f in format_table()}
print(text_table(FORMAT_HEADER, format_rows(formats.values()), align_right_from=2))

for f in formats.values():
    if f.dtype and f.smallest_subnormal:
        dtype = getattr(torch, f.dtype)
        assert torch.tensor(f.smallest_subnormal).to(dtype).float().item() == f.smallest_subnormal
        assert torch.tensor(f.smallest_subnormal / 2).to(dtype).float().item() == 0.0
fp16, bf16, fp32 = formats["fp16"], formats["bf16"], formats["fp32"]
assert fp16.max == 65504 and bf16.exponent_bits == fp32.exponent_bits == 8
glue("fp16_max", f"{fp16.max:,.0f}")
glue("fp16_normal", f"2^-14 ≈ {fp16.smallest_normal:.3g}")
glue("fp16_subnormal", f"2^-24 ≈ {fp16.smallest_subnormal:.3g}")
glue("bf16_max", f"{bf16.max:.3g}")
glue("bf16_eps", f"2^-7 = {bf16.eps}")
glue("fp16_eps", f"2^-10 ≈ {fp16.eps:.4g}")

# %% [markdown]
# 读这张表：
#
# - **bf16** 与 fp32 有同样的 8 位指数，范围几乎相同（最大约 3.4e38），但只有 7 位尾数：约 2.4 位十进制有效数字。
# - **fp16** 有 10 位尾数（精度比 bf16 高 8 倍），但只有 5 位指数：最大 65504，最小正规数 $2^{-14}$，
#   再小就进入次正规数，到 $2^{-24}$ 以下直接变成 0。**fp16 的问题在范围，bf16 的问题在精度。**
# - **fp8**：e4m3 精度高、范围小（最大 448），e5m2 范围与 fp16 相当、精度更低；DeepSpeed 0.19.8 的 `fp16`/`bf16` 配置不涉及 fp8，这里只作对比。
#
# ## 2. 真实梯度落在哪里
#
# 取 `gpt2-tiny`（13 万参数），在一个合成 batch 上做一次前向和反向，看每个梯度元素的 $\log_2|g|$。
# 这里的梯度是**参考值**：在 float64 里单线程算出，再舍入成 fp32 一次。直接用 fp32 算，最后几位取决于 CPU 的 kernel
# 和线程数，而恰恰是那些最小的梯度决定了“有多少落到 fp16 范围以外”；参考值在每台机器上都一样。

# %%
from dscourse.precision import cast_report, exact_zero_gradients, log2_histogram, model_gradients

grads = model_gradients("gpt2-tiny", micro_batch=4, seed=0)
nonzero = grads[grads != 0]
print(f"{grads.numel():,} gradient elements, {nonzero.numel():,} nonzero; log2|g| from "
      f"{nonzero.abs().log2().min().item():.0f} to {nonzero.abs().log2().max().item():.1f}, "
      f"median {nonzero.abs().log2().median().item():.1f}")
below_normal = (nonzero.abs() < fp16.smallest_normal).float().mean().item()
below_subnormal = (nonzero.abs() < fp16.smallest_subnormal / 2).float().mean().item()
print(f"below fp16's smallest normal (2^-14): {100 * below_normal:.1f}%; "
      f"below half its smallest subnormal (rounds to 0): {100 * below_subnormal:.3f}%")
print("exactly zero:", ", ".join(f"{name} {n}" for name, n in exact_zero_gradients("gpt2-tiny").items()))

# %% [markdown]
# 最后一行的 0 有两种来源。`wpe`（位置嵌入）里序列用不到的那些行根本不参与计算；每层 `c_attn.bias` 里属于 key 的那 64 个偏置，
# 梯度在精确算术下就是 0：给所有 key 加同一个偏移，每个 query 的所有打分都平移同一个量，softmax 不变。
# 可浮点反向传播算出来的不是 0，而是舍入噪声：fp32 里约 $2^{-40}$，float64 里约 $2^{-70}$，具体多大取决于 CPU。
# 它们会被误算成“fp16 下溢”，所以参考值把 $2^{-45}$ 以下的噪声置回 0（`dscourse.precision.NOISE_FLOOR`）。

# %%
import plotly.graph_objects as go

from dscourse.plots import show

bins, counts = log2_histogram(grads, -36, 18)
_, counts_scaled = log2_histogram(grads * 2.0**16, -36, 18)
fig = go.Figure()
fig.add_bar(x=[b + 0.5 for b in bins], y=counts, name="梯度（fp32）", marker_color="#4C78A8", opacity=0.8)
fig.add_bar(x=[b + 0.5 for b in bins], y=counts_scaled, name="梯度 × 2^16（loss scale）", marker_color="#F58518",
            opacity=0.6)
for x, text, color in [(-24, "fp16 最小次正规数 2^-24", "#E45756"),
                       (-14, "fp16 最小正规数 2^-14", "#E45756"),
                       (math.log2(fp16.max), "fp16 最大值 65504", "#E45756")]:
    fig.add_vline(x=x, line_dash="dash", line_color=color)
    fig.add_annotation(x=x, y=1.02, yref="paper", text=text, showarrow=False, font=dict(size=10, color=color))
fig.add_annotation(x=-35, y=0.85, yref="paper", xanchor="left", showarrow=False,
                   text="bf16：最小正规数 2^-126，最大值 ≈ 2^128（远在坐标轴之外）")
fig.update_layout(barmode="overlay", title="gpt2-tiny 的梯度落在哪里（一次反向，fp32）",
                  xaxis_title="log2 |梯度|", yaxis_title="元素个数",
                  legend_orientation="h", legend_y=-0.2, bargap=0)
show(fig, "gradient-histogram", height=440)

# %% [markdown]
# 蓝色是梯度本身：一大块落在 fp16 的次正规区（两条红色虚线之间，只剩几个有效二进制位），左尾掉出 $2^{-24}$ 以下；
# 橙色是乘以 $2^{16}$ 之后：整体右移 16 格，几乎全部进入 fp16 的正规区，而离 65504 仍有很大余量。
# 这就是 **loss scaling**：反向传播之前把 loss 乘以 $S$，梯度也都乘上 $S$（链式法则），更新之前再除回去。
# bf16 的正规区一直延伸到 $2^{-126}$，这些梯度全部落在里面，所以 bf16 不需要 loss scaling。
#
# ## 3. fp16 的下溢：真实张量上数一数
#
# 把上面的参考梯度乘以 scale 后转换成 fp16/bf16，数一数变成 0、落进次正规区、溢出成 inf 的元素
# （只数参考梯度非零的元素；转换是 IEEE 的就近舍入，每台机器上结果相同）：

# %%
from dscourse.precision import underflow_curve

rows = []
cast = {}
for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
    for s in (1.0, 2.0**16):
        r = cast[(name, s)] = cast_report(grads, dtype, s)
        rows.append([name, f"2^{math.log2(s):.0f}", f"{round(r['zero'] * r['elements']):,}",
                     f"{100 * r['zero']:.3f}%", f"{100 * r['subnormal']:.2f}%", f"{100 * r['overflow']:.0f}%"])
print(text_table(["dtype", "loss scale", "became 0 (elements)", "became 0", "subnormal", "inf"], rows))
glue("fp16_zero_n", f"{round(cast[('fp16', 1.0)]['zero'] * cast[('fp16', 1.0)]['elements'])}")
glue("fp16_zero_pct", f"{100 * cast[('fp16', 1.0)]['zero']:.3f}%")
glue("fp16_subnormal_pct", f"{100 * cast[('fp16', 1.0)]['subnormal']:.1f}%")
glue("fp16_zero_scaled_pct", f"{100 * cast[('fp16', 2.0**16)]['zero']:.3f}%")
glue("fp16_subnormal_scaled_pct", f"{100 * cast[('fp16', 2.0**16)]['subnormal']:.4f}%")

# %% [markdown]
# 在这个刚初始化的小模型上，fp16 直接把 {glue}`fp16_zero_n` 个梯度元素（{glue}`fp16_zero_pct`）变成 0，
# 另有 {glue}`fp16_subnormal_pct` 落进次正规区（精度只剩几位）；乘以 $2^{16}$ 后没有一个变成 0，次正规的只剩
# {glue}`fp16_subnormal_scaled_pct`。bf16 的转换没有下溢：它的问题不在范围。
#
# 换一种做法：把整个模型转成 fp16/bf16，真的在低精度下做前向和反向（PyTorch 在 CPU 上也能算 fp16），loss 先乘 scale
# 再 `backward()`。**这一格的数字因 CPU 而异**：低精度的矩阵乘法由 CPU 的指令集（AVX512-FP16、AMX、AVX2……）决定走哪个
# kernel、怎样舍入中间结果，所以下表只在本机有效，正文不引用它的数字。它在各种 CPU 上共同的地方：fp16 不乘 scale 时有梯度变成 0，
# 乘以 $2^{16}$ 后几乎没有；bf16 里的 0 不是下溢，而是词嵌入梯度里许多 token 的正负项在 bf16 的精度下相消。

# %%
# NBVAL_IGNORE_OUTPUT
# (low-precision kernels differ between CPUs: the counts below hold for this machine only)
rows = []
for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
    for s in (1.0, 2.0**16):
        low = model_gradients("gpt2-tiny", micro_batch=4, seed=0, dtype=dtype, scale=s)
        zero_backward = ((low == 0) & (grads != 0)).sum().item()
        rows.append([name, f"2^{math.log2(s):.0f}", f"{zero_backward:,}", f"{100 * zero_backward / nonzero.numel():.3f}%"])
print(text_table(["dtype", "loss scale", "real low-precision backward: became 0", "share"], rows))

# %% [markdown]
# 初始化时梯度还算大。梯度会变小：loss 除以更多的 token、训练收敛之后，以及**梯度累积**——DeepSpeed 的
# `engine.backward()` 先把 loss 除以 `gradient_accumulation_steps`（`deepspeed/runtime/engine.py` 的 `backward`），
# 每个 micro-batch 的梯度就小了那么多倍。下面把同一批梯度缩小 $2^{-k}$，看 fp16 里变成 0 的比例：

# %%
shifts = list(range(0, 17))
curve = {f"fp16, scale {label}": underflow_curve(grads, torch.float16, shifts, s)
         for label, s in (("1", 1.0), ("2^16", 2.0**16))}
print(text_table(["gradients × 2^-k", *curve], [[f"k = {k}", *(f"{100 * c[i]:.2f}%" for c in curve.values())]
                                               for i, k in enumerate(shifts) if k % 4 == 0]))
glue("fp16_zero_k8", f"{100 * curve['fp16, scale 1'][8]:.1f}%")

# %%
fig = go.Figure()
for label, c in curve.items():
    fig.add_scatter(x=shifts, y=[round(100 * v, 3) for v in c], mode="lines+markers", name=label)
fig.update_layout(title="梯度变小时，fp16 把多少梯度元素冲成 0",
                  xaxis_title="梯度缩小 2^-k 倍（k）", yaxis_title="变成 0 的非零元素（%）",
                  legend_orientation="h", legend_y=-0.2)
show(fig, "underflow-vs-shift", height=400)

# %% [markdown]
# 梯度小到 $2^{-8}$（相当于 256 步梯度累积）时，不做 loss scaling 的 fp16 会把可观比例的梯度直接抹成 0；
# 乘以 $2^{16}$ 的那条线在整个范围内都几乎贴着 0。
#
# ## 4. 为什么需要 fp32 主权重
#
# bf16 的 `eps` 是 $2^{-7}$：1.0 附近相邻两个 bf16 数相差 0.0078。一个小于半个间距（0.0039）的更新加到 1.0 上，
# 舍入之后什么也没留下：

# %%
from dscourse.precision import lost_update

w = torch.tensor(1.0, dtype=torch.bfloat16)
print(f"bf16: 1 + 1e-4 = {(w + 1e-4).item()}    fp32: 1 + 1e-4 = {torch.tensor(1.0) + 1e-4:.4f}    "
      f"(bf16 + 1e-4 == 1: {bool(w + 1e-4 == w)})")
rows = []
for weight in (1.0, 0.1, 0.02):
    for update in (1e-3, 1e-4, 1e-5):
        r = lost_update(weight, update)
        rows.append([weight, f"{update:g}", r["low"], f"{r['fp32']:g}", "lost" if r["lost"] else "applied",
                     f"{r['half_ulp']:.3g}"])
print(text_table(["weight", "update", "bf16 result", "exact", "bf16", "half the bf16 spacing at this weight"], rows))
glue("bf16_lost", f"{(w + 1e-4).item():g}")

# %% [markdown]
# Adam 的每步更新量约等于学习率。学习率 2e-5 时，绝对值大于约 0.01 的 bf16 权重每一步的更新都被舍入掉。
# 混合精度训练因此在 bf16 参数之外保留一份 **fp32 主权重**：前向、反向用 bf16，优化器更新 fp32 主权重，再把它舍入成 bf16。
# 单步更新在 bf16 副本里可能看不出来，但会在 fp32 主权重里累积，直到跨过一个 bf16 间距。
# 这正是 4.1 节每参数 16 字节里那 4 个字节。
#
# 下面在 CPU 上用同一个种子、同样的数据训练 `gpt2-tiny` 150 步（AdamW，学习率 2e-5），比较三种做法：
# 全 fp32；bf16 计算 + fp32 主权重（DeepSpeed 的 bf16 就是这样）；纯 bf16（权重和 Adam 状态都是 bf16）。

# %%
from dscourse.precision import train_master_weights

master_runs = train_master_weights("gpt2-tiny", steps=150, lr=2e-5, micro_batch=8, pool=4, seed=0)
final = {m: sum(r["losses"][-10:]) / 10 for m, r in master_runs.items()}  # mean of the last 10 steps
start = master_runs["fp32"]["losses"][0]
drop = {m: start - f for m, f in final.items()}
mixed_close = abs(final["bf16 + fp32 master"] - final["fp32"]) < 0.02
pure_stuck = drop["pure bf16"] < drop["fp32"] / 3
print(f"fp32:               loss {start:.2f} -> {final['fp32']:.2f} (mean of the last 10 of 150 steps)")
print(f"bf16 + fp32 master: ends within 0.02 of fp32: {mixed_close}")
print(f"pure bf16:          fell by less than a third of what fp32 fell: {pure_stuck}")
assert mixed_close and pure_stuck
glue("master_fp32_final", f"{final['fp32']:.2f}")
glue("master_mixed_final", "与 fp32 相差不到 0.02")
glue("master_pure_final", "降幅不到 fp32 的三分之一")
glue("master_start", f"{start:.2f}")
glue("master_setup", f"gpt2-tiny，AdamW，学习率 2e-5，{len(master_runs['fp32']['losses'])} 步")

# %% [markdown]
# 上面只打印在每台 CPU 上都成立的结论。bf16 的两条曲线每一步的数值取决于 CPU 的 bf16 kernel（第三位小数就会不同），
# 下表和下图是本机的结果：

# %%
# NBVAL_IGNORE_OUTPUT
# (the bf16 runs' numbers depend on the CPU's bf16 kernels)
rows = []
for mode, r in master_runs.items():
    unchanged = r["unchanged"][1:]
    rows.append([mode, *(f"{r['losses'][i]:.2f}" for i in (0, 49, 99, 149)),
                 f"{final[mode]:.2f}", f"{100 * sum(unchanged) / len(unchanged):.0f}%"])
print(text_table(["mode", "loss step 0", "step 49", "step 99", "step 149", "mean last 10",
                  "weights unchanged per step"], rows))

# %%
# NBVAL_IGNORE_OUTPUT
# (bf16 kernels round differently on different CPUs: the curves move in the third decimal)
fig = go.Figure()
for mode, color in zip(master_runs, ("#4C78A8", "#54A24B", "#E45756")):
    fig.add_scatter(y=[round(x, 3) for x in master_runs[mode]["losses"]], mode="lines", name=mode, line_color=color)
fig.update_layout(title="gpt2-tiny，AdamW lr 2e-5：fp32 主权重不能省", xaxis_title="步",
                  yaxis_title="训练 loss", legend_orientation="h", legend_y=-0.2)
show(fig, "master-weights-curves", height=400)

# %% [markdown]
# 有 fp32 主权重的 bf16 曲线与 fp32 几乎重合；纯 bf16 几乎学不动。最后一列是每一步结束后没有变化的 bf16 权重所占比例：
# 有主权重时也有大量 bf16 权重单步不变（更新还在 fp32 里累积），纯 bf16 时这些更新就永远丢了。
#
# ## 5. DeepSpeed 的动态 loss scaler
#
# fp16 训练需要 loss scaling，而合适的 scale 事先不知道，于是 DeepSpeed 动态调整它。
# ZeRO-1/2/3 的优化器（`DeepSpeedZeroOptimizer`、`DeepSpeedZeroOptimizer_Stage3`）在构造时调用
# `CreateLossScaler(dtype, static_loss_scale, dynamic_scaling, dynamic_loss_args)`
# （`deepspeed/runtime/fp16/loss_scaler.py`）：fp16 且 `"loss_scale": 0`（默认）时得到一个 `DynamicLossScaler`，
# 参数来自配置的 `"fp16"` 段（`DeepSpeedFP16Config.dynamic_loss_scale_args()`，`deepspeed/runtime/precision_config.py`）。
# 每次 `step()` 先检查梯度里有没有 inf/NaN，再调用 `update_scale(overflow)`；有溢出就清空梯度、**跳过这一步**。
# 这是 DeepSpeed 0.19.8 里这个方法的全部代码：

# %%
import inspect
import json

from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler
from deepspeed.runtime.precision_config import DeepSpeedFP16Config

print(inspect.getsource(DynamicLossScaler.update_scale))
defaults = DeepSpeedFP16Config(enabled=True)
fp16_defaults = {k: getattr(defaults, k) for k in ("loss_scale", "initial_scale_power", "loss_scale_window",
                                                   "hysteresis", "consecutive_hysteresis", "min_loss_scale")}
print(fp16_defaults)
glue("fp16_defaults", "、".join(f"`{k}`: {json.dumps(v)}" for k, v in fp16_defaults.items()))

# %% [markdown]
# 规则（逐行对应上面的代码）：
#
# - 初始 scale 为 $2^{\text{initial\_scale\_power}}$（默认 $2^{16}$）。
# - **溢出**：若 `hysteresis` 还没耗尽（`cur_hysteresis > 1`），只把它减 1，scale 不变；耗尽之后每次溢出 scale 减半，
#   但不低于 `min_loss_scale`。**已经等于 `min_loss_scale` 时再溢出，就抛出 `Exception`**——这就是那条报错。
# - **不溢出**：距离上次溢出每满 `loss_scale_window` 步（默认 1000），scale 翻倍，并把 hysteresis 恢复为初值；
#   `consecutive_hysteresis: true` 时，每一个不溢出的步都立即恢复 hysteresis。
# - 每个溢出的步都被跳过，不论 scale 有没有变。
#
# `simulate_loss_scale` 用这个类本身回放：按配置的 `"fp16"` 段构造 scaler（配置先经过 DeepSpeed 自己的 `DeepSpeedFP16Config` 校验），
# 每一步调用它的 `update_scale(overflow)`。唯一的替身是 `deepspeed.comm`：scaler 只用它问“我是不是 rank 0”来决定打不打日志，
# 这里没有进程组，就回答 0；DeepSpeed 打的日志收集起来而不是打印。先看一个手写的溢出序列（`loss_scale_window` 取 2，便于看清）：

# %%
from dscourse.precision import simulate_loss_scale

pattern = [False, True, True, False, False, False, True, False]
demo = simulate_loss_scale(pattern, loss_scale_window=2)
print(text_table(["step", "overflow", "scale used", "skipped"],
                 [[t, o, f"{s:g}", "yes" if o else ""] for t, (o, s) in enumerate(zip(demo.overflow, demo.scales))]))
print("\nDeepSpeed's log:", *demo.messages, sep="\n  ")

# %% [markdown]
# 第 1 步溢出只消耗了 hysteresis，第 2 步溢出才减半；第 3–5 步没有溢出，满 2 步后 scale 翻回 65536、hysteresis 恢复为 2，
# 所以第 6 步的溢出又只是消耗 hysteresis。
#
# ### 交互：调 `"fp16"` 的四个键
#
# 梯度情景是合成的：每一步给出“不做缩放时最大的 |梯度|” $\max|g|$，$S \cdot \max|g| > 65504$ 即溢出（NaN 的步无论 $S$ 多小都溢出）。
# 这是对梯度的模型；scaler 怎么反应，完全是 DeepSpeed 的代码。灰线是该步不溢出的最大 scale，红叉是被跳过的步。
# 控件需要 Python 内核才能响应：在 Colab 或 Jupyter 里运行本 notebook 即可交互；网页版的读者请用下面紧接着的“不需要内核的版本”。

# %%
from dscourse.widgets import LossScaleExplorer

explorer = LossScaleExplorer(scenario="healthy")
explorer.widget

# %%
# The same explorer driven from code, as a reader would click it.
from dscourse.precision import trace_summary

for values in ({}, {"loss_scale_window": 200}, {"scenario": "beyond fp16", "loss_scale_window": 1000},
               {"precision": "bf16"}):
    print(f"{str(values):52s} -> {trace_summary(explorer.set(**values))}")
_ = explorer.set(scenario="healthy", precision="fp16")

# %% [markdown]
# ### 不需要内核的版本
#
# 下面这张图在网页版里也能交互，**不需要内核**：左上角的下拉菜单选梯度情景，滑块选 `loss_scale_window`（其余键取 DeepSpeed 的默认值）。
# 每条曲线都已由上面的控件用的同一个函数 `simulate_loss_scale`（DeepSpeed 自己的 `DynamicLossScaler`）预先算好，存在图里。
# 试试“健康训练”下把窗口调小：scale 更频繁地试探翻倍，跳过的步随之增多；“发散”情景下不论窗口多大，都会在 NaN 出现后不久抛出异常。

# %%
from dscourse.plots import loss_scale_explorer

show(loss_scale_explorer(windows=(50, 100, 200, 500, 1000, 2000), window=1000, scenario="healthy"))

# %% [markdown]
# ### 复现 “Current loss scale already at minimum”
#
# 这条报错出自 `deepspeed/runtime/fp16/loss_scaler.py` 的 `DynamicLossScaler.update_scale`：
# 溢出、hysteresis 已耗尽、且 `cur_scale == min_scale` 时 `raise Exception("Current loss scale already at minimum - cannot
# decrease scale anymore. Exiting run.")`。`raise_error_at_min_scale` 默认为 `True`，配置里没有键能改它。
# 它从 ZeRO 优化器的 `step()` → `_update_scale()` 抛出，穿过 `engine.step()` 直到你的训练循环：训练中止。
#
# 什么情况下会走到这一步？下表对四种梯度情景试几种常见的“修复”：

# %%
from dscourse.precision import grad_scenario, simulate_zero0_loss_scale

fixes = [("fp16 defaults", "fp16", {}),
         ("fp16, min_loss_scale 64", "fp16", {"min_loss_scale": 64}),
         ("fp16, initial_scale_power 8", "fp16", {"initial_scale_power": 8}),
         ("fp16, initial_scale_power 32", "fp16", {"initial_scale_power": 32}),
         ("fp16, hysteresis 8", "fp16", {"hysteresis": 8}),
         ("bf16", "bf16", {})]
outcome = {}
rows = []
for scenario in ("healthy", "grads grow", "beyond fp16", "diverged"):
    history = grad_scenario(scenario, steps=3000, seed=0)
    row = [scenario]
    for label, precision, keys in fixes:
        t = simulate_loss_scale(history, precision, **keys)
        outcome[(scenario, label)] = t
        row.append(f"raises at step {t.failed_at}" if t.error else f"ok, {len(t.skipped)} skipped")
    rows.append(row)
print(text_table(["scenario (3000 steps)", *(label for label, _, _ in fixes)], rows, align_right_from=99))
crash = outcome[("beyond fp16", "fp16 defaults")]
print(f"\n{crash.error}\nlast lines DeepSpeed logged before it:", *crash.messages[-2:], sep="\n  ")
glue("atmin_step", crash.failed_at)
glue("atmin_step_power8", outcome[("beyond fp16", "fp16, initial_scale_power 8")].failed_at)
glue("diverged_bf16_skipped", len(outcome[("diverged", "bf16")].skipped))

# %%
from dscourse.plots import scale_figure

show(scale_figure(outcome[("grads grow", "fp16, min_loss_scale 64")], grad_scenario("grads grow"),
                  title="梯度变大、min_loss_scale 64：scale 降不到 64 以下，于是抛出异常", name="atmin-trace"))

# %% [markdown]
# 结论（每一格都是 DeepSpeed 自己的 `update_scale` 算出来的）：
#
# - **梯度超出 fp16 范围**（$\max|g| > 65504$，例如在 bf16 下预训练的模型改用 fp16 微调，激活值和梯度都可能超过 65504）：
#   scale 降到 1 也溢出，任何 fp16 设置都会报错。**改用 bf16** 是唯一的配置级修复。
#   **降低 `initial_scale_power` 不是修复**：它只让 scale 更早降到最小值，报错来得更早
#   （默认在第 {glue}`atmin_step` 步、`initial_scale_power: 8` 时在第 {glue}`atmin_step_power8` 步）；增大 `hysteresis` 也只是推迟。
# - **`min_loss_scale` 设得太高**：梯度一时变大、需要的 scale 低于下限时报错；把它调回默认的 1（或改用 bf16）即可。
#   注意配置里的 `min_loss_scale` 是整数（`DeepSpeedFP16Config` 会拒绝 0.5 这样的值），所以 1 已是最低。
# - **训练真的发散**（NaN）：fp16 必然报错；bf16 不报错，但会**静默地跳过之后的每一步**（0.19.8 里 `bf16.check_grad_overflow`
#   默认为 `true`，ZeRO 优化器对非有限梯度跳过更新，只打一条 WARNING）。这里要修的是学习率、数据或模型，而不是精度设置。
#
# ZeRO-0 不走这条路：没有 ZeRO 优化器时，DeepSpeed 用 `FP16_UnfusedOptimizer`（FusedAdam 时为 `FP16_Optimizer`）包装优化器，
# 它们的 `_update_scale`（`deepspeed/runtime/fp16/unfused_optimizer.py`、`fused_optimizer.py`）**没有 hysteresis，到最小值后停在那里、不抛异常**。
# 用 DeepSpeed 的这个方法回放同一个“超出 fp16 范围”的情景：

# %%
z0 = simulate_zero0_loss_scale(grad_scenario("beyond fp16"))
print(f"ZeRO-0: {trace_summary(z0)} (every overflowing step skipped, the run goes on)")
print(f"ZeRO-1/2/3: {trace_summary(crash)}")
glue("zero0_skipped", f"{len(z0.skipped)} / {z0.steps}")

# %% [markdown]
# 同样的梯度，ZeRO-0 把 {glue}`zero0_skipped` 步悄悄跳过、训练“正常”进行，ZeRO-1/2/3 则报错退出。前者更危险：loss 曲线看起来停滞，却没有任何报错。
#
# ## 6. DeepSpeed 上真实的 bf16 与 fp32
#
# 用 `torchrun` 在 2 个 CPU rank 上启动 `dscourse.scripts.precision_run`：同一个 `gpt2-tiny`、同样的种子和数据
# （4 个合成 batch 循环，模型能记住它们，所以 loss 会下降），ZeRO-2，AdamW（学习率 1e-3），30 步。
# 依次训练 bf16、fp32、bf16 + `"communication_data_type": "fp32"`，以及 fp16；训练后用 `dscourse.accounting` 逐字节清点每个引擎持有的张量。
# 另外用 ZeRO-0 各跑 2 步 bf16 和 fp32，只为清点显存。

# %%
import json

from dscourse.launch import run_ranks

ds_runs = [{"name": "bf16", "precision": "bf16"},
           {"name": "fp32", "precision": "fp32"},
           {"name": "bf16, comm fp32", "precision": "bf16", "extra": {"communication_data_type": "fp32"}},
           {"name": "fp16", "precision": "fp16"}]
zero2 = run_ranks("dscourse.scripts.precision_run",
                  ["--shape", "gpt2-tiny", "--stage", "2", "--steps", "30", "--micro-batch", "4", "--pool", "4",
                   "--lr", "1e-3", "--count-bytes", "--runs", json.dumps(ds_runs)], nproc=scale.ranks(), timeout=600)
zero0 = run_ranks("dscourse.scripts.precision_run",
                  ["--shape", "gpt2-tiny", "--stage", "0", "--steps", "2", "--count-bytes",
                   "--runs", json.dumps(ds_runs[:2])], nproc=scale.ranks(), timeout=600)
by_name = {r["name"]: r for r in zero2.ranks[0]["runs"]}
print(text_table(["run", "config section", "optimizer DeepSpeed built", "model params", "communication_data_type"],
                 [[r["name"], json.dumps({k: r["config"][k] for k in ("bf16", "fp16", "communication_data_type")
                                          if k in r["config"]}) or "(none: fp32)",
                   r.get("optimizer_class", "—"), r.get("param_dtype", "—"), r.get("communication_data_type", "—")]
                  for r in zero2.ranks[0]["runs"] if r["precision"] != "fp16"], align_right_from=99))

# %% [markdown]
# - `"bf16": {"enabled": true}`：DeepSpeed 把模型转成 bf16，ZeRO 优化器持有 fp32 主权重分片；
# - 不写 `bf16`/`fp16`：fp32 训练；
# - `communication_data_type`：梯度 all-reduce / reduce-scatter 用的精度。不设置时跟随训练精度
#   （`DeepSpeedEngine.communication_data_type`：fp16 → fp16，bf16 → bf16，否则 fp32），设成 `"fp32"` 时梯度先转成 fp32 再通信：
#   通信量加倍，换来多个 rank 求和时不在 bf16 里累积舍入误差。
#
# 三次训练的 loss 是否一致（这一格只打印在任何 CPU 上都成立的结论；逐步的数值在下一格）：

# %%
trained = [r for r in zero2.ranks[0]["runs"] if "losses" in r and r["precision"] != "fp16"]
diff = max(abs(a - b) for a, b in zip(by_name["bf16"]["losses"], by_name["fp32"]["losses"]))
drop = by_name["fp32"]["losses"][0] - by_name["fp32"]["losses"][-1]
print(f"fp32 loss over 30 steps: {by_name['fp32']['losses'][0]:.2f} -> {by_name['fp32']['losses'][-1]:.2f}")
print(f"largest |bf16 - fp32| over the 30 steps below 0.05: {diff < 0.05}")
print(f"largest |bf16 with fp32 communication - fp32| below 0.05: "
      f"{max(abs(a - b) for a, b in zip(by_name['bf16, comm fp32']['losses'], by_name['fp32']['losses'])) < 0.05}")
assert diff < 0.05 and drop > 0.5
glue("ds_bf16_fp32_diff", "不到 0.05")
glue("ds_loss_drop", f"{drop:.1f}")

# %% [markdown]
# 两个 rank 上的 loss，每 5 步一行（bf16 的数值取决于 CPU 的 bf16 kernel，在别的机器上第二位小数就可能不同）：

# %%
# NBVAL_IGNORE_OUTPUT
# (bf16 kernels round differently on different CPUs)
steps_shown = list(range(0, 30, 5)) + [29]
print(text_table(["step", *(r["name"] for r in trained)],
                 [[s, *(f"{r['losses'][s]:.2f}" for r in trained)] for s in steps_shown]))
print(f"\nlargest |bf16 - fp32| over 30 steps: {diff:.3f} (the loss itself fell by {drop:.2f})")

# %% [markdown]
# ### fp16 在 CPU 上
#
# 同一次启动里还试了 fp16，它能不能训练取决于 CPU：`deepspeed.initialize` 在 `DeepSpeedEngine._do_sanity_check` 里检查
# `get_accelerator().is_fp16_supported()`，不支持就抛 `ValueError`。DeepSpeed 的 CPU 加速器
# （`deepspeed/accelerator/cpu_accelerator.py`）只在 `torch.ops.mkldnn._is_mkldnn_fp16_supported()` 为真时支持 fp16——
# 这取决于 CPU 的指令集（AVX512-FP16 / AMX-FP16），多数 CPU 为假。所以上面的表只有 bf16 与 fp32，fp16 的结果在下一格，因机器而异：

# %%
# NBVAL_IGNORE_OUTPUT
# (depends on the CPU's instruction set)
from deepspeed.accelerator import get_accelerator

fp16_run = by_name["fp16"]
print(f"torch.ops.mkldnn._is_mkldnn_fp16_supported(): {torch.ops.mkldnn._is_mkldnn_fp16_supported()}")
print(f"{type(get_accelerator()).__name__}.is_fp16_supported(): {get_accelerator().is_fp16_supported()!r}"
      "  (None: the method falls off its end when mkldnn says no)")
print("fp16 on DeepSpeed here:", fp16_run.get("error") or f"trained, final loss {fp16_run['losses'][-1]:.2f}")

# %% [markdown]
# 注意 PyTorch 本身在 CPU 上能算 fp16（第 3 节的 fp16 反向传播就是在 CPU 上跑的），拒绝它的是 DeepSpeed 的加速器检查。
#
# ### 显存：每个参数多少字节
#
# `count_engine_bytes` 在两次 step 之间清点到的字节（rank 0），与公式对照。bf16 用 4.1 节 `dscourse.memory` 的 `allocated` 公式；
# fp32 用 `dscourse.precision.model_state_bytes`：模型本身的 fp32 参数 4Ψ；ZeRO-0 时 torch 优化器直接更新它们（没有主权重副本），
# 而 ZeRO-1/2 的 `DeepSpeedZeroOptimizer` 即使在 fp32 下也会克隆一份 fp32 分片当作主权重
# （`deepspeed/runtime/zero/stage_1_and_2.py` 里的 `single_partition_of_fp32_groups`）。

# %%
from dscourse.precision import model_state_bytes

rows = []
per_param = {}
for stage, result in ((0, zero0), (2, zero2)):
    for r in result.ranks[0]["runs"]:
        if r["name"] not in ("bf16", "fp32"):
            continue
        psi, world = r["params"], result.ranks[0]["world_size"]
        held = {}  # categories summed over devices ("cpu" here; "cuda" on a GPU)
        for cats in r["held_after_step"].values():
            for cat, n in cats.items():
                held[cat] = held.get(cat, 0) + n
        formula = model_state_bytes(psi, world, stage, r["precision"])
        counted = sum(held.values())
        per_param[(stage, r["name"])] = counted / psi
        rows.append([f"ZeRO-{stage}", r["name"], *(f"{held.get(c, 0):,}" for c in ("params", "master", "optim")),
                     f"{counted:,}", f"{sum(formula.values()):,}", f"{counted / psi:.2f}"])
        assert abs(counted - sum(formula.values())) <= 4 * 32  # AdamW's 4-byte step counter per tensor
print(f"gpt2-tiny: {psi:,} parameters, {world} ranks; bytes held by rank 0 between optimizer steps")
print(text_table(["stage", "precision", "params", "fp32 master", "Adam m+v", "counted", "formula", "bytes/param"],
                 rows))
glue("zero0_bf16_bpp", f"{per_param[(0, 'bf16')]:.0f}")
glue("zero0_fp32_bpp", f"{per_param[(0, 'fp32')]:.0f}")
glue("zero0_bf16_bpp_total", f"{per_param[(0, 'bf16')] + 2:.0f}")  # + bf16 gradients during backward
glue("zero0_fp32_bpp_total", f"{per_param[(0, 'fp32')] + 4:.0f}")  # + fp32 gradients during backward
glue("zero2_bf16_bpp", f"{per_param[(2, 'bf16')]:.0f}")
glue("zero2_fp32_bpp", f"{per_param[(2, 'fp32')]:.0f}")
glue("zero2_world", world)

# %% [markdown]
# 两次 step 之间梯度已释放；反向传播时还要加上梯度（bf16 2Ψ，fp32 4Ψ）。于是 ZeRO-0 的 fp32 训练是 4 + 4 + 8 = **16 字节/参数**，
# 与混合精度的 2 + 2 + 4 + 8 = 16 字节**一样多**：混合精度并不节省模型状态，它节省的是**激活值**（以及通信量），并让 Tensor Core 跑得更快。
# 在 ZeRO-1/2 上，fp32 的参数本身占 4Ψ，DeepSpeed 却仍另存一份 fp32 分片当主权重（在 fp32 下它与参数重复），
# 所以每卡 4Ψ + 12Ψ/N，比 bf16 的 2Ψ + 12Ψ/N 多 2Ψ。
#
# 用 4.1 节的计算器算一个 7B 模型在 8 张 GPU 上（序列 2048，micro-batch 1）：模型状态是两次 step 之间持有的量，
# 反向传播时还要加上梯度（ZeRO-0 每卡完整一份，bf16 2Ψ、fp32 4Ψ；ZeRO-2 切分成 1/N 加通信桶）。激活值按 `activation_bytes`（bf16）估计，
# fp32 时除了 loss 的 fp32 logits（本来就是 fp32）之外都翻倍——这是估计，不是实测。

# %%
from dscourse.memory import PRESETS, activation_bytes, format_bytes

arch = PRESETS["Llama-2-7B"]
act_bf16 = activation_bytes(arch, 2048, 1)
logits = 4 * 2048 * 1 * arch.vocab
act = {"bf16": act_bf16, "fp32": 2 * (act_bf16 - logits) + logits}
rows = []
for precision in ("bf16", "fp32"):
    for stage in (0, 2):
        states = sum(model_state_bytes(arch.params, 8, stage, precision).values())
        rows.append([f"ZeRO-{stage}", precision, format_bytes(states), format_bytes(act[precision]),
                     format_bytes(states + act[precision])])
print(f"{arch.name}: {arch.params / 1e9:.2f}B parameters, 8 GPUs, sequence 2048, micro-batch 1 (per GPU)")
print(text_table(["stage", "precision", "model states (between steps)", "activations", "sum"], rows))
glue("act_7b_bf16", format_bytes(act["bf16"]))
glue("act_7b_fp32", format_bytes(act["fp32"]))

# %% [markdown]
# ## 7. GPU 实测：fp16 与 bf16
#
# `benchmarks/precision_gpu.py` 在一张 GPU 上对 GPT-2 350M（ZeRO-2，micro-batch 8 × 1024 token，AdamW，学习率 2e-4）
# 依次启动三次 `dscourse.scripts.precision_run`：bf16；fp16（DeepSpeed 默认的 `"fp16"` 设置）；
# fp16 且 `initial_scale_power: 32`、`loss_scale_window: 100`（看 scaler 从过高的初值退下来、再周期性地试探）。
# 每次训练约 55 秒，吞吐按第 10 步之后计算。结果和出处（GPU、驱动、版本、日期）在 `dscourse/data/gpu_precision.json`。

# %%
from dscourse.precision import load_gpu_precision

gpu = load_gpu_precision()
prov = gpu["provenance"]
print(f"{prov['gpu']}; torch {prov['torch']} (CUDA {prov['cuda']}), DeepSpeed {prov['deepspeed']}, "
      f"transformers {prov['transformers']}; {prov['date']}")
print(f"model {prov['shape']}, ZeRO-{prov['zero_stage']}, micro-batch {prov['micro_batch']} x {prov['seq']} tokens, "
      f"lr {prov['lr']}; {prov['data']}\n")
common = min(r["steps"] for r in gpu["runs"])
rows = []
for r in gpu["runs"]:
    at = sum(r["losses"][common - 10:common]) / 10
    rows.append([r["name"], r["steps"], r["skipped_steps"], f"{r['tokens_per_second']:,.0f}",
                 f"{at:.3f}", f"2^{math.log2(r['final_loss_scale']):.0f}" if r["precision"] == "fp16" else "—",
                 f"{r['cuda_peak'] / 1e9:.1f} GB"])
print(text_table(["run", "steps", "skipped", "tokens/s", f"loss (steps {common - 10}-{common - 1})", "final scale",
                  "CUDA peak"], rows))
runs = {r["name"]: r for r in gpu["runs"]}
bf16_tps = runs["bf16"]["tokens_per_second"]
fp16_tps = runs["fp16 (DeepSpeed defaults)"]["tokens_per_second"]
probe = runs["fp16 (initial_scale_power 32, loss_scale_window 100)"]
glue("gpu_device", f"{prov['gpu'].split(',')[0]}（驱动 {prov['gpu'].split(',')[1].strip()}，torch {prov['torch']}，"
                   f"DeepSpeed {prov['deepspeed']}，{prov['date']}）")
glue("gpu_bf16_tps", f"{bf16_tps:,.0f}")
glue("gpu_fp16_tps", f"{fp16_tps:,.0f}")
glue("gpu_fp16_speedup", f"{100 * (fp16_tps / bf16_tps - 1):.0f}%")
glue("gpu_fp16_skipped", runs["fp16 (DeepSpeed defaults)"]["skipped_steps"])
glue("gpu_probe_skipped", probe["skipped_steps"])
glue("gpu_probe_first", sum(1 for s in probe["skipped"][:20] if s))
glue("gpu_setup", f"{prov['shape']}，ZeRO-{prov['zero_stage']}，micro-batch {prov['micro_batch']} × {prov['seq']} token")
glue("gpu_peak", f"{runs['bf16']['cuda_peak'] / 1e9:.1f} GB")

# %%
from plotly.subplots import make_subplots

fig = make_subplots(rows=1, cols=2, subplot_titles=("loss scale（fp16 的运行）", "训练 loss"))
for r, color in zip(gpu["runs"], ("#4C78A8", "#F58518", "#E45756")):
    if r["precision"] == "fp16":
        fig.add_scatter(y=[math.log2(s) for s in r["loss_scale"]], mode="lines", line_shape="hv", name=r["name"],
                        line_color=color, row=1, col=1)
        skipped = [t for t, s in enumerate(r["skipped"]) if s]
        fig.add_scatter(x=skipped, y=[math.log2(r["loss_scale"][t]) for t in skipped], mode="markers",
                        marker=dict(color=color, symbol="x", size=7), name="跳过的步", showlegend=False,
                        row=1, col=1)
    fig.add_scatter(y=r["losses"], mode="lines", name=r["name"], line_color=color, showlegend=r["precision"] != "fp16",
                    row=1, col=2)
fig.update_xaxes(title_text="步")
fig.update_yaxes(title_text="log2(loss scale)", row=1, col=1)
fig.update_yaxes(title_text="loss", row=1, col=2)
fig.update_layout(title=f"gpt2-350m，ZeRO-2，一张 {prov['gpu'].split(',')[0]}",
                  legend_orientation="h", legend_y=-0.25)
show(fig, "gpu-fp16-vs-bf16", height=460)

# %% [markdown]
# 读这组数据：
#
# - 默认设置（$2^{16}$）下，fp16 在这段训练里一步也没有跳过，scale 保持在 $2^{16}$（窗口 1000 步还没走完一次）。
# - 从 $2^{32}$ 起步时，前十几步全部溢出被跳过，scale 一路减半到不溢出的水平；之后每 100 步试着翻倍，溢出就退回：
#   这就是动态 loss scaling 的“锯齿”。被跳过的步不更新权重，但照样花时间。
# - 这次测量中 fp16 的吞吐比 bf16 高（见上表）；这只是一次测量，bf16 是第一个跑的，别把这个差距当成普遍结论。
#   两种格式每个参数字节数相同，显存峰值也相同。
# - 350M 模型在随机 token 上 300 步内 loss 只下降了一点，三条曲线的差别在噪声范围内。
#
# ## 小结：怎么选
#
# - **有 bf16 就用 bf16**（Ampere 及以后的 GPU、TPU、新 CPU）：范围与 fp32 相同，不需要 loss scaling，不会遇到 “loss scale already at minimum”。
#   配置只需 `"bf16": {"enabled": true}`。
# - **只能用 fp16**（V100、T4 等）：保持 `"loss_scale": 0`（动态）和默认的 `initial_scale_power: 16`；
#   出现 “Current loss scale already at minimum” 时先查梯度/激活是否超出 fp16 范围或训练是否发散，降低 `initial_scale_power` 治不了它。
# - fp32 主权重不能省：它正是“每参数 16 字节”里的 4 字节；纯 bf16 权重会丢掉小更新。
# - 混合精度不省模型状态（fp32 也是 16 字节/参数），省的是激活值和通信；`communication_data_type: "fp32"` 用通信量换求和精度。
