# %% [markdown]
# # 4.6 实验：同一个模型，ZeRO-3 与 FSDP2 两种切分
#
# 原文用四条要点比较 DeepSpeed ZeRO-3 和 PyTorch FSDP（完全分片数据并行，Fully Sharded Data Parallel），再给一段
# `accelerate config` 的问答。本 notebook 让两者在**同一个模型、同一批数据、同一个种子**上真的训练（2 个 CPU rank，gloo；
# 有 GPU 时按 GPU 规模），并测量：
#
# 1. loss 曲线是否一致（fp32 与 bf16）；
# 2. 每个 rank 实际持有多少参数、梯度、优化器状态元素——与 ZeRO-3 的分区逐个比较；
# 3. FSDP 的四种切分策略（FULL_SHARD、SHARD_GRAD_OP、NO_SHARD、HYBRID_SHARD）各自对应 ZeRO 的哪个阶段，量出来而不是背下来；
# 4. Offload：DeepSpeed 的 `offload_optimizer` / `offload_param` 与 FSDP2 的 `CPUOffloadPolicy` 各把什么放到哪里；
# 5. 原文的 `accelerate config` 回答写成配置文件，用 `accelerate launch` 真的跑；哪些回答在 FSDP2 里已经过时；
# 6. 这个规模下的单步时间。
#
# FSDP 一侧是 `dscourse/scripts/fsdp_run.py`（FSDP2：`torch.distributed.fsdp.fully_shard`），DeepSpeed 一侧是 4.3 节的
# `train_run.py` 和 4.1 节的 `zero_memory.py`；三者用同一个 `dscourse.models.build_model` 和 `synthetic_batch`。

# %%
# NBVAL_IGNORE_OUTPUT
import accelerate
import deepspeed
import torch
import transformers

from dscourse import scale

print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}, "
      f"accelerate {accelerate.__version__}")
print(f"scale: {scale.scale()} ({scale.ranks()} ranks), model: {scale.train_shape()}")

# %% [markdown]
# 所有运行都写进一个临时目录；`NPROC`（rank 数）和 `SHAPE`（模型）由 `dscourse.scale` 决定：CPU 上是 2 个进程和
# 13.5 万参数的 GPT-2，GPU 上是每块 GPU 一个进程和 GPT-2 350M。

# %%
import shutil
import tempfile
from pathlib import Path
from statistics import median

from dscourse import package_path
from dscourse.book import glue
from dscourse.fsdp import MAPPING, fsdp_train, zero_elements, zero_held
from dscourse.integration import BF16_RTOL, FP32_RTOL, losses, max_rel_diff, readable_command, train_stages
from dscourse.launch import run_ranks
from dscourse.plots import show
from dscourse.tables import text_table

WORK = Path(tempfile.gettempdir()) / "dscourse-4.6"
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir(parents=True)
NPROC, SHAPE = scale.ranks(), scale.train_shape()
STEPS = 12
GROUP = max(2, NPROC // 2)  # HYBRID_SHARD's shards per group (section 3): 2 groups of GROUP ranks
HYBRID_SHAPE = scale.train_shape(2 * GROUP)

# %% [markdown]
# ## 1. 同一个模型，ZeRO-3 与 FSDP2 FULL_SHARD 各训练一次
#
# FSDP2 一侧的核心只有几行：每个 Transformer 块各做一次 `fully_shard`，最后对整个模型再做一次（词嵌入、最后的 LayerNorm
# 和与词嵌入共享权重的输出层归根模块）。参数变成按第 0 维切开的 `DTensor`，优化器直接建在这些分片上：

# %%
import inspect

from dscourse.scripts.fsdp_run import shard_model

print(inspect.getsource(shard_model))

# %% [markdown]
# 两边的训练设置逐项对齐：同一个种子建模型；第 s 步 rank r 训练 `synthetic_batch(..., (s mod 4) × N + r)`（每个 rank 循环 4 个
# batch，loss 会下降）；`torch.optim.AdamW`（学习率由 `dscourse.models.learning_rate` 按模型给出：CPU 上的小模型 1e-3，GPT-2 350M 2e-4；无 weight decay）；梯度裁剪 1.0。bf16 时两边都是 fp32 主权重 +
# bf16 计算 + bf16 梯度归约。先比 fp32，再比 bf16：

# %%
zero3 = {p: train_stages(WORK / "deepspeed", (3,), p, steps=STEPS, shape=SHAPE, nproc=NPROC)[3] for p in ("fp32", "bf16")}
fsdp = {p: fsdp_train(WORK, "full", p, steps=STEPS, shape=SHAPE, nproc=NPROC) for p in ("fp32", "bf16")}
rows = [[step, *(f"{losses(r)[step]:.2f}" for r in (zero3["fp32"], fsdp["fp32"][0]))]
        for step in range(1, STEPS + 1, 2)]
print(text_table(["step", "ZeRO-3 fp32", "FSDP2 fp32"], rows))
gap = {p: max_rel_diff(fsdp[p][0]["losses"], zero3[p]["losses"]) for p in ("fp32", "bf16")}
print(f"\nlargest relative gap over {STEPS} steps, fp32: below 1e-6: {gap['fp32'] < 1e-6} "
      f"(FP32_RTOL {FP32_RTOL:g})")
print(f"largest relative gap over {STEPS} steps, bf16: below 1e-3: {gap['bf16'] < 1e-3} "
      f"(BF16_RTOL {BF16_RTOL:.4f})")
assert gap["fp32"] < FP32_RTOL and gap["bf16"] < BF16_RTOL, gap
assert losses(fsdp["bf16"][0])[STEPS] < losses(fsdp["bf16"][0])[1] - 0.1  # it learns
glue("fp32_gap", "10⁻⁶")
glue("bf16_gap", "10⁻³")

# %% [markdown]
# 上表只列 fp32：bf16 的逐步数值取决于 CPU 的 bf16 kernel（第二位小数在别的机器上就可能不同），它们和图在下一格：

# %%
# NBVAL_IGNORE_OUTPUT
# (bf16 losses depend on the CPU's bf16 kernels)
from dscourse.plots import loss_figure

print(text_table(["step", "ZeRO-3 bf16", "FSDP2 bf16"],
                 [[step, *(f"{losses(r)[step]:.2f}" for r in (zero3["bf16"], fsdp["bf16"][0]))]
                  for step in range(1, STEPS + 1, 2)]))

show(loss_figure({f"{name} {p}": (zero3[p] if name == "ZeRO-3" else fsdp[p][0])["losses"]
                  for p in ("fp32", "bf16") for name in ("ZeRO-3", "FSDP2")},
                 "Same model, same data: DeepSpeed ZeRO-3 vs FSDP2 FULL_SHARD", "fsdp-vs-zero3"))

# %% [markdown]
# fp32 下两条曲线的最大相对差小于 10⁻⁶，远小于 4.3 节用于 ZeRO 各阶段之间的 fp32 容差 10⁻⁵：数学完全相同，只剩求和顺序
# （梯度范数、all-reduce 的实现）带来的 fp32 舍入。bf16 下最大相对差小于 10⁻³，也在 bf16 的机器精度 2⁻⁷ 之内。
# 两个框架切分的是**存放位置**，不是算法：选哪个不会改变模型学到什么。
#
# ## 2. 每个 rank 持有什么
#
# FSDP2 一侧由 `dscourse.accounting.count_fsdp_bytes` 数：它和 4.1 节数 DeepSpeed 引擎的 `count_engine_bytes` 走同一套遍历和分类，
# 只是把每个 `DTensor` 换成它的本地分片。DeepSpeed 一侧由 4.1 节的 `zero_memory.py` 数（bf16，ZeRO-3）。
# 有一个细节要先处理：ZeRO-3 默认把**不超过 10⁵ 个元素**的参数整份留在每个 rank 上（`stage3_param_persistence_threshold`），
# 这个小模型的每个参数都在阈值以下，默认配置下 ZeRO-3 其实一个参数也不切。为了比较切分本身，这里把阈值设成 0：

# %%
z3 = zero_held(WORK, 3, shape=SHAPE, nproc=NPROC, steps=STEPS)
total = z3[0]["params"]
fs = fsdp["bf16"]
rows = []
for r in range(NPROC):
    z, f = zero_elements(z3[r]), fs[r]["held"]["elements"]
    rows.append([r, f"{z['params']:,}", f"{z['master']:,}", f"{z['optim']:,}",
                 f"{f['params']:,}", f"{f['grads']:,}", f"{f['optim']:,}"])
print(f"model: {total:,} parameters; {z3[0]['persistent_params']:,} of them under ZeRO-3's default persistence "
      f"threshold (1e5)\n")
print(text_table(["rank", "ZeRO-3 bf16 params", "fp32 master", "Adam state",
                  "FSDP2 fp32 shards", "fp32 grads", "Adam state"], rows))
for r in range(NPROC):
    z, f = zero_elements(z3[r]), fs[r]["held"]["elements"]
    assert z["params"] == z["master"] == f["params"] == f["grads"]  # the same partition of the same parameters
assert sum(f["held"]["elements"]["params"] for f in fs) == total
per_rank = fs[0]["held"]["elements"]["params"]
print(f"\neach rank holds {per_rank:,} of {total:,} parameter elements = 1/{total // per_rank}, in both frameworks")
glue("total_params", f"{total:,}")
glue("per_rank", f"{per_rank:,}")
glue("persistent", f"{z3[0]['persistent_params']:,}")
glue("optim_extra", fs[0]["held"]["elements"]["optim"] - 2 * per_rank)

# %% [markdown]
# 两边每个 rank 的分区一样大，而且正好是一半：这个模型每个参数的元素数都是偶数，两种切分都不需要填充。
# 数不一样时，两者的填充方式不同：DeepSpeed 把每个参数展平后切成 ⌈n/N⌉ 个元素一份，最后一份补零；FSDP2 按**第 0 维**
# 用 `torch.chunk` 切（官方文档：dim-0 per-parameter sharding），第 0 维除不尽时最后几个 rank 的分片短一些，内部存储补齐。
#
# 精度上的差别在于**谁是主权重**：
#
# - DeepSpeed ZeRO-3（bf16）每个 rank 持有四份：bf16 参数分区（2 字节/元素）、bf16 梯度分区（2 字节：`grad_partitions_flat_buffer`，
#   `deepspeed/runtime/zero/stage3.py` 第 791 行在初始化时分配、一直保留；上表只列了参数和优化器状态，梯度分区见 4.1 节
#   notebook 清点表中 ZeRO-3 的 `grads` 行）、fp32 主权重分区（4 字节）、Adam 两份状态（8 字节）；
# - FSDP2 的 `MixedPrecisionPolicy(param_dtype=bf16)` 只存 fp32 分片：分片本身就是优化器更新的主权重，bf16 副本只在 all-gather 之后、
#   计算期间存在；但它的梯度分片是 fp32（上表的 `fp32 grads`，4 字节/元素）。所以优化器步骤时两边都是每元素 16 字节
#   （2 + 2 + 4 + 8 对 4 + 4 + 8）：FSDP2 省掉的 bf16 参数副本正好被 fp32 梯度补上。步与步之间 `optimizer.zero_grad()` 释放
#   FSDP2 的梯度（12 字节），DeepSpeed 的梯度分区一直占着；
# - Adam 状态多出的几十个元素是 `step` 计数器：`torch.optim.AdamW` 在 FSDP2 的每个参数张量上各存一个，DeepSpeed 把参数展平成
#   一个组，只存一个。
#
# ## 3. 四种切分策略，对应哪个 ZeRO 阶段
#
# FSDP1（`FullyShardedDataParallel`）用 `ShardingStrategy` 枚举选策略；FSDP2 没有这个枚举，同样的选择由两个参数表达：
# `reshard_after_forward` 和设备网格（device mesh）的形状。下面在同一个模型上把四种都跑一遍。HYBRID_SHARD 需要 2-D 网格
# （组间复制、组内切分），2 个 rank 上只能退化成另外两种，所以它用 4 个 rank 跑（2 组 × 每组 2 个分片）。
# GPU 上每组是 GPU 数的一半（至少 2）；GPU 不够 4 块时，这一组运行和下面的 hpZ 像 CPU 上一样用 4 个 CPU 进程和小模型跑
# （`scale.train_shape(ranks)`），表后会打印出来：

# %%
print(text_table(["FSDP1 strategy", "FSDP2", "compared with", "sharded"],
                 [[k, *v] for k, v in MAPPING.items()], align_right_from=99))
runs = {"FULL_SHARD": fs,
        "SHARD_GRAD_OP": fsdp_train(WORK, "grad_op", "bf16", steps=4, shape=SHAPE, nproc=NPROC),
        "NO_SHARD": fsdp_train(WORK, "no_shard", "bf16", steps=4, shape=SHAPE, nproc=NPROC),
        "HYBRID_SHARD": fsdp_train(WORK, "hybrid", "bf16", steps=4, shape=HYBRID_SHAPE, nproc=2 * GROUP,
                                   mesh=(2, GROUP))}
z2 = zero_held(WORK, 2, shape=SHAPE, nproc=NPROC, steps=4)
hpz = zero_held(WORK, 3, shape=HYBRID_SHAPE, nproc=2 * GROUP, steps=2, extra_zero={"zero_hpz_partition_size": GROUP})
hybrid_total = hpz[0]["params"]
rows = []
for name, ranks in runs.items():
    r = ranks[0]
    e = r["held"]["elements"]
    rows.append([name, len(ranks), "x".join(map(str, r["mesh"])), ",".join(r["placements"]), f"{e['params']:,}",
                 f"{r['param_elements_between_forward_and_backward']:,}", f"{e['grads']:,}", f"{e['optim']:,}"])
print()
print(text_table(["FSDP2 run", "ranks", "mesh", "placement", "params at rest", "params fwd->bwd", "grads",
                  "Adam state"], rows, align_right_from=4))
zrows = [[f"ZeRO-{s}", len(zr), f"{zero_elements(zr[0])['params']:,}", f"{zero_elements(zr[0])['master']:,}",
          f"{zero_elements(zr[0])['optim']:,}"] for s, zr in ((2, z2), (3, z3))]
zrows.append([f"ZeRO-3 + hpZ ({GROUP} per group)", len(hpz), f"{zero_elements(hpz[0])['params']:,}",
              f"{zero_elements(hpz[0])['master']:,}", f"{zero_elements(hpz[0])['optim']:,}"])
print()
print(text_table(["DeepSpeed bf16", "ranks", "bf16 params", "fp32 master", "Adam state"], zrows, align_right_from=2))
if HYBRID_SHAPE != SHAPE:
    print(f"\nHYBRID_SHARD and hpZ need {2 * GROUP} ranks, more than this machine's GPUs: they ran on CPU ranks "
          f"with {HYBRID_SHAPE} ({hybrid_total:,} parameters)")

e = {name: ranks[0]["held"]["elements"] for name, ranks in runs.items()}
between = {name: ranks[0]["param_elements_between_forward_and_backward"] for name, ranks in runs.items()}
assert e["FULL_SHARD"]["params"] == e["SHARD_GRAD_OP"]["params"] == total // NPROC
assert e["HYBRID_SHARD"]["params"] == hybrid_total // GROUP
assert between["FULL_SHARD"] == total // NPROC and between["SHARD_GRAD_OP"] == total // NPROC + total
assert e["NO_SHARD"]["params"] == between["NO_SHARD"] == total
assert zero_elements(z2[0])["params"] == total and zero_elements(z2[0])["master"] == total // NPROC
assert zero_elements(hpz[0])["master"] == hybrid_total // (2 * GROUP) < e["HYBRID_SHARD"]["params"]
glue("hybrid_ranks", 2 * GROUP)
glue("hybrid_fraction", f"1/{hybrid_total // e['HYBRID_SHARD']['params']}")
glue("hpz_fraction", f"1/{hybrid_total // zero_elements(hpz[0])['master']}")

# %% [markdown]
# 同一组清点，换成每个 rank **每个参数多少字节**，与图 4.6 背后的公式 `dscourse.memory.sharding.held_per_param` 逐项对照。
# FSDP2 是在优化器 step 之后、`zero_grad()` 之前清点的（梯度还在：图中“反向之后、优化器 step 之前”那一刻的持有量），
# DeepSpeed 是步与步之间。FSDP2 的 fp32 分片就是主权重，记在“fp32 主权重”一栏。比较允许 0.1% 的差：Adam 的 `step` 计数器
# 每个参数张量一个元素，公式不算它。hpZ 的二级分区不在清点里（见下文），所以 hpZ 一行的 16 位参数只比主分区。

# %%
import math

from dscourse.memory.sharding import held_per_param


def counted_per_param(held: dict, params: int) -> dict:
    """Bytes per parameter this rank holds by category, over every device kind the count saw."""
    kinds = [v for k, v in held.items() if k not in ("elements", "paths")]
    return {c: sum(kind.get(c, 0) for kind in kinds) / params for c in ("params", "grads", "master", "optim")}


checks = []
for name, ranks in runs.items():
    measured = counted_per_param(ranks[0]["held"], hybrid_total if name == "HYBRID_SHARD" else total)
    measured = {"params": 0.0, "grads": measured["grads"], "master": measured["params"], "optim": measured["optim"]}
    checks.append((f"FSDP2 {name}", len(ranks), measured, held_per_param(name, len(ranks), GROUP, "step")))
for name, ranks, params in (("ZeRO-2", z2, total), ("ZeRO-3", z3, total), ("ZeRO-3 + hpZ", hpz, hybrid_total)):
    formula = held_per_param(name, len(ranks), GROUP, "rest")
    if name == "ZeRO-3 + hpZ":
        formula["params"] -= 2 / GROUP  # the secondary partition, not in the count
    checks.append((name, len(ranks), counted_per_param(ranks[0]["held_after_step"], params), formula))
rows = []
for name, n, measured, formula in checks:
    assert all(math.isclose(measured[c], formula[c], rel_tol=1e-3, abs_tol=1e-9) for c in formula), (name, measured)
    rows.append([name, n, *(f"{measured[c]:.3f} / {formula[c]:.3f}" for c in ("params", "grads", "master", "optim"))])
print(text_table(["run", "ranks", "16-bit params", "grads", "fp32 master", "Adam"], rows, align_right_from=1))
print("\nbytes per parameter per rank, counted / held_per_param: every cell agrees within 0.1%")

# %% [markdown]
# 读表：
#
# - **FULL_SHARD = ZeRO-3**：参数、梯度、Adam 状态都是 1/N，前向与反向之间也只留分片（每个块算完就释放）。与第 2 节 ZeRO-3 的分区逐个相等。
# - **SHARD_GRAD_OP ≈ ZeRO-2，但不相等**：梯度和 Adam 状态是 1/N；参数在**静止时**也是 1/N，只在前向到反向之间整份留着
#   （上表 “params fwd->bwd” 一列是分片加上整份模型）。ZeRO-2 则一直在每个 rank 上保存整份 bf16 参数（DeepSpeed 表的
#   “bf16 params” 一列）。FSDP 文档的原话也是“参数在计算之外是切分的”；两者省下的都是反向时再 all-gather 一次参数的通信。
# - **NO_SHARD = ZeRO-0 / DDP**：FSDP2 没有 NO_SHARD 这个选项；2-D 网格 (N, 1)——在 N 个副本之间复制、在 1 个 rank 内“切分”——就是它：
#   每个 rank 持有全部参数、梯度和 Adam 状态，梯度用 all-reduce 同步。纯数据并行在 PyTorch 里更常用的写法是 DDP。
# - **HYBRID_SHARD**：2-D 网格 (副本组数, 组内分片数)，组内做 FULL_SHARD，组间像 DDP 一样复制并 all-reduce 梯度。
#   4 个 rank、网格 2×2 时每个 rank 持有 1/2 而不是 1/4：参数、梯度、Adam 状态都只在组内切分，用内存换跨节点通信（组通常就是一个节点）。
# - **ZeRO++ hpZ 不等于 HYBRID_SHARD**：`zero_hpz_partition_size` 在每组（节点）内多存一份**参数**的二级分区，让反向的 all-gather
#   不跨节点；fp32 主权重和 Adam 状态仍然在**全部** rank 上切分。上面 DeepSpeed 表的最后一行是同样 4 个 rank 上的 hpZ：
#   主权重和 Adam 状态是 1/4，而 HYBRID_SHARD 是 1/2。（表里只清点了主分区；二级分区挂在每个参数的 `ds_secondary_tensor` 上，
#   是组内 1/2 的 bf16 参数，每元素 2 字节。）hpZ 多花的只是这份 16 位参数，HYBRID_SHARD 多花的是主权重和优化器状态：
#   hpZ 省的显存比 HYBRID_SHARD 多，省的通信少（梯度的 reduce-scatter 仍然跨所有 rank）。
#
# DeepSpeed 以前还有一个与 HYBRID_SHARD 真正对应的功能 MiCS（`mics_shard_size`：组内切分、组间完整复制）。DeepSpeed 0.19 已经删掉了它，
# 配置里写这个键会直接报错：

# %%
from deepspeed.runtime.config import DeepSpeedConfig

from dscourse.config import build_config

for extra in ({"mics_shard_size": 2}, {"zero_hpz_partition_size": 2}):
    try:
        parsed = DeepSpeedConfig(build_config(3, micro_batch=2, world_size=1, extra_zero=extra))
        print(f"{extra}: accepted (zero_hpz_partition_size = {parsed.zero_config.zero_hpz_partition_size})")
    except Exception as error:  # DeepSpeedConfigError
        print(f"{extra}: {type(error).__name__}: {error}")

# %% [markdown]
# 所以常见对照表里的“HYBRID_SHARD ≈ ZeRO++ hpZ”只是近似：在 DeepSpeed 0.19 里，跨节点少通信的办法就是 hpZ（以及 ZeRO++ 的另两项：
# 量化权重 qwZ 和量化梯度 qgZ），代价与 HYBRID_SHARD 不同。
#
# ### FSDP2 里真正像 hpZ 的：`reshard_after_forward=<int>`
#
# `reshard_after_forward` 除了 `True`/`False` 还可以是一个整数 k：前向之后每个 block 的参数不是切回 1/N，而是切成 1/k 留着
# （k 是分片维度的真约数，通常取一个节点的 GPU 数），反向的 all-gather 于是只在 k 个 rank 的组内进行
# （`torch/distributed/fsdp/_fully_shard/_fully_shard.py` 的文档）。主权重、梯度和优化器状态仍是 1/N——与 hpZ 的取舍相同。
# 同样 4 个 rank、k = 2：

# %%
raf = fsdp_train(WORK, "full", "bf16", steps=4, shape=HYBRID_SHAPE, nproc=2 * GROUP, reshard_after_forward=GROUP)
r = raf[0]
at_rest, between_fb = r["held"]["elements"]["params"], r["param_elements_between_forward_and_backward"]
print(f"FULL_SHARD, reshard_after_forward={GROUP}, {len(raf)} ranks: parameters at rest {at_rest:,} "
      f"(1/{hybrid_total // at_rest}), from forward to backward {between_fb:,} "
      f"(1/{hybrid_total // at_rest} fp32 shard + 1/{GROUP} in bf16 for the group's all-gather)")
print(f"HYBRID_SHARD on the same ranks keeps 1/{hybrid_total // e['HYBRID_SHARD']['params']} at rest, with its "
      f"gradients and Adam state")
assert at_rest == hybrid_total // (2 * GROUP) and between_fb == at_rest + hybrid_total // GROUP
assert all(x["param_elements_between_forward_and_backward"] == between_fb for x in raf)
glue("raf_rest", f"1/{hybrid_total // at_rest}")
glue("raf_extra", f"1/{hybrid_total // (between_fb - at_rest)}")

# %% [markdown]
# ## 4. Offload：各自放什么、在哪里算
#
# 同一个 bf16 模型，DeepSpeed ZeRO-3 打开 `offload_optimizer` 和 `offload_param`（都指向 CPU），FSDP2 用 `CPUOffloadPolicy`：

# %%
z3_off = zero_held(WORK, 3, shape=SHAPE, nproc=NPROC, steps=4, offload=True)
fs_off = fsdp_train(WORK, "full", "bf16", steps=4, shape=SHAPE, nproc=NPROC, offload=True)
zb, fb = z3_off[0]["held_after_step"], fs_off[0]["held"]
print(text_table(["run", "device", "params B", "master B", "grads B", "Adam state B"],
                 [["ZeRO-3 + offload", dev, f"{c['params']:,}", f"{c['master']:,}", f"{c['grads']:,}", f"{c['optim']:,}"]
                  for dev, c in zb.items()] +
                 [["FSDP2 + CPUOffloadPolicy", dev, f"{c['params']:,}", f"{c['master']:,}", f"{c['grads']:,}",
                   f"{c['optim']:,}"] for dev, c in fb.items() if dev != "elements"], align_right_from=2))
print(f"\nFSDP2 offload: shards on {fs_off[0]['where']['params']}, grads on {fs_off[0]['where']['grads']}, "
      f"Adam state on {fs_off[0]['where']['optim']}")
off_gap = max_rel_diff(fs_off[0]["losses"], fs[0]["losses"])
print(f"FSDP2 with and without offload, relative loss gap below 1e-3: {off_gap < 1e-3}")
assert off_gap < 1e-3
if not torch.cuda.is_available():
    print(f"ZeRO-3 offload grads: bf16 partition + fp32 copy for the CPU optimizer = "
          f"{zb['cpu']['grads']:,} B = {per_rank:,} x (2 + 4)")
    assert zb["cpu"]["grads"] == per_rank * 6

# %% [markdown]
# 在 CPU 上“设备”和“主机”是同一块内存，所以两边的字节都记在 `cpu` 名下；表里能看到的是**结构**：
#
# - DeepSpeed 的 offload 是**两个独立开关**。`offload_optimizer` 把 fp32 主权重、Adam 状态和一份 fp32 梯度放进主机内存，
#   **优化器在 CPU 上计算**（GPU 上用 `DeepSpeedCPUAdam`，4.3 节）；bf16 参数分区留在 GPU 上，除非再打开 `offload_param`。
#   上表 ZeRO-3 的梯度一栏正是 bf16 分区 + fp32 副本（每元素 2 + 4 字节）。还可以 offload 到 NVMe（ZeRO-Infinity）。
# - FSDP2 的 `CPUOffloadPolicy` 是**一个开关**：分片参数、分片梯度、优化器状态全部在主机内存，优化器步骤在 CPU 上
#   由 PyTorch 自己的 AdamW 执行；前向、反向时把分片拷到 GPU 再 all-gather。没有“只 offload 优化器”的选项，也没有 NVMe。
# - 数值上 offload 什么也不改变：FSDP2 开不开 offload，loss 曲线相同。
#
# 所以原文“FSDP 的 Offload 能力稍弱”要说具体：FSDP2 只有全有或全无的 CPU offload，DeepSpeed 可以只 offload 优化器、
# 可以 offload 到 NVMe，并带有专门的 CPU Adam。GPU 上各要多少显存，见 4.1 节的显存账本。
#
# ## 5. 原文的 `accelerate config`：写成配置文件，真的启动
#
# 原文的三个回答（用 FSDP：yes；切分策略：FULL_SHARD；Offload：true/false）在 accelerate 1.15 里写成配置文件是这样
# （`fsdp_version: 2` 选 FSDP2；`accelerate config` 交互生成的就是这种 YAML）：

# %%
fsdp_yaml = package_path("configs", "accelerate_fsdp.yaml")
print(fsdp_yaml.read_text())

# %%
isolated = {"HF_HOME": str(WORK / "hf_home")}  # no `accelerate config` default file from this machine's user
acc = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE, "--steps", "4"], nproc=NPROC,
                launcher="accelerate", launcher_args=["--config_file", str(fsdp_yaml), f"--num_processes={NPROC}"],
                timeout=600, env=isolated, out_dir=WORK / "accelerate-fsdp")
print(f"$ {readable_command(acc.command, strip=(WORK,))}\n")
r = acc.ranks[0]
print(f"after accelerator.prepare: {r['model_class']} ({r['distributed_type']}), FSDP version {r['fsdp']['version']}, "
      f"reshard_after_forward={r['fsdp']['reshard_after_forward']}, {r['world_size']} processes")
print(f"mixed precision: {r['fsdp']['mixed_precision']}")
print(f"parameter elements held by each rank: {[x['fsdp']['elements']['params'] for x in acc.ranks]} of {total:,}")
assert r["distributed_type"] == "DistributedType.FSDP" and r["fsdp"]["version"] == 2
assert all(x["fsdp"]["elements"]["params"] == per_rank for x in acc.ranks)

# %% [markdown]
# `accelerator.prepare` 把模型变成 `FSDPGPT2LMHeadModel`（FSDP2 给 `fully_shard` 过的模块动态生成的类），每个 rank 持有一半参数，
# 与第 2 节自己写 `fully_shard` 的结果相同。训练脚本与 4.3 节跑 DeepSpeed 的是**同一个** `accelerate_train.py`，一行没改：
# 在 Accelerate 里从 DeepSpeed 换到 FSDP 只换配置文件。
#
# 原文的回答放到 FSDP2 里，有几处已经过时：
#
# | 原文 / FSDP1 的回答 | FSDP2（`fsdp_version: 2`）里 |
# |---|---|
# | `fsdp_sharding_strategy: FULL_SHARD` | 已弃用，改为 `fsdp_reshard_after_forward: true`（SHARD_GRAD_OP 是 `false`）；Accelerate 见到旧键会报弃用提示 |
# | NO_SHARD、HYBRID_SHARD | 没有对应的键：用 DDP，或在 `ParallelismConfig` 里给出 2-D 网格 |
# | `fsdp_offload_params: true/false` | 仍然有效，对应 `CPUOffloadPolicy`（参数、梯度、优化器状态一起） |
# | `fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP` | 仍然有效；FSDP2 据此对每个 `GPT2Block` 调用 `fully_shard`，再对根模块调用一次 |
# | `fsdp_backward_prefetch`、`fsdp_use_orig_params`、`fsdp_sync_module_states` | FSDP2 不需要：Accelerate 警告后忽略 |
# | `fsdp_forward_prefetch` | FSDP2 尚未实现：设了任何值，Accelerate 都报 `ValueError`（`accelerate/utils/dataclasses.py`） |
# | “代码无需任何修改” | 训练循环不用改；但 FSDP2 的 `optimizer` 必须在 `prepare` 之后才指向分片参数（Accelerate 替你处理），保存完整权重要用 `accelerator.get_state_dict` |
#
# ### 一个只在 CPU 上出现的坑
#
# accelerate 1.15 只在 GPU 一类设备（`MULTI_GPU`、`MULTI_XPU`……）上启用 FSDP。在 CPU 上它**不报错**，而是把
# `distributed_type` 设成 `NO`：每个进程训练自己的一份完整模型，互不通信。`accelerate_train.py` 在 CPU 上替它把进程标成多设备
# （见脚本里的注释），上面的运行才真的切分。不加这一步（`--cpu-as-is`）是这样：

# %%
as_is = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE, "--steps", "4", "--cpu-as-is"], nproc=NPROC,
                  launcher="accelerate", launcher_args=["--config_file", str(fsdp_yaml), f"--num_processes={NPROC}"],
                  timeout=600, env=isolated, out_dir=WORK / "accelerate-as-is")
for x in as_is.ranks:
    print(f"rank {x['rank']}: {x['distributed_type']}, model {x['model_class']}")
if len(as_is.ranks) > 1:  # one GPU: one rank, nothing to compare
    print(f"the two ranks report the same losses: {as_is.ranks[0]['losses'] == as_is.ranks[1]['losses']} "
          f"(under FSDP above: {acc.ranks[0]['losses'] == acc.ranks[1]['losses']})")
if not torch.cuda.is_available():
    assert all(x["distributed_type"] == "DistributedType.NO" for x in as_is.ranks)
    assert as_is.ranks[0]["losses"] != as_is.ranks[1]["losses"]  # two independent models

# %% [markdown]
# 两个 rank 的 loss 不同（各训练各的），模型类仍是普通的 `GPT2LMHeadModel`：没有任何报错提示 FSDP 没生效。
# 检查 `accelerator.distributed_type`，或者像上面那样看每个 rank 持有多少参数，是发现它的办法。GPU 上没有这个问题。
#
# ## 6. 这个规模下的单步时间

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary from run to run and from machine to machine)
def per_step(seconds: list[float]) -> str:
    return f"{median(seconds[1:]) * 1e3:.1f} ms"


rows = [["FSDP2 FULL_SHARD bf16", per_step(fs[0]["seconds_per_step"])],
        ["FSDP2 SHARD_GRAD_OP bf16", per_step(runs["SHARD_GRAD_OP"][0]["seconds_per_step"])],
        ["FSDP2 NO_SHARD bf16", per_step(runs["NO_SHARD"][0]["seconds_per_step"])],
        ["FSDP2 FULL_SHARD + CPUOffloadPolicy", per_step(fs_off[0]["seconds_per_step"])],
        ["DeepSpeed ZeRO-3 bf16 (mean incl. step 1)", f"{z3[0]['seconds'] / STEPS * 1e3:.1f} ms"],
        ["DeepSpeed ZeRO-3 + offload (mean incl. step 1)", f"{z3_off[0]['seconds'] / 4 * 1e3:.1f} ms"]]
print(text_table(["run", "time per step"], rows))

# %% [markdown]
# 13.5 万参数的模型上，一步只有几十毫秒，时间主要花在框架自身的调度（钩子、all-gather 的拼接、gloo 通信）上，
# 两个框架在这里处于同一个量级，谁快谁慢随机器和运行而变，**不能**用来判断 GPU 上的吞吐。能稳定看出来的只有方向：
# 切得越多（NO_SHARD → SHARD_GRAD_OP → FULL_SHARD）每步的通信越多；CPU offload 每步都要在“设备”和主机之间搬运分片。
# GPU 规模的吞吐要在 GPU 上测（`dscourse/data/gpu_throughput_gpt2-350m.json` 是 H100 上 ZeRO 各阶段与 offload 的实测，本书没有测 FSDP）。
#
# ## 7. 选型：每条结论指向上面的单元
#
# | 结论 | 依据 |
# |---|---|
# | 两者训练出同样的模型：fp32 下 loss 相对差 < 10⁻⁶，bf16 < 10⁻³ | 第 1 节 |
# | FULL_SHARD 与 ZeRO-3 每个 rank 持有的分区逐个相等；优化器步骤时两边都是每元素 16 字节（FSDP2 无 bf16 副本、梯度为 fp32） | 第 2 节 |
# | SHARD_GRAD_OP 不等于 ZeRO-2：静止时参数也是切分的 | 第 3 节 |
# | 跨节点想少通信：FSDP 用 HYBRID_SHARD（2-D 网格），DeepSpeed 0.19 用 ZeRO++ hpZ（MiCS 已删除）；两者的代价不同 | 第 3 节 |
# | 显存极紧、要只 offload 优化器或用 NVMe：DeepSpeed | 第 4 节 |
# | 已经用 Accelerate：换框架只换配置文件，训练脚本不变 | 第 5 节 |
# | 在 CPU 上用 Accelerate 试 FSDP：先确认 `distributed_type` 真的是 FSDP | 第 5 节 |
# | 小模型上的时间不代表 GPU 上的吞吐 | 第 6 节 |
#
# 生态方面（原文的“HF 集成度高”）：Trainer 和 Accelerate 对两者都是一个配置项（DeepSpeed 见 4.3 节，FSDP 见第 5 节）；
# FSDP2 是 PyTorch 自带的，不需要编译 CUDA/C++ 扩展，而 DeepSpeed 的部分优化器和通信算子第一次使用时要编译（4.3 节）。
