# %% [markdown]
# # 4.2 实验：检查、解释并真正加载 ds_config.json
#
# DeepSpeed 几乎不需要改代码，它由一个 JSON 配置文件驱动。本 notebook：
#
# 1. 用检查器 `python -m dscourse.config check` 读原文的两份配置，并对照 DeepSpeed 自己的解析器怎么说；
# 2. 逐个解释原文配置里的每个键：作用、DeepSpeed 0.19.8 的默认值（从 DeepSpeed 代码里读出）、何时修改、占多少显存；
# 3. 让 Hugging Face Trainer 真的填一次 `"auto"`，逐项看它填了什么；
# 4. 配置生成器：表单 → 严格 JSON，边改边检查；
# 5. 经典错误合集：检查器报什么，DeepSpeed 自己又报什么（大多数情况下：什么也不报）。
#
# 本页展示的每一份配置都在 2 个 CPU rank 上真的训练过（本 notebook 和 `tests/test_configs_proven.py`）。

# %%
# NBVAL_IGNORE_OUTPUT
import deepspeed
import transformers

from dscourse import scale

print(f"deepspeed {deepspeed.__version__}, transformers {transformers.__version__}, scale: {scale.scale()}")

# %% [markdown]
# ## 1. 原文的两份配置，先让检查器读一遍
#
# 原文的配置里写了 `//` 注释。DeepSpeed 用 hjson 读配置文件，所以注释在**纯 DeepSpeed** 里没问题；
# 但 Hugging Face Trainer 和 Accelerate 用标准库的 `json.load` 读同一个文件——直接报错。
# 原文还在纯 JSON 数字的位置写了 `"auto"`：这只有经过 Trainer/Accelerate 才有意义。

# %%
import contextlib
import shlex

from dscourse import package_path
from dscourse.config.cli import main as config_cli

CONFIGS = package_path("configs")


def run_cli(command: str) -> None:
    """Run `python -m dscourse.config ...` in the configs folder, as a reader would type it."""
    print(f"$ python -m dscourse.config {command}")
    with contextlib.chdir(CONFIGS):
        print(f"(exit code {config_cli(shlex.split(command))})\n")


print((CONFIGS / "corpus" / "chapter_zero2.json").read_text())

# %%
run_cli("check corpus/chapter_zero2.json --for hf --world-size 2")
run_cli("check corpus/chapter_zero2.json --for deepspeed --world-size 2")

# %%
run_cli("check corpus/chapter_zero3_offload.json --for hf --world-size 2")

# %% [markdown]
# 修正后的版本（严格 JSON；精度交给 `TrainingArguments` 决定，`bf16` 和 `fp16` 都写 `"auto"`；
# 批大小、梯度裁剪、学习率等也都写 `"auto"`，避免与命令行参数冲突）：

# %%
print((CONFIGS / "ds_config_zero2.json").read_text())
run_cli("check ds_config_zero2.json --for hf --world-size 2")
run_cli("check ds_config_zero3_offload.json --for hf --world-size 2")

# %% [markdown]
# ## 2. 逐键解释
#
# “默认值”一列由 `dscourse.config.keys.deepspeed_default` 从 DeepSpeed 0.19.8 的 pydantic 模型和常量中读出，不是手抄的。
# 注意两个版本差异：`gradient_clipping` 的默认值在 0.19 里是 1.0（老文档写 0）；offload 的 `pin_memory` 默认是 true。

# %%
from dscourse.config.keys import KEY_NOTES, key_groups, key_table
from dscourse.tables import text_table

for title, paths in key_groups(KEY_NOTES):
    print(f"{title}:\n")
    print(text_table(["key", "DeepSpeed 0.19.8 default", "作用", "何时修改", "显存"], key_table(paths),
                     align_right_from=9), end="\n\n")

# %% [markdown]
# 显存一列里最值得记住的是 `reduce_bucket_size`：ZeRO-3 在初始化时就按它分配一个 bf16 规约桶并一直占着。
# 下面在 2 个 CPU rank 上用真实 DeepSpeed 验证：默认值 5e8 与原文的 2e8、1e7 各占多少。

# %%
import json

from dscourse.launch import run_ranks
from dscourse.memory import Setup, estimate, format_bytes

buckets = (None, 2e8, 1e7)
extras = [{} if bucket is None else {"reduce_bucket_size": bucket} for bucket in buckets]
# one launch, three ZeRO-3 engines one after the other in the same two ranks, each with its own bucket size
launch = run_ranks("dscourse.scripts.zero_memory", ["--shape", "gpt2-tiny", "--steps", "1", "--variants", "3", "3", "3",
                                                    "--variant-zero-json", *map(json.dumps, extras)], nproc=2, timeout=600)
rows = []
for bucket, rank0 in zip(buckets, launch.ranks[0]["variants"]):
    counted = rank0["held_after_step"]["cpu"]["buffers"]
    size = int(bucket or Setup(params=1).reduce_bucket_size)
    formula = estimate(Setup(params=rank0["params"], gpus=2, stage=3, reduce_bucket_size=size), "allocated").gpu["buffers"]
    rows.append([f"{size:.0e}" + (" (default)" if bucket is None else ""), format_bytes(counted, "MB"),
                 format_bytes(formula, "MB")])
print(text_table(["reduce_bucket_size", "counted on rank 0", "allocated formula"], rows))

# %% [markdown]
# ### 动哪个旋钮才降得下峰值
#
# 决定会不会 OOM 的是一步里的**峰值**（4.1 节），而峰值落在哪个阶段（前向、反向、优化器 step），决定了哪个键有用。
# 下面用 4.1 节同一个峰值函数（`dscourse.memory.peak`，在 H200 上验证过），对 8 张卡上的 Llama-2-7B（序列 4096、
# micro-batch 1、激活重算）每次只改一个键，其余保持 DeepSpeed 0.19.8 的默认值（`dscourse.memory.knobs`）：

# %%
from dscourse.book import glue
from dscourse.memory.knobs import knob_effects, value_text
from dscourse.memory.peak import PHASE_LABELS
from dscourse.memory.shapes import PRESETS

llama7b = PRESETS["Llama-2-7B"]
rows, effects = [], {}
for stage in (2, 3):
    base, knob_rows = knob_effects(llama7b, 8, stage, micro_batch=1, seq=4096, checkpointing=True)
    rows.append([f"ZeRO-{stage}", "全部默认", format_bytes(base.peak_bytes, "GB"), PHASE_LABELS[base.peak_phase], "—"])
    for r in knob_rows:
        effects[stage, r["knob"], r["value"]] = r
        rows.append([f"ZeRO-{stage}", f"{r['knob']} = {value_text(r['value'])}", format_bytes(r["peak_bytes"], "GB"),
                     PHASE_LABELS[r["peak_phase"]], format_bytes(r["change_bytes"], "GB")])
    glue(f"knob_z{stage}_peak", format_bytes(base.peak_bytes, "GB"))
    glue(f"knob_z{stage}_phase", PHASE_LABELS[base.peak_phase])
print(text_table(["stage", "改动的键", "每卡峰值", "峰值所在阶段", "变化"], rows))
glue("knob_z3_bucket_1e7", format_bytes(-effects[3, "reduce_bucket_size", 10_000_000]["change_bytes"], "GB"))
glue("knob_z3_subgroup", format_bytes(-effects[3, "sub_group_size", 100_000_000]["change_bytes"], "GB"))

# without activation checkpointing the peak moves into backward, where the gathered parameters count
_, no_ckpt = knob_effects(llama7b, 8, 3, micro_batch=1, seq=4096, checkpointing=False)
live = next(r for r in no_ckpt if r["knob"] == "stage3_max_live_parameters")
glue("knob_z3_live_no_ckpt", format_bytes(-live["change_bytes"], "GB"))
print(f"不开激活重算时，ZeRO-3 把 stage3_max_live_parameters 从 1e9 调到 1e8，峰值降 {format_bytes(-live['change_bytes'], 'GB')}"
      f"（峰值在{PHASE_LABELS[live['peak_phase']]}）")

# %% [markdown]
# 读这张表的方法：
# - **这个设置下，ZeRO-2 的峰值在优化器 step**：step 要把本 rank 的梯度分区展平、再转成 fp32，原文调的 `reduce_bucket_size`（2e8）和
#   `overlap_comm`（第二个规约桶）只作用于反向的末尾，峰值一个字节也不变。要降 ZeRO-2 的峰值，得加卡、开优化器 offload 或换 ZeRO-3。
# - **ZeRO-3 的规约桶常驻**：`reduce_bucket_size` 从 5e8 调到原文的 1e7，整段训练少占 2 字节 × 4.9 亿个元素；`sub_group_size`
#   限制 step 一次处理多少参数，从 1e9 调到 1e8 让 step 不再是峰值。
# - `stage3_prefetch_bucket_size` 和 `stage3_max_reuse_distance` 改变的是通信次数和重叠（4.5 节逐字节数过），不是峰值。

# %% [markdown]
# ## 3. `"auto"` 是怎么被填上的
#
# 把修正后的两份配置交给 `TrainingArguments(deepspeed=...)`，用 `torchrun` 在 2 个 rank 上训练两步，然后读出 DeepSpeed 引擎最终使用的值。
# 参数：`per_device_train_batch_size=2`、`gradient_accumulation_steps=1`、`learning_rate=1e-3`、`bf16=True`，其余为默认。

# %%
proven = {}
for name in ("ds_config_zero2.json", "ds_config_zero3_offload.json"):
    proven[name] = run_ranks("dscourse.scripts.train_step", ["--config", str(CONFIGS / name), "--trainer"],
                             nproc=2, timeout=600).ranks[0]
filled = {}  # key -> {config: the value DeepSpeed used where the file said "auto"}
for name, r in proven.items():
    used = {**r["filled"], **{f"optimizer.params.{k}": v for k, v in ((r["filled_optimizer"] or {}).get("params") or {}).items()},
            **{f"zero_optimization.{k}": v for k, v in r["filled_zero"].items() if k != "stage"},
            "bf16.enabled / fp16.enabled": f"{json.dumps(r['bf16'])} / {json.dumps(r['fp16'])}"}
    for key, value in used.items():
        filled.setdefault(key, {})[name] = value if isinstance(value, str) else json.dumps(value)
rows = [[key, *(values.get(name, "(not auto)") for name in proven)] for key, values in filled.items()]
print(text_table(["key (was \"auto\")", *proven], rows, align_right_from=9))

# %%
for name, r in proven.items():
    print(f"{name}: ZeRO-{r['zero_stage']}, {r['optimizer_class']} over {r['basic_optimizer']}, "
          f"bf16={r['bf16']}, {len(r['losses'])} steps, finite losses: {all(0 < x < 20 for x in r['losses'])}")

# %% [markdown]
# 几点观察：
#
# - 批大小三件套来自 `per_device_train_batch_size × gradient_accumulation_steps × world_size`；
# - `gradient_clipping` 取 `max_grad_norm`（默认 1.0），优化器参数取 `learning_rate`、`adam_beta1/2`、`adam_epsilon`、`weight_decay`；
# - ZeRO-3 的三个桶大小由模型的 `hidden_size` 推出：`reduce_bucket_size = h²`、`stage3_prefetch_bucket_size = 0.9·h²`、
#   `stage3_param_persistence_threshold = 10·h`（这个小模型 h = 64）；
# - 配置里没有 `optimizer` 一节时，Trainer 自己创建优化器交给 DeepSpeed。
#
# ## 4. 配置生成器
#
# 选择 stage、offload、精度、集成方式和批大小，右边实时显示严格 JSON，左边显示检查结果。
# （在静态网页里控件需要内核才能响应；在 Colab 或 Jupyter 中运行即可交互。）

# %%
from dscourse.widgets import ConfigBuilder

builder = ConfigBuilder(stage=2, integration="hf", world_size=8)
builder.widget

# %%
# The same builder driven from code: every combination it offers passes the checker.
import itertools

combos = 0
for stage, oo, op, precision, integration in itertools.product((0, 1, 2, 3), ("none", "cpu"), ("none", "cpu"),
                                                               ("bf16", "fp16", "fp32"), ("hf", "deepspeed")):
    if (op == "cpu" and stage != 3) or (oo == "cpu" and stage == 0):
        continue
    builder.set(stage=stage, offload_optimizer=oo, offload_param=op, precision=precision, integration=integration)
    assert builder.config is not None and not [p for p in builder.problems if p.severity == "error"], builder.problems
    combos += 1
print(f"{combos} builder configurations, none rejected by the checker")

# %% [markdown]
# 生成的纯 DeepSpeed 配置同样要真的跑一遍：下面这份就是 `build_config(2, micro_batch=2, world_size=2)` 的输出，
# 经 `deepspeed.initialize` 在 2 个 rank 上训练两步。

# %%
plain = run_ranks("dscourse.scripts.train_step", ["--config", str(CONFIGS / "ds_config_zero2_plain.json")],
                  nproc=2, timeout=600).ranks[0]
print((CONFIGS / "ds_config_zero2_plain.json").read_text())
print(f"ZeRO-{plain['zero_stage']}, {plain['optimizer_class']}, batch {plain['train_batch_size']}, "
      f"{len(plain['losses'])} steps, finite losses: {all(0 < x < 20 for x in plain['losses'])}")

# %% [markdown]
# ## 5. 经典错误：检查器与 DeepSpeed 各说了什么
#
# 下面每一份坏配置，左边是 `dscourse.config` 检查器的结论，右边是 DeepSpeed 0.19.8 自己读这份**文件**的反应：
# `DeepSpeedConfig(路径)` 用 hjson 读文件，并挂了 `object_pairs_hook=dict_raise_error_on_duplicate_keys`
# （`deepspeed/runtime/config.py` 第 444 行，钩子在 `config_utils.py` 第 205 行），同一层里一个键写两次会直接报错。

# %%
import textwrap

from dscourse.config import ConfigReadError, check_config, deepspeed_verdict, read_config

corpus = CONFIGS / "corpus"
expected = json.loads((corpus / "expected.json").read_text())
groups, silent, warned = {}, 0, 0  # a table per part of the config, in the order of the file
for name, info in sorted(expected.items()):
    if not name.startswith("bad_"):
        continue
    text = (corpus / name).read_text()
    try:
        read_config(text, "deepspeed")
    except ConfigReadError:
        continue  # not even hjson: DeepSpeed cannot read these either
    problems = check_config(text, "deepspeed", info.get("world_size"))
    first = problems[0] if problems else None
    verdict = deepspeed_verdict(corpus / name, world_size=info.get("world_size") or 1)  # DeepSpeed reads the file
    silent += verdict.startswith("accepted silently")
    warned += verdict.startswith("accepted with a warning")
    groups.setdefault(info["group"], []).append(
        [name.removeprefix("bad_").removesuffix(".json"), first.severity if first else "—", first.path if first else "—",
         textwrap.shorten(verdict, 72, placeholder=" …")])
for group, rows in groups.items():
    print(f"{group}:")
    print(text_table(["mistake", "checker", "key path", "DeepSpeed 0.19.8 itself"], rows, align_right_from=9), "\n")
print(f"{sum(map(len, groups.values()))} classic mistakes: the checker reports every one; DeepSpeed accepts {silent} of "
      f"them without a word and {warned} with only a warning")
# The same duplicate key handed over as a dict, as the HF Trainer and Accelerate do after their json.load:
dup_text = (corpus / "bad_duplicate_key.json").read_text()
print("\nbad_duplicate_key.json as a file:", deepspeed_verdict(corpus / "bad_duplicate_key.json"))
print("after json.load (Trainer, Accelerate):", json.loads(dup_text)["zero_optimization"], "->",
      deepspeed_verdict(json.loads(dup_text)))

# %% [markdown]
# 表里的 `duplicate_key`（`"stage": 2` 后面又写了 `"stage": 3`）要看配置走哪条路：DeepSpeed 自己读文件时直接报
# `ValueError: Duplicate keys`；Trainer 和 Accelerate 却先用 `json.load` 读同一个文件（`accelerate/utils/deepspeed.py` 第 143 行，
# `HfDeepSpeedConfig`），`json.load` 一声不响地保留后一个值，再把 dict 交给 DeepSpeed，重复键检查就不会发生——上面最后两行就是这两条路。
# 所以检查器对 `--for hf` 和 `--for deepspeed` 都把它当作错误。
#
# 检查器对每一个问题都给出键路径、原因和改法，例如：

# %%
for name in ("bad_zero_optimisation.json", "bad_offload_param_stage2.json", "bad_string_numbers.json"):
    for problem in check_config((corpus / name).read_text(), "deepspeed"):
        print(f"{name}: {problem.severity}: {problem}")
