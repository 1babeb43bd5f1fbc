# %% [markdown]
# # 4.1 实验：算清显存账本，再用 DeepSpeed 逐字节核对
#
# 本 notebook 把“训练一个模型到底要多少显存”算清楚，并且**用真实的 DeepSpeed 验证每一个数**：
#
# 1. 混合精度 Adam 每个参数要 16 字节，而不是原文说的 12 字节；
# 2. 用代码复现 ZeRO 论文的表格（7.5B 参数、64 张 GPU：120 / 31.4 / 16.6 / 1.9 GB）；
# 3. 五种公式（论文、原文、DeepSpeed 自带估算器、`accelerate estimate-memory`、实测 `allocated`）并排比较；
# 4. 交互式显存计算器；
# 5. 在 CPU 上启动真实的多进程 DeepSpeed，逐字节清点每个 rank 持有的张量，与公式对照；
# 6. GPU 上的实测数据（`torch.cuda.memory_allocated()`）与公式的误差；
# 7. 训练一步中的**峰值**——决定会不会 OOM 的那个数：逐项模型、H200 实测、分配器余量和配置规划器；
# 8. 回答原文的硬件断言：“24 GB 显卡训练 13B”、“单张 3090 用 ZeRO-3 Offload 训练 70B”。

# %%
# NBVAL_IGNORE_OUTPUT
import deepspeed
import torch
import transformers

from dscourse import scale

print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
print(f"scale: {scale.scale()} ({scale.ranks()} ranks, model {scale.model_shape()})")

# %% [markdown]
# ## 1. 显存花在哪里：模型状态（model states）
#
# 用 Adam 做混合精度训练（bf16 或 fp16）时，每个参数在显存里有五份数据：
#
# | 数据 | 精度 | 每参数字节 |
# |---|---|---|
# | 参数（前向、反向用） | bf16/fp16 | 2 |
# | 梯度 | bf16/fp16 | 2 |
# | **fp32 主权重（master weights）** | fp32 | 4 |
# | Adam 一阶动量 m | fp32 | 4 |
# | Adam 二阶动量 v | fp32 | 4 |
# | **合计** | | **16** |
#
# fp32 主权重不能省：bf16 只有 8 个有效二进制位（7 位尾数加 1 位隐含位，约 2–3 位十进制有效数字），`1 + 1e-4` 在 bf16 里等于 `1`，小的更新会被直接吞掉（4.4 节会演示）。
# ZeRO 论文把这写成 $2\Psi + 2\Psi + K\Psi$，$K = 12$（主权重 + m + v）。
#
# 原文的 7B 方框只算了 `2 + 2 + (4+4) = 12` 字节：**漏掉了 fp32 主权重**；方框标题写优化器状态 “~28GB”，
# 下一行又算成 56 GB，自相矛盾。下面用 `dscourse.memory` 的两个公式族（`seed` 是原文的算法，`paper` 是论文的算法）重算：

# %%
from dscourse.memory import Setup, estimate, format_bytes
from dscourse.tables import text_table

seven_b = Setup(params=7_000_000_000, gpus=1, stage=0)
rows = []
for name in ("seed", "paper"):
    est = estimate(seven_b, name)
    rows.append([name, *(format_bytes(est.gpu.get(c)) if c in est.gpu else "—"
                         for c in ("params", "grads", "master", "optim")), format_bytes(est.gpu_bytes)])
print(text_table(["formula", "params", "grads", "fp32 master", "Adam m+v", "total"], rows))
assert estimate(seven_b, "seed").gpu_bytes == 84e9  # the seed's own total: 14 + 14 + 56
assert estimate(seven_b, "paper").gpu_bytes == 112e9  # 16 bytes per parameter

from dscourse.book import glue

glue("seed_7b", format_bytes(estimate(seven_b, "seed").gpu_bytes))
glue("paper_7b", format_bytes(estimate(seven_b, "paper").gpu_bytes))

# %% [markdown]
# 原文的 84 GB 与它自己的乘法一致（优化器状态 56 GB，不是方框标题里的 28 GB），但正确答案是 **112 GB**：
# 7B 模型单卡全量训练，光模型状态就要 112 GB，还没算激活值和缓冲区。
#
# ## 2. 用代码复现 ZeRO 论文的表格
#
# ZeRO 论文（Rajbhandari et al., 2020, 表 1 / 图 1）给出 7.5B 参数模型在 64 张 GPU 上每卡的模型状态：
# 基线 120 GB，$P_{os}$ 31.4 GB，$P_{os+g}$ 16.6 GB，$P_{os+g+p}$ 1.9 GB。

# %%
paper_table = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}
rows = []
for stage, published in paper_table.items():
    est = estimate(Setup(params=7_500_000_000, gpus=64, stage=stage), "paper")
    rows.append([f"ZeRO-{stage}", f"{est.gpu_bytes / 1e9:.2f} GB", f"{published} GB"])
    assert round(est.gpu_bytes / 1e9, 1) == published
print(text_table(["stage", "dscourse.memory (paper)", "published"], rows))
glue("paper_table", "；".join(f"{stage} {computed}" for stage, computed, _ in rows))

# %% [markdown]
# 同样的函数也回答原文的“简单记忆版”：ZeRO-1 “节省 4 倍”、ZeRO-2 “节省 8 倍”。
# 这是 GPU 数 $N \to \infty$ 时 16Ψ 对比 4Ψ、2Ψ 的极限；按原文自己的 12 字节算法只有 3 倍和 6 倍；
# 而在原文举例的 4 张 GPU 上，实际节省远没有那么多：

# %%
rows = []
for n in (4, 64, 1024):
    base = {f: estimate(Setup(params=10**9, gpus=n, stage=0), f).gpu_bytes for f in ("paper", "seed")}
    row = [n]
    for stage in (1, 2, 3):
        for f in ("paper", "seed"):
            row.append(f"{base[f] / estimate(Setup(params=10**9, gpus=n, stage=stage), f).gpu_bytes:.1f}x")
    rows.append(row)
print(text_table(["GPUs", "ZeRO-1 paper", "ZeRO-1 seed", "ZeRO-2 paper", "ZeRO-2 seed", "ZeRO-3 paper",
                  "ZeRO-3 seed"], rows))
glue("saving_4gpu", f"ZeRO-1 {rows[0][1]}、ZeRO-2 {rows[0][3]}、ZeRO-3 {rows[0][5]}")

# %% [markdown]
# 原文接着为 7B 模型在 4 张 GPU 上画了四张示意图：DDP 每卡 84 GB（合计 336 GB）、ZeRO-1 42 GB、ZeRO-2 方框上写 28 GB、
# ZeRO-3 21 GB。同一个 `estimate` 按原文的 12 字节算法（`seed`）和论文的 16 字节算法（`paper`）重算每一张：

# %%
seed_boxes = {0: 84, 1: 42, 2: 28, 3: 21}  # GB per GPU written on the seed's four diagrams (7B, 4 GPUs)
rows, per_gpu = [], {}
for stage, drawn in seed_boxes.items():
    setup = Setup(params=7_000_000_000, gpus=4, stage=stage)
    own, right = estimate(setup, "seed").gpu_bytes, estimate(setup, "paper").gpu_bytes
    per_gpu[stage] = right
    rows.append(["DDP" if stage == 0 else f"ZeRO-{stage}", f"{drawn} GB", format_bytes(own), format_bytes(right),
                 format_bytes(4 * right)])
print(text_table(["seed diagram", "written on the box", "seed's 12 B/param", "paper 16 B/param", "4 GPUs, paper"],
                 rows))
seed_zero2 = estimate(Setup(params=7_000_000_000, gpus=4, stage=2), "seed").gpu_bytes
assert seed_zero2 == 31.5e9  # the seed's own sum 14 + 3.5 + 14 under its ZeRO-2 diagram, not the 28 GB on the boxes
print(f"\nThe seed's ZeRO-2 boxes say 28 GB, its own sum below them {format_bytes(seed_zero2)}.")
glue("seed_4gpu_paper", "、".join(f"{r[0]} {r[3]}" for r in rows))
glue("seed_4gpu_ddp_total", format_bytes(4 * per_gpu[0]))
glue("seed_4gpu_zero2_own", format_bytes(seed_zero2))

# %% [markdown]
# - 原文自己的乘法在 DDP、ZeRO-1、ZeRO-3 三张图上是对的（84 / 42 / 21 GB），ZeRO-2 那张**前后矛盾**：四个方框写 28 GB，
#   下面的算式 14 + 3.5 + 14 却是 31.5 GB；它标的“节省 62%”也是按 31.5 GB 算的（1 − 31.5/84 = 62.5%；按 28 GB 应是 67%），28 GB 是笔误。
# - 按每参数 16 字节，四张图应该是 112 / 49 / 38.5 / 28 GB（4 张卡合计的 DDP 是 448 GB，不是 336 GB），节省 56%、66%、75%。
#   连 ZeRO-3 的 28 GB 也超过一张 24 GB 的卡，这还没有算激活值和缓冲区（第 7 节的峰值）。
#
# 原文随后的 ZeRO-3 + Offload 示意图说“反向传播时：计算梯度后，立即将参数卸载回 CPU”。DeepSpeed 0.19.8 不是这样做的：
# 反向时送到 CPU 的是**梯度**，不是参数。每个模块反向结束后，`post_sub_module_backward_function`
# （`deepspeed/runtime/zero/parameter_offload.py` 第 594–605 行）调用 `release_sub_module`，`__release_param`
# （`partitioned_param_coordinator.py` 第 624–629 行）对收集来的完整参数调用 `param.partition()`；参数早已切分过，
# 于是只是释放 GPU 上的完整副本（`partition_parameters.py` 第 1796–1804 行，`free_param`），不往 CPU 拷任何东西——反向不改参数，
# CPU 上的分片（`offload_param` 时）或 GPU 上的分片一直都在。梯度则由 `partition_grads`（`stage3.py` 第 2006–2053 行）
# 规约成本 rank 的分片，在累积边界由 `_offload_grad_partition_at_boundary`（第 1443–1457 行）转成 fp32 拷进 CPU 上
# 主权重的 `.grad`，供 CPU 上的 Adam 使用；更新后的 16 位参数分片再拷回（或在 `offload_param` 时留在 CPU）。

# %% [markdown]
# ## 3. 五种公式并排：它们为什么不一样
#
# `python -m dscourse.memory` 把所有公式族并排打印（`--json` 输出机器可读的结果）。同一个 7B 模型，8 张 GPU，ZeRO-3：

# %%
from dscourse.memory.cli import main as memory_cli

_ = memory_cli(["--params", "7B", "--gpus", "8", "--stage", "3", "--largest-layer", "131M"])

# %% [markdown]
# 差别从哪里来：
#
# - **paper**：只算 16Ψ 的模型状态，不算任何缓冲区。
# - **seed**：少了 fp32 主权重（4Ψ）。
# - **deepspeed**：DeepSpeed 自带的 `estimate_zero3_model_states_mem_needs` 按 18 字节/参数切分（多出 fp32 梯度 4Ψ 中的一部分），
#   外加“最大一层 × 4 字节”的收集缓冲区；主机内存乘了 1.5 的“额外缓冲系数”。
# - **accelerate**：`accelerate estimate-memory` 只有单卡、不分 ZeRO；而且它报告的是四项（模型 4Ψ、梯度 6Ψ、优化器 8Ψ、step 8Ψ）中**最大的一项**，不是它们的和，
#   所以它的 “Training using Adam” 对混合精度模型是 8Ψ——只有真实需求的一半。
# - **allocated**：DeepSpeed 0.19 在两次 optimizer step 之间真正持有的张量，下面用真实引擎逐项核对。
#   最显眼的差别：ZeRO-3 在初始化时就分配一个 `reduce_bucket_size × 2` 字节（默认 5e8 个元素，即 **1 GB**）的 bf16 梯度规约桶，并一直保留，和模型大小无关。
#
# `deepspeed` 公式不是凭记忆抄的：下面直接调用 DeepSpeed 自己的估算函数和 accelerate 自己的函数，与 `dscourse.memory` 逐字节比较。

# %%
from accelerate.commands.estimate import estimate_training_usage
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

rows = []
for params, gpus, per_node, offload in [(7 * 10**9, 8, 8, False), (13 * 10**9, 16, 8, True), (70 * 10**9, 64, 8, True)]:
    s2 = Setup(params=params, gpus=gpus, gpus_per_node=per_node, stage=2, offload_optimizer="cpu" if offload else "none")
    cpu, gpu = estimate_zero2_model_states_mem_needs(params, per_node, gpus // per_node, cpu_offload=offload)
    ours = estimate(s2, "deepspeed")
    rows.append([f"{params / 1e9:.0f}B", gpus, 2, offload, gpu, ours.gpu_bytes, cpu, ours.cpu_bytes])
    assert (gpu, cpu) == (ours.gpu_bytes, ours.cpu_bytes)
    s3 = Setup(params=params, gpus=gpus, gpus_per_node=per_node, stage=3, largest_layer=params // 50,
               offload_optimizer="cpu" if offload else "none", offload_param="cpu" if offload else "none")
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(params, params // 50, per_node, gpus // per_node,
                                                        cpu_offload=offload, cpu_offload_params=offload)
    ours = estimate(s3, "deepspeed")
    rows.append([f"{params / 1e9:.0f}B", gpus, 3, offload, gpu, ours.gpu_bytes, cpu, ours.cpu_bytes])
    assert (gpu, cpu) == (ours.gpu_bytes, ours.cpu_bytes)
print(text_table(["model", "GPUs", "stage", "offload", "DeepSpeed GPU", "dscourse GPU", "DeepSpeed host",
                  "dscourse host"], rows))

accelerate_terms = estimate_training_usage(4 * 7 * 10**9, "bfloat16")
print("accelerate's terms for 7B (bytes):", accelerate_terms)
assert max(accelerate_terms.values()) == estimate(seven_b, "accelerate").gpu_bytes

# %% [markdown]
# ## 4. 显存计算器
#
# 选一个模型（或输入任意参数量，如 `7.5B`、`70b`、`1.3e9`）、GPU 数、节点数、ZeRO stage、offload 和公式（LoRA rank 不为 0
# 时只训练 adapter，见 4.7 节），
# 看每张 GPU 上两次 step 之间的模型状态，以及**训练一步中的峰值**：峰值时刻的参数 / 梯度 / fp32 主权重 / 优化器状态 /
# 缓冲区 / 步内梯度与临时张量 / 激活值与 logits，和每个节点需要的主机内存。峰值来自第 7 节的逐项模型
# `dscourse.memory.peak`（bf16、SDPA 注意力，可选 activation checkpointing），CLI、图和规划器调用的是同一个函数。
#
# 控件需要 Python 内核才能响应：在 Colab 或 Jupyter 里运行本 notebook 即可交互。在网页版里它只是一张静态的图，
# 请用下面紧接着的“不需要内核的计算器”。

# %%
from dscourse.widgets import MemoryCalculator

calc = MemoryCalculator(preset="Llama-2-7B", gpus=8, stage=2, formula="allocated", seq=2048, gpu_memory_gb=80)
calc.widget

# %%
# The same calculator driven from code: what changes when the 7B model moves to ZeRO-3 on 8 GPUs.
for stage in (2, 3):
    est = calc.set(stage=stage)
    print(f"ZeRO-{stage}: model states {format_bytes(est.gpu_bytes)} between steps, peak of a step "
          f"{format_bytes(calc.peak.peak_bytes)} ({calc.peak.peak_phase}) per GPU")
_ = calc.set(stage=2)  # back to the settings of the cell above: the saved widget shows what its code says

# %% [markdown]
# ### 不需要内核的计算器
#
# 在网页版里也能用：下面这张图**不需要内核**，拖动滑块选 GPU 总数（每节点 8 张），用左上角的下拉菜单换模型。
# 每个模型、每个 GPU 数、每个 stage 的每一段都已由计算器用的同一个函数 `dscourse.memory.peak`（`allocated` 公式，
# 序列 2048，micro-batch 1）预先算好，存在图里；浏览器只是在这些结果之间切换。柱高是训练一步的峰值。
# 虚线是一张 80 GB 的显卡。

# %%
from dscourse.plots import memory_explorer, show

show(memory_explorer(formula="allocated", seq=2048, micro_batch=1, preset="Llama-2-7B", gpus=8))

# %% [markdown]
# ## 5. 真实的 DeepSpeed：逐字节清点每个 rank
#
# 公式再多也只是公式。下面用 `torchrun` 启动真实的多进程 DeepSpeed（CPU 上用 gloo 后端，GPU 上用 NCCL），
# 对同一个 GPT-2 模型分别用 ZeRO-0/1/2/3 训练两步，然后由 `dscourse.accounting.count_engine_bytes`
# 遍历引擎持有的每一个张量（模型参数、ZeRO-3 挂在参数上的 `ds_tensor` 分片、fp32 主权重、梯度分片、优化器状态、通信桶），
# 按存储去重后逐字节计数，与 `allocated` 公式对照。

# %%
from dscourse.calibration import counted_table, variant_name, variant_runs
from dscourse.launch import run_ranks

shape = scale.model_shape()
worlds = sorted({scale.ranks(), 4} if scale.scale() == "cpu" else {scale.ranks()})
runs = {}
for world in worlds:  # one launch per world size: its ranks build the four engines one after the other
    # micro-batch 1: what an engine holds between steps does not depend on it, and where the CPU lacks AVX-512 (oneDNN's
    # bf16 support) PyTorch multiplies bf16 matrices with a plain loop, tens of times slower than fp32
    result = run_ranks("dscourse.scripts.zero_memory", ["--shape", shape, "--variants", "0", "1", "2", "3",
                                                        "--micro-batch", "1", "--steps", "2"], nproc=world, timeout=600)
    for (stage, _, _), ranks in variant_runs(result.ranks).items():
        runs[(world, stage)] = ranks
print(f"model {shape}: {runs[(scale.ranks(), 0)][0]['params']:,} parameters; "
      f"{len(runs)} engines in {len(worlds)} launches of {worlds} ranks")

# %%
headers, rows = counted_table(runs)  # bytes rank 0 holds by category, counted tensor by tensor
print(text_table(headers, rows))

# %% [markdown]
# 读这张表：
#
# - **ZeRO-0** 持有完整的 bf16 参数（2Ψ）、完整的 fp32 主权重（4Ψ）和 Adam 状态（8Ψ）：每个 rank 都一样，完全冗余。
# - **ZeRO-1 和 ZeRO-2** 只持有 1/N 的主权重和 Adam 状态——从 2 个 rank 到 4 个 rank，这两列正好减半。
#   两次 step 之间两者持有的字节**完全相同**：ZeRO-2 节省的是反向传播过程中的梯度（峰值），step 之后 bf16 梯度都被释放了。
# - **ZeRO-3** 把 bf16 参数也切成 1/N（`ds_tensor`），但小于 `stage3_param_persistence_threshold`（默认 1e5 个元素）的参数
#   （LayerNorm、bias、小嵌入）在每个 rank 上保留完整副本；再加上一个常驻的梯度分片缓冲区（2Ψ/N）和 1 GB 的规约桶。
#
# 最后一列是与 `allocated` 公式逐类比较时最大的相对差：剩下的几个字节是 PyTorch AdamW 的 `step` 计数张量和 DeepSpeed 为对齐做的填充。
# 占用最多的几个存储，以及它们在 DeepSpeed 里的属性路径：

# %%
top = runs[(scale.ranks(), 3)][0]["paths"]
print(text_table(["path in the engine (ZeRO-3, rank 0)", "device", "category", "bytes"],
                 [[p, d, c, f"{n:,}"] for p, (d, c, n) in list(top.items())[:8]]))

# %% [markdown]
# 切分不改变数学：四个 stage、同样的种子和数据，每一步的 loss 与 ZeRO-0 相差不到 0.02（bf16 的舍入；4.3 节会在更多步上验证）。
# 表里只给结论：bf16 loss 的末位取决于 CPU 的 bf16 kernel。

# %%
first = {w: runs[(w, 0)][0]["losses"] for w, _ in runs}
gaps = {(w, s): max(abs(a - b) for a, b in zip(r[0]["losses"], first[w])) for (w, s), r in runs.items()}
print(text_table(["run", "steps", "every loss within 0.02 of ZeRO-0's"],
                 [[f"{w} ranks ZeRO-{s}", len(runs[(w, s)][0]["losses"]), gap < 2e-2] for (w, s), gap in gaps.items()]))
assert all(gap < 2e-2 for gap in gaps.values())

# %% [markdown]
# ## 6. GPU 实测：`torch.cuda.memory_allocated()` 与公式
#
# CPU 上的清点证明了“引擎持有哪些张量”；GPU 上还要加上 CUDA 运行时自己的部分（cuBLAS 工作区等）。
# `benchmarks/gpu_memory.py` 在一张 GPU 上对每个模型运行 ZeRO-0/1/2/3 和三种 offload 组合，记录初始化后、step 之后的
# `torch.cuda.memory_allocated()` 和峰值，以及引擎在 GPU 与主机上各持有多少字节。`allocated` 公式只用 GPT-2 350M 校准；
# 其余模型（另一种规模、另一种架构）是检验它能否推广的留出集。

# %%
from dscourse.calibration import gpu_formula_table, gpu_vs_formula, load_gpu_runs

provenance, records = load_gpu_runs()
print(text_table(["file", "GPU, driver, memory", "torch", "deepspeed", "transformers", "date"],
                 [[p["file"], p["gpu"], p["torch"], p["deepspeed"], p["transformers"], p["date"]] for p in provenance],
                 align_right_from=9))
CALIBRATED = {"gpt2-350m"}
gpu_rows = [gpu_vs_formula(r) for r in records if r["micro_batch"] == 1]
print()
headers, table, host_error = gpu_formula_table(gpu_rows)
print("GPU memory between steps, measured (the allocated formula's error):")
print(text_table(headers, table, align_right_from=1))
print(f"\nhost memory (offload runs): the formula within {100 * host_error:.2f}% of the bytes counted on the host")

# %%
worst = {}
for group, shapes in (("calibrated", CALIBRATED), ("held out", {r["shape"] for r in gpu_rows} - CALIBRATED)):
    errors = [abs(r["error"]) for r in gpu_rows if r["shape"] in shapes]
    worst[group] = max(errors)
    print(f"{group:10s}: {len(errors)} runs on {sorted(shapes)}, worst |error| {100 * worst[group]:.2f}%")
assert all(w < 0.05 for w in worst.values())
glue("worst_calibrated", f"{100 * worst['calibrated']:.2f}%")
glue("worst_heldout", f"{100 * worst['held out']:.2f}%")
glue("heldout_shapes", "、".join(sorted({r["shape"] for r in gpu_rows} - CALIBRATED)))
glue("gpu_provenance", f"{provenance[0]['gpu']}，torch {provenance[0]['torch']}，DeepSpeed {provenance[0]['deepspeed']}，"
                       f"{provenance[0]['date']}")

# %%
import plotly.graph_objects as go

from dscourse.plots import show

labels = [f"{r['shape']} · {r['variant']}" for r in gpu_rows]
fig = go.Figure([go.Bar(name="实测 memory_allocated()", y=labels, x=[round(r["measured"] / 1e9, 3) for r in gpu_rows],
                        orientation="h"),
                 go.Bar(name="allocated 公式", y=labels, x=[round(r["formula"] / 1e9, 3) for r in gpu_rows],
                        orientation="h")])
fig.update_layout(barmode="group", title="两次 optimizer step 之间的 GPU 显存：公式与实测",
                  xaxis_title="每张 GPU 的 GB", yaxis_autorange="reversed",
                  legend_orientation="h", legend_y=1.04, margin=dict(l=260, t=80))
show(fig, "gpu-formula-vs-measured", height=900)

# %% [markdown]
# ### 激活值：公式与 GPU 实测
#
# 计算器里的激活值估算逐个张量地数出前向传播为反向传播保留了什么（`dscourse.memory.activation_bytes` 的文档列出了每一项），
# 并用 GPU 上前向传播前后 `torch.cuda.memory_allocated()` 的差来核对（序列长度 1024，micro-batch 1 和 4，ZeRO-2）：

# %%
import json

from dscourse.calibration import DATA
from dscourse.memory import activation_bytes
from dscourse.models import SHAPES

activation_runs = json.loads((DATA / "gpu_activations.json").read_text())
rows, act_errors = [], []
for run in activation_runs["runs"]:
    rec = run["ranks"][0]
    arch = SHAPES[rec["shape"]]
    formula = activation_bytes(arch, arch.seq, rec["micro_batch"])
    measured = rec["cuda_forward_activations"]
    act_errors.append((formula - measured) / measured)
    rows.append([rec["shape"], rec["micro_batch"], format_bytes(measured), format_bytes(formula),
                 f"{100 * act_errors[-1]:+.1f}%"])
print(text_table(["model", "micro-batch", "measured (forward)", "activation_bytes()", "error"], rows))
assert max(abs(e) for e in act_errors) < 0.05
glue("worst_activation", f"{100 * max(abs(e) for e in act_errors):.1f}%")

# %% [markdown]
# ## 7. 峰值：决定 OOM 的那个数
#
# 上面的 `allocated` 公式是两次 optimizer step **之间**的显存。OOM 却发生在一步**之中**：前向传播结束时激活值和 logits 全在，
# 反向传播开始时 loss 的梯度又来了，optimizer step 时还要临时拼出一份 fp32 梯度。下图是 H200 上用
# `torch.cuda.memory._record_memory_history` 记录的一步（Llama-3.2-1B，bf16，DeepSpeed 默认的 FusedAdam），
# 用左上角的菜单切换 ZeRO-2 / ZeRO-3；红点是每个阶段的峰值，悬停可以看到那一刻最大的几项分配来自哪一行代码。

# %%
from dscourse.plots import peak_timeline

show(peak_timeline())

# %% [markdown]
# `dscourse.memory.peak.peak` 把每个阶段逐项算出来，每一项都对应 DeepSpeed / transformers / torch 里分配它的那一行
# （函数的文档字符串逐项列出）：
#
# - **前向**：模型状态 + 为反向保留的激活值 + loss 处的 logits 链：bf16 logits（2 字节 × token × 词表）、
#   loss 里的 fp32 上转（`logits.float()`，4 字节）、`cross_entropy` 保存的 fp32 log-softmax（4 字节）；ZeRO-3 再加上收集来的参数；
# - **反向**：开始时 loss 和 log-softmax 的梯度（2 × 4 字节 × token × 词表），结束时 16 位梯度与在途的规约桶，取两者较大者；
# - **optimizer step**：优化器临时拼出的 fp32 梯度（ZeRO-0 全部，ZeRO-1/2 本 rank 的分片，ZeRO-3 一个 `sub_group_size`）；
#   优化器 offload 时 step 在 CPU 上，GPU 上不增加。
#
# 词表大的模型，峰值里最大的一项往往是 logits 链。同一条命令 `python -m dscourse.memory --model-config ... --seq ...`
# 打印峰值时刻的各项（Qwen2.5-7B，15 万词表，8 张 GPU，ZeRO-3，序列 4096）：

# %%
_ = memory_cli(["--model-config", "Qwen2.5-7B", "--gpus", "8", "--stage", "3", "--micro-batch", "1", "--seq", "4096"])

# %%
from dscourse.memory import peak_of
from dscourse.memory.hf import arch_from_file, hf_presets

qwen7b = peak_of(arch_from_file(hf_presets()["Qwen2.5-7B"]), 8, 3, micro_batch=1, seq=4096)
logits_share = (qwen7b.peak_terms["log_softmax"] + qwen7b.peak_terms["loss_grads"]) / qwen7b.peak_bytes
glue("qwen_peak", f"{format_bytes(qwen7b.peak_bytes)}（两步之间只有 {format_bytes(qwen7b.gpu_bytes)}），"
                  f"其中 logits 链占 {100 * logits_share:.0f}%")

# %% [markdown]
# ### 峰值模型与 H200 实测
#
# `benchmarks/gpu_peak.py` 在一张 H200 上测了 4 个架构家族（Llama-3.2-1B、Qwen2.5-0.5B、Qwen3-0.6B、GPT-2 large）×
# ZeRO-0/1/2/3 与三种 offload 组合 × activation checkpointing 开/关 × 两种 micro-batch × 序列长度，
# 每个阶段之间重置峰值统计，记录 `max_memory_allocated()`。模型里由数据读出的几个常数只看了较小的那组尺寸；
# 较大的那组（2 × 4096，GPT-2 为 8 × 1024）**留作检验**。下表是留出的运行上每一组的最大误差：

# %%
from dscourse.calibration import load_peak_runs, peak_vs_measured, worst_errors

peak_rows = peak_vs_measured()
held = [r for r in peak_rows if r["held_out"]]
held_worst = worst_errors(held)
print(text_table(["group", "value", "worst error (held out)"],
                 [[group, str(value), f"{100 * err:+.2f}%"] for group, values in held_worst.items()
                  for value, err in values.items()]))
print(f"\n{len(peak_rows)} runs, {len(held)} held out; worst on the fitted half "
      f"{100 * max(abs(r['error']) for r in peak_rows if not r['held_out']):.2f}%; "
      f"between steps worst {100 * max(abs(r['between_error']) for r in peak_rows):.2f}%")
assert max(abs(r["error"]) for r in held) < 0.05
glue("peak_heldout_worst", f"{100 * max(abs(r['error']) for r in held):.2f}%")
glue("peak_fit_worst", f"{100 * max(abs(r['error']) for r in peak_rows if not r['held_out']):.2f}%")
glue("peak_between_worst", f"{100 * max(abs(r['between_error']) for r in peak_rows):.2f}%")
glue("peak_runs", f"{len(peak_rows)}")
glue("peak_ratio", f"{min(r['measured'] / r['between'] for r in peak_rows):.1f}–"
                   f"{max(r['measured'] / r['between'] for r in peak_rows):.0f}")
glue("peak_provenance", f"{load_peak_runs()[0]['gpu']}，torch {load_peak_runs()[0]['torch']}，"
                        f"DeepSpeed {load_peak_runs()[0]['deepspeed']}，transformers {load_peak_runs()[0]['transformers']}，"
                        f"{load_peak_runs()[0]['date']}")

# %% [markdown]
# ### Activation checkpointing 省了多少
#
# transformers 的 `gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})`
# 让每层只保留输入（2 字节 × hidden），反向时重算一层。实测（H200，micro-batch 2 × 序列 4096，ZeRO-2）：

# %%
ck_rows = []
for model in ("Llama-3.2-1B", "Qwen2.5-0.5B", "Qwen3-0.6B"):
    off, on = (next(r for r in peak_rows if r["model"] == model and r["variant"] == "ZeRO-2" and r["held_out"]
                    and r["checkpointing"] == c) for c in (False, True))
    ck_rows.append([model, format_bytes(off["measured"]), format_bytes(on["measured"]),
                    f"{100 * (1 - on['measured'] / off['measured']):.0f}%", format_bytes(on["predicted"])])
print(text_table(["model", "peak, checkpointing off", "on", "saved", "peak model (on)"], ck_rows))
glue("ckpt_llama", f"{ck_rows[0][1]} → {ck_rows[0][2]}（省 {ck_rows[0][3]}）")

# %% [markdown]
# 省下的显存要用时间换：反向时每层的前向要再算一遍。同一个引擎里先关后开 checkpointing，各训练 6 步，取后 4 步的中位数
# （H200，同一时间只有这一个进程用 GPU）：

# %%
from dscourse.calibration import checkpointing_cost

cost = checkpointing_cost()
print(text_table(["model", "stage", "micro-batch x seq", "peak off -> on", "step off -> on", "step", "fwd+bwd"],
                 [[r["model"], r["variant"], f"{r['micro_batch']} x {r['seq']}",
                   f"{format_bytes(r['peak_off'])} -> {format_bytes(r['peak_on'])}",
                   f"{r['step_off']:.3f} -> {r['step_on']:.3f} s", f"+{100 * (r['step_ratio'] - 1):.0f}%",
                   f"+{100 * (r['fwd_bwd_ratio'] - 1):.0f}%"] for r in cost], align_right_from=3))
busy = [r for r in cost if r["micro_batch"] * r["seq"] >= 8192]  # enough tokens to keep the GPU busy
z2 = [r["step_ratio"] for r in busy if r["stage"] == 2]
z3 = [r["step_ratio"] for r in busy if r["stage"] == 3]
print(f"\n8192 tokens or more per micro-batch: ZeRO-2 +{100 * (min(z2) - 1):.0f}% to +{100 * (max(z2) - 1):.0f}%, "
      f"ZeRO-3 +{100 * (min(z3) - 1):.0f}% to +{100 * (max(z3) - 1):.0f}% per step")
assert all(r["step_ratio"] > 1 and r["peak_on"] <= r["peak_off"] for r in cost)
glue("ckpt_time_z2", f"{100 * (min(z2) - 1):.0f}–{100 * (max(z2) - 1):.0f}%")
glue("ckpt_time_z3", f"{100 * (min(z3) - 1):.0f}–{100 * (max(z3) - 1):.0f}%")

# %% [markdown]
# 重算一遍前向，理论上让前向加反向多花约三分之一（反向约是前向的两倍）；ZeRO-2 实测每步多花的比这少，因为 optimizer step
# 不重算。ZeRO-3 多得更多：重算的前向同样要经过每个模块的参数收集钩子。每个 micro-batch 只有两千来个 token 的点，GPU 吃不饱、
# 内核启动占了大头，比例跳动大；上面只按 8192 个 token 以上的点下结论。开关的办法：
#
# - Hugging Face 模型：`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})`，
#   用 Trainer 时是 `TrainingArguments(gradient_checkpointing=True)`；
# - 自己的模型：`torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)` 包住每个 block；DeepSpeed 也有自己的
#   `deepspeed.checkpointing`（配置里的 `activation_checkpointing` 段，`partition_activations` 等键），它为 Megatron 式的
#   模型并行而写：只有代码调用 `deepspeed.checkpointing.configure(mpu, deepspeed_config=...)` 并用
#   `deepspeed.checkpointing.checkpoint` 包住每层时，这一段才被读取（`deepspeed/runtime/activation_checkpointing/checkpointing.py`
#   的 `configure`；`deepspeed.initialize` 不读它），配置段本身不会替你打开 checkpointing。
#
# %% [markdown]
# ### 分配器还要多少：`max_memory_reserved`
#
# PyTorch 的缓存分配器按段（segment）向驱动申请显存，`max_memory_reserved()` 比 `max_memory_allocated()` 更大：

# %%
import statistics

frag = sorted(r["fragmentation"] for r in peak_rows)
print(f"max_memory_reserved above the allocated peak: median {100 * statistics.median(frag):.0f}%, "
      f"90% of runs within {100 * frag[int(0.9 * len(frag))]:.0f}%, at most {100 * frag[-1]:.0f}%")
glue("frag_median", f"{100 * statistics.median(frag):.0f}%")
glue("frag_p90", f"{100 * frag[int(0.9 * len(frag))]:.0f}%")
glue("frag_max", f"{100 * frag[-1]:.0f}%")

# %% [markdown]
# 分配器在真正 OOM 之前会先释放缓存里的空闲块再重试，所以超出峰值的这部分多数时候只是变慢（重试），不一定崩溃；
# 但碎片化的块释放不掉。建议：**按峰值再留 20% 的余量**（实测的中位数），小模型、开启 checkpointing 或 offload 时碎片化更重，
# 要留得更多。`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` 减少碎片：在同一张 H200 上把 Llama-3.2-1B 的 16 个点
# （ZeRO-0/2/3/3 + offload，两种尺寸，checkpointing 开关）重跑一遍，峰值不变（差别小于 0.03%），reserved 超出峰值的部分
# 平均从 24.6% 降到 12.6%，最多从 58.6% 降到 45.3%（`dscourse/data/gpu_peak_checks_h200.json`）。
#
# ### 规划器：哪些配置放得下
#
# `python -m dscourse.memory plan` 枚举 ZeRO stage、offload、micro-batch、梯度累积和 checkpointing，
# 用同一个峰值函数（留 20% 余量）和主机内存判断能否放下，按写明的代价模型（计算 + 通信 + 实测的 offload 代价，见
# `dscourse.memory.planner`）排序，并给出由 4.2 节的构建器生成、通过检查器的 `ds_config.json`。
#
# **梯度累积**：累积边界之前的 micro-batch 会把张量留给后面的前向和反向，峰值模型按源码把它们算进去
# （`dscourse.memory.peak.accumulation_terms`）：ZeRO-0/1 留下全部 bf16 梯度（2Ψ），ZeRO-1 还留下 1 GB 的 ipg 归约桶
# （不论是否 offload）；ZeRO-2 留下梯度分片（2Ψ/N），加 offload 时在主机上累积；ZeRO-3 不多占。在 H200 上实测的规划器首选里，
# 不做梯度累积的那个（gpt2-large，12 GB 预算）实测峰值与预测一样，都是 7.49 GB；两个带梯度累积的（ZeRO-1 + optimizer offload，
# 累积 4 步和 8 步）没有这一项时预测低了 26% 和 28%，补上后差 0.003% 和 0.4%。下面是 8 张 24 GB GPU 上 Llama-3-8B 的规划：

# %%
from dscourse.memory.cli import run_plan

plan_out = run_plan(["--model-config", "Llama-3-8B", "--gpus", "8", "--gpu-memory", "24GB", "--host-memory", "512GB",
                     "--seq", "4096", "--global-batch", "64", "--top", "5"])
print(plan_out.split("\n\nds_config.json")[0])

# %% [markdown]
# 换成自己的预算：下面的规划器调用同一个 `run_plan`（同一个峰值函数、同样的余量、代价模型和配置检查器），
# 选模型（`dscourse/configs/models/` 里随课程发布的 `config.json`）、GPU 数、每张显存、每节点内存、序列长度和全局 batch，
# 就列出放得下的配置和第 1 种的 `ds_config.json`，最后一行是给出同样结果的命令（`--model-config` 也接受自己模型的
# `config.json` 路径）。

# %%
from dscourse.widgets import PlanWidget

planner = PlanWidget(model="Llama-3-8B", gpus=8, gpu_memory_gb=24, host_memory_gb=512, seq=4096, global_batch=64)
planner.widget

# %% [markdown]
# 剩下的一两个百分点是与 micro-batch 无关的常量（RoPE 的 cos/sin 缓存、loss 等几十 MB）。
# 注意 transformers 的 GPT-2 用纯 Python 写的 `gelu_new` 激活函数，比融合的 GELU 多保留三个 4h 宽的张量——
# 这就是同样宽度下 GPT-2 的激活值比论文公式多出近一倍的原因。
#
# 每一项差别都有来处：ZeRO-0 的 `FP16_UnfusedOptimizer` 在每张卡上保存完整 fp32 主权重；ZeRO-3 比 ZeRO-1/2 多出常驻的
# bf16 梯度分片（2Ψ/N）和 1 GB 规约桶；ZeRO-1/2 的优化器 offload 只在 GPU 上留下 bf16 参数和一个梯度中转缓冲区；
# ZeRO-3 的参数 offload 把 `ds_tensor` 也搬到主机，GPU 上只剩规约桶、常驻的小参数和 CUDA 工作区。
#
# ## 8. 原文的硬件断言
#
# 原文说“在 24 GB 显存上训练 13B 模型”需要 DeepSpeed，又说“单张 3090（24 GB）跑 70B 模型”要用 ZeRO-3 Offload，
# 并推荐 256 GB 以上的主机内存。能不能，要同时看两个数：每张 GPU 在训练一步中的峰值（第 7 节的峰值模型），
# 和每个节点的主机内存。下面按序列长度 2048、micro-batch 1、开启 activation checkpointing 计算（“留 20% 余量”一列按上面的建议）：

# %%
from dscourse.memory import PRESETS
from dscourse.memory.fit import fewest_gpus, plan

GPU_24GB = 24e9
rows = []
for name in ("Llama-2-13B", "Llama-2-70B"):
    arch = PRESETS[name]
    for stage, oo, op in [(2, "none", "none"), (3, "none", "none"), (3, "cpu", "none"), (3, "cpu", "cpu")]:
        fit = fewest_gpus(arch, GPU_24GB, stage, seq=2048, offload_optimizer=oo, offload_param=op)
        safe = fewest_gpus(arch, GPU_24GB / 1.2, stage, seq=2048, offload_optimizer=oo, offload_param=op)
        variant = variant_name({"stage": stage, "offload_optimizer": oo, "offload_param": op})
        if fit is None:
            rows.append([name, variant, "never", "never", "—", "—"])
        else:
            rows.append([name, variant, fit.setup.gpus, safe.setup.gpus if safe else "never",
                         format_bytes(fit.gpu_peak), format_bytes(fit.host_per_node)])
print(text_table(["model", "variant", "fewest 24 GB GPUs", "with 20% headroom", "GPU peak each", "host RAM (1 node)"],
                 rows, align_right_from=2))

# %%
one_13b = plan(PRESETS["Llama-2-13B"], 1, 3, seq=2048, offload_optimizer="cpu", offload_param="cpu")
one_70b = plan(PRESETS["Llama-2-70B"], 1, 3, seq=2048, offload_optimizer="cpu", offload_param="cpu")
for name, fit in (("13B", one_13b), ("70B", one_70b)):
    print(f"{name} on one GPU, ZeRO-3 + offload of optimizer and parameters: GPU peak {format_bytes(fit.gpu_peak)}, "
          f"host RAM {format_bytes(fit.host_per_node)}")
host_bytes_per_param = one_70b.host_per_node / PRESETS["Llama-2-70B"].params
print(f"host RAM per parameter under full offload: {host_bytes_per_param:.1f} bytes -> 256 GB holds at most "
      f"{256e9 / host_bytes_per_param / 1e9:.1f}B parameters")
glue("claim_13b", f"13B：不用 offload 时，ZeRO-3 至少要 {rows[1][2]} 张 24 GB 卡；单卡 ZeRO-3 + 全部 offload 时 GPU 峰值约 "
                  f"{format_bytes(one_13b.gpu_peak)}，放得下，但主机需要 {format_bytes(one_13b.host_per_node)} 内存。")
glue("claim_70b", f"70B：单卡 ZeRO-3 + 全部 offload 时 GPU 峰值约 {format_bytes(one_70b.gpu_peak)}，显存不是瓶颈；"
                  f"但主机需要 {format_bytes(one_70b.host_per_node)} 内存——原文推荐的 256 GB 只够约 "
                  f"{256e9 / host_bytes_per_param / 1e9:.1f}B 参数。")

# %% [markdown]
# 原文的 ZeRO-3 + Offload 示意图还给了一张 24 GB 卡上的预算：7B 模型、4 张卡，GPU 上参数分片 3.5 GB、梯度分片 3.5 GB、
# 激活值约 10 GB、临时缓冲区约 5 GB，合计约 22 GB；CPU 上优化器状态分片 14 GB，参数“冷备份”3.5 GB 可选。
# 同一个峰值模型按项重算（Llama-2-7B，4 张卡，ZeRO-3 + 优化器 offload，序列 2048，micro-batch 1；每一项都是一个 rank 的）：

# %%
budget = {ckpt: plan(PRESETS["Llama-2-7B"], 4, 3, seq=2048, checkpointing=ckpt, offload_optimizer="cpu")
          for ckpt in (True, False)}
with_ckpt, without = budget[True].peak, budget[False].peak
ranks_per_node = with_ckpt.setup.per_node
cpu_rank = {k: v / ranks_per_node for k, v in with_ckpt.states.cpu.items()}  # the node's host bytes, per rank
SEED_GB = {"params": 3.5, "grads": 3.5, "activations": 10, "buffers": 5}


def peak_term(peak, *terms):
    return format_bytes(sum(peak.peak_terms.get(t, 0) for t in terms))


rows = [["GPU: bf16 parameter shard", "3.5 GB", peak_term(with_ckpt, "params"), peak_term(without, "params")],
        ["GPU: gradient shard", "3.5 GB", "0 (on the CPU)", "0 (on the CPU)"],
        ["GPU: gathered parameters (prefetch, live)", "—", peak_term(with_ckpt, "gathered"), peak_term(without, "gathered")],
        ["GPU: activations and the logits chain", "~10 GB",
         peak_term(with_ckpt, "activations", "log_softmax", "loss_grads"),
         peak_term(without, "activations", "log_softmax", "loss_grads")],
        ["GPU: reduce bucket and workspace", "~5 GB", peak_term(with_ckpt, "buffers", "workspace"),
         peak_term(without, "buffers", "workspace")],
        ["GPU: peak of a step", "~22 GB", format_bytes(with_ckpt.peak_bytes), format_bytes(without.peak_bytes)],
        ["CPU: Adam m and v", "14 GB", format_bytes(cpu_rank["optim"]), format_bytes(cpu_rank["optim"])],
        ["CPU: fp32 master weights", "—", format_bytes(cpu_rank["master"]), format_bytes(cpu_rank["master"])],
        ["CPU: gradients (bf16 shard, fp32 for Adam)", "—", format_bytes(cpu_rank["grads"]),
         format_bytes(cpu_rank["grads"])],
        ["CPU: per node (4 ranks)", "—", format_bytes(with_ckpt.cpu_bytes), format_bytes(without.cpu_bytes)]]
print(text_table(["per rank", "the source", "peak model, checkpointing", "no checkpointing"], rows))
assert with_ckpt.peak_terms.get("grads", 0) == 0 and "grads" in with_ckpt.states.cpu
glue("seed_offload_budget",
     f"按项重算，GPU 上没有梯度分片（优化器 offload 时梯度分片建在 CPU 上），开 activation checkpointing 时每卡峰值"
     f" {format_bytes(with_ckpt.peak_bytes)}，不开时 {format_bytes(without.peak_bytes)}（激活值"
     f" {peak_term(without, 'activations')}）；CPU 上每个 rank 除了 Adam 的 {format_bytes(cpu_rank['optim'])}，"
     f"还有 fp32 主权重 {format_bytes(cpu_rank['master'])} 和梯度 {format_bytes(cpu_rank['grads'])}，"
     f"4 个 rank 的节点合计 {format_bytes(with_ckpt.cpu_bytes)}")

# %% [markdown]
# 原文的 GPU 合计碰巧落在“不开 checkpointing”的量级，但组成不对：优化器 offload 时，ZeRO-3 的梯度分片缓冲区
# `grad_partitions_flat_buffer` 建在 CPU 上（`deepspeed/runtime/zero/stage3.py` 第 333 行的 `self.device`、第 791 行），
# 规约桶里的梯度直接拷过去，在累积边界再转成 fp32 给 CPU 上的 Adam（第 2 节引的 `_offload_grad_partition_at_boundary`）；
# GPU 上多出来的是 ZeRO-3 收集的完整参数（`gathered`）和常驻的 1 GB 规约桶。CPU 一侧原文只算了 Adam 的两个状态，
# 漏了 fp32 主权重和梯度，每个 rank 少算了一半多；
# 参数的“冷备份”并不存在：不开 `offload_param` 时参数分片只在 GPU 上，开了才搬到 CPU（那时 GPU 上就没有这 3.5 GB）。

# %% [markdown]
# 结论：
#
# - **“24 GB 训练 13B”**：ZeRO-2 永远不行（每张卡都要放完整的 bf16 参数和激活值）；ZeRO-3 不用 offload 时要十几张卡；
#   单卡加上 ZeRO-3 全量 offload，GPU 放得下，但主机内存要约 260 GB。
# - **“单张 3090 跑 70B”**：GPU 显存确实不是瓶颈，瓶颈在主机内存：全量 offload 每个参数在主机上要 20 字节
#   （bf16 参数 2 + fp32 主权重 4 + fp32 梯度 4 + bf16 梯度 2 + Adam 8），70B 需要约 1.4 TB 内存；
#   原文推荐的 256 GB 只够约 13B。再往下只能 offload 到 NVMe（ZeRO-Infinity，`offload_optimizer`/`offload_param` 的 `"device": "nvme"`）；
#   本书没有测 NVMe offload 的速度，CPU offload 的速度代价见 4.3 节（`03_trainer_integration` 第 8 节的 GPU 实测）。

# %% [markdown]
# ## 9. 排查一次 OOM：24 GB 的卡上训练 Llama-3.2-1B
#
# 一个常见的处境：一张 24 GB 的卡（RTX 4090、A10、L4 都是这个量级），想全参数微调 Llama-3.2-1B，每个优化器步 16k 个 token
# （4 条 × 4096）。下面每一次尝试都真的在 H200 上跑过：进程先用 `torch.cuda.set_per_process_memory_fraction` 把自己限制在
# 24 GB，分配器拒绝超出的申请，报的就是真实的 `torch.OutOfMemoryError`。每一行旁边是峰值模型事先给出的预测：

# %%
from dscourse.calibration import oom_walkthrough

tries = oom_walkthrough()


def outcome(r):
    if r["oom_phase"]:
        return f"OOM in step {r['oom_step']}'s {r['oom_phase']} (asked {r['oom_asked'] / 2**30:.2f} GiB)"
    return f"fits: peak {format_bytes(r['measured'])}, {r['step_seconds']:.2f} s/step"


print(text_table(["#", "setting", "tokens/step", "predicted peak", "fits 24 GB?", "on the capped H200"],
                 [[i, f"{r['variant']}, {r['micro_batch']} x {r['seq']}"
                   + (f" x GA {r['grad_accum']}" if r["grad_accum"] > 1 else "")
                   + (", checkpointing" if r["checkpointing"] else ""), f"{r['tokens_per_step']:,}",
                   f"{format_bytes(r['predicted'])} ({r['predicted_phase']})",
                   "yes" if r["predicted_fits"] else "no", outcome(r)] for i, r in enumerate(tries, 1)],
                 align_right_from=99))
assert all(r["predicted_fits"] == (r["oom_phase"] is None) for r in tries)  # every verdict came true
fitted = [r for r in tries if r["measured"] and not r["oom_phase"]]
worst_fit = max(abs(r["predicted"] - r["measured"]) / r["measured"] for r in fitted)
print(f"\nwhere it fitted, the predicted peak was within {100 * worst_fit:.2f}% of the measured one")
glue("oom_worst_fit", f"{100 * worst_fit:.2f}%")
glue("oom_tries", len(tries))

# %%
from dscourse.plots import oom_attempts

show(oom_attempts(tries))

# %% [markdown]
# **第 1 次：读报错。** 把第一次的报错原样打印出来，每个数都有用：

# %%
import textwrap

print(textwrap.fill(tries[0]["oom_message"].split("  See documentation")[0], 110))

# %% [markdown]
# - “Tried to allocate 1002.00 MiB”是压垮它的那一次申请，不是缺口的全部；
# - “this process has 23.03 GiB memory in use”“allowed 22.35 GiB”：24 GB 就是 22.35 GiB（报错用 GiB，本书用 GB）；
# - “allocated by PyTorch”是活着的张量，“reserved by PyTorch but unallocated”是缓存里的空闲块（碎片）。后者大时才值得试
#   `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`；这里只有 763 MiB，换设置救不了。
#
# 它崩在**第 2 步**的前向，而第 1 步顺利跑完：Adam 的两份状态是第一次 `step()` 时才分配的，所以“第一步能跑”什么也不说明，
# 要看峰值。峰值模型在 optimizer step 上（27.26 GB），下面是它逐项的账（这就是 CPU 上也能做的排查：不需要 GPU）：

# %%
memory_cli(["--model-config", "Llama-3.2-1B", "--gpus", "1", "--stage", "2", "--micro-batch", "1", "--seq", "2048"])

# %% [markdown]
# 峰值里一大半是优化器（Adam 的 m、v，fp32 主权重，以及 step 时展平成 fp32 的梯度），所以：
#
# - **第 2 次**打开 activation checkpointing：没用，它只省激活值，这次 OOM 推迟到第 2 步的 optimizer step；
# - **第 3 次**把优化器 offload 到 CPU（`offload_optimizer: {"device": "cpu"}`）：峰值降到 10 GB 以下，放得下；
# - **第 4、5 次**把每步的 token 提到 4 × 4096：峰值回到反向，这回是激活值和 logits 链；checkpointing 也救不了，它拒绝的 7.83 GiB
#   正是 4 × 4096 × 128256 个 fp32 的 logits（Llama-3 的词表大）——checkpointing 不管 logits；
# - **第 6–8 次**保持每步 16k 个 token，改成更小的 micro-batch 加梯度累积：都放得下，峰值与预测相差不到 0.01%。
#
# 排查的顺序因此是：先看 OOM 落在哪个阶段（报错前最后的日志，或者 `python -m dscourse.memory` 逐项的账），再对症下药：
#
# | 峰值落在 | 有用的办法 | 没用的办法 |
# |---|---|---|
# | optimizer step（Adam、主权重、fp32 梯度） | 更高的 ZeRO stage 和更多的卡、`offload_optimizer`、更小的 `sub_group_size`（ZeRO-3） | checkpointing、更小的 micro-batch |
# | 前向/反向（激活值、logits） | 更小的 micro-batch 加梯度累积、checkpointing（只对激活值） | offload 优化器 |
# | 两步之间就放不下 | ZeRO-3、`offload_param` | 一切只动激活值的办法 |
#
# 在 GPU 上定位时，`deepspeed.runtime.utils.see_memory_usage("tag", force=True)` 在任意位置打印已分配（MA）、其峰值（Max_MA）、
# 缓存（CA）的显存和主机内存；配置里的 `"memory_breakdown": true` 让引擎在前向、反向、step 前后各调用它一次。注意它每次都把
# 峰值统计清零（`deepspeed/runtime/utils.py` 的 `see_memory_usage` 末尾）：开着它时，自己读到的 `max_memory_allocated()`
# 只是上一次打印以来的峰值。`torch.cuda.memory._record_memory_history()`
# 加 `torch.cuda.memory._dump_snapshot("snap.pickle")` 记下每一次分配，拖进 <https://pytorch.org/memory_viz> 就能看到图 4.1-1 那样的时间线。
#
# ### 选 micro-batch 与梯度累积
#
# 三种放得下的写法每步都是 16k 个 token，数学上等价（同样的全局 batch），只差显存和时间：

# %%
same = [r for r in tries if r["tokens_per_step"] == 16384 and not r["oom_phase"]]
fastest = min(same, key=lambda r: r["step_seconds"])
for r in same:
    print(f"{r['micro_batch']} x {r['seq']} x GA {r['grad_accum']}{', checkpointing' if r['checkpointing'] else '':15s}"
          f" peak {format_bytes(r['measured']):>8s}  {r['step_seconds']:.2f} s/step")
glue("ga_fastest", f"micro-batch {fastest['micro_batch']} × 累积 {fastest['grad_accum']}、不开 checkpointing，"
                   f"每步 {fastest['step_seconds']:.2f} s，峰值 {format_bytes(fastest['measured'])}")

# %% [markdown]
# 规则：
#
# 1. 全局 batch（每步 token 数）是训练超参数，先定下来；`train_batch_size = micro-batch × gradient_accumulation_steps × GPU 数`，
#    DeepSpeed 在启动时核对这个等式（4.2 节）。
# 2. micro-batch 取**不开 checkpointing 就放得下的最大值**：它决定 GPU 的利用率（4.3 节的吞吐表里，GPT-2 350M 的 micro-batch 从 1 到 16，
#    tokens/s 涨了十倍以上），再用梯度累积凑够全局 batch；累积还摊薄了每步一次的 optimizer step（offload 时尤其明显）。
# 3. 只有当不开就连 micro-batch 1 都放不下，或者开了能把 micro-batch 提高好几倍时，才开 checkpointing：它每步要多花上面测的那些时间。
#    本例中 micro-batch 1 × 累积 4 不开 checkpointing 最快。
# 4. 累积期间 ZeRO-1 在每个 micro-batch 之间留着完整的 bf16 梯度和规约桶，ZeRO-2 只留自己的梯度分区（峰值模型的
#    `accumulation_terms`，逐项引了 DeepSpeed 的源码）：要累积时优先 ZeRO-2。

# %% [markdown]
# ## 小结
#
# - 混合精度 Adam：每参数 16 字节（论文），原文的 12 字节漏了 fp32 主权重。
# - ZeRO-1/2/3 依次切分优化器状态、梯度、参数；两次 step 之间 ZeRO-1 和 ZeRO-2 持有的内存相同。
# - DeepSpeed 自带估算器、`accelerate estimate-memory` 与真实分配各不相同；`allocated` 公式逐项解释了真实分配，GPU 实测误差见上表。
# - OOM 由训练一步中的**峰值**决定，不是两次 step 之间的模型状态：峰值是它的数倍，词表大时 logits 链是最大的一项；
#   `dscourse.memory.peak` 逐项算出峰值，在留作检验的 H200 实测上误差在 1% 以内。
# - 判断“放不放得下”要同时算 GPU 峰值（再给分配器留约 20% 余量）和主机内存；`python -m dscourse.memory plan` 列出放得下的配置。
# - OOM 先看落在哪个阶段：optimizer step 上的用 ZeRO stage 或 offload 解决，前向/反向上的用更小的 micro-batch 加累积或 checkpointing；
#   checkpointing 每步多花 ZeRO-2 约两成、ZeRO-3 约四成的时间，只在必要时开。
