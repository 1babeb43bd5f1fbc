# %% [markdown]
# # 4.3 实验：Trainer、Accelerate 与 ZeRO-3/Offload 真实运行
#
# 原文这一节只有两段代码：`TrainingArguments(deepspeed="./ds_config_zero2.json")` 和
# `accelerate launch --use_deepspeed --zero_stage 2 train.py`，然后说“不需要修改 Python 代码逻辑”。
# 本 notebook 把它们**真的跑起来**（2 个 CPU rank 上的真实 DeepSpeed 引擎；有 GPU 时按 GPU 规模运行），并补上原文没写、
# 用户最容易耗掉一整天的部分：
#
# 1. `TrainingArguments(deepspeed=...)`：在 `torchrun` 和 `deepspeed` 启动器下各跑一次，看 Trainer 替 `"auto"` 填了什么；
# 2. `accelerate launch --use_deepspeed --zero_stage 2 train.py`：照原文原样执行，再加上进程数，再换成 Accelerate 配置文件；
# 3. ZeRO-3 + CPU offload 真实训练；`HfDeepSpeedConfig` / `zero.Init` 在构造模型时就切分参数，以及它的陷阱：权重初始化落空，loss 异常；
# 4. **等价性**：同一个种子、同一批数据，ZeRO-0（普通数据并行）、1、2、3 的 loss 曲线在 bf16 容差内一致——ZeRO 改变的是显存，不是数学；
# 5. **把权重拿回来**：ZeRO-2/ZeRO-3 检查点里各有什么、多大、保存多久；`zero_to_fp32` 合并后与引擎里的权重逐位相等；
#    `stage3_gather_16bit_weights_on_model_save`；`from_pretrained` 读回；从检查点续训，loss 曲线接上（直接用引擎续训时逐位相同）；
# 6. 配置值与 `TrainingArguments` 不一致时的报错，以及为什么 `"auto"` 能避免它。
#
# 每个实验都由 `dscourse/scripts/` 里的脚本在多个 rank 上运行（每个脚本都有 `--help`），notebook 只负责启动、汇总和检查。

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
transformers.logging.set_verbosity_error()  # quiet transformers' one-time notices in the cells below
transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars with timings

# %% [markdown]
# 所有实验都写在一个临时目录里；`NPROC` 是 rank 数（CPU 上 2 个进程，GPU 上每块 GPU 一个），`SHAPE` 是模型
# （CPU 上是 13.5 万参数的 GPT-2，GPU 上是 GPT-2 350M），都由 `dscourse.scale` 这一个开关决定。

# %%
import inspect
import json
import shutil
import tempfile
from pathlib import Path

from dscourse import package_path
from dscourse.book import glue
from dscourse.integration import rank_error, readable_command
from dscourse.launch import LaunchError, isolated_hf_home, launcher_command, run_ranks
from dscourse.plots import show
from dscourse.tables import text_table

WORK = Path(tempfile.gettempdir()) / "dscourse-4.3"
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir(parents=True)
NPROC, SHAPE = scale.ranks(), scale.train_shape()
CONFIGS = package_path("configs")


def cmd(result) -> str:
    return readable_command(result.command, strip=(WORK,))


# %% [markdown]
# ## 1. `TrainingArguments(deepspeed=...)`：Trainer 替你建 DeepSpeed 引擎
#
# 下面是 `dscourse.scripts.hf_train` 里建 Trainer 的函数，原样打印出来：除了 `deepspeed=args.config` 一个参数，
# 它就是一段普通的 Trainer 代码，没有 `import deepspeed`。`TrainingArguments` 读入 4.2 节修正过的
# `ds_config_zero2.json`，`Trainer` 在 `train()` 开始时用它调用 `deepspeed.initialize`。

# %%
from dscourse.scripts.hf_train import make_trainer

print(inspect.getsource(make_trainer))

# %% [markdown]
# 同一个脚本，分别用 PyTorch 的 `torchrun` 和 DeepSpeed 自己的 `deepspeed` 启动器各跑 4 步。两个启动器的区别：
# `deepspeed` 启动器会给脚本传 `--local_rank=N` 参数（脚本要能接受它），会读 hostfile 做多节点（4.5 节），
# 也会把 `.deepspeed_env` 里的环境变量带到各节点；单机上两者等价。

# %%
zero2 = CONFIGS / "ds_config_zero2.json"
trainer_args = ["--config", str(zero2), "--shape", SHAPE, "--steps", "4", "--micro-batch", "2"]
by_launcher = {launcher: run_ranks("dscourse.scripts.hf_train", trainer_args, nproc=NPROC, launcher=launcher,
                                   timeout=900, out_dir=WORK / f"trainer-{launcher}")
               for launcher in ("torchrun", "deepspeed")}
for result in by_launcher.values():
    print(f"$ {cmd(result)}")
rows = []
for launcher, result in by_launcher.items():
    r = result.ranks[0]
    rows.append([launcher, r["zero_stage"], r["optimizer_class"], r["basic_optimizer"], r["bf16"],
                 r["micro_batch"], r["grad_accum"], r["train_batch_size"], r["filled"]["gradient_clipping"],
                 r["filled_optimizer"]["params"]["lr"]])
print()
print(text_table(["launcher", "ZeRO", "optimizer", "inside it", "bf16", "micro", "accum", "global batch",
                  "clipping", "lr"], rows, align_right_from=99))
same = all(r.ranks[0]["losses"] == by_launcher["torchrun"].ranks[0]["losses"] for r in by_launcher.values())
print(f"\nthe two launchers give the same losses: {same}")
assert same and all(r.ranks[0]["zero_stage"] == 2 for r in by_launcher.values())

# %% [markdown]
# 配置文件里写的是 `"auto"`，DeepSpeed 真正用到的值由 Trainer 从 `TrainingArguments` 填进去：micro-batch 2、
# 梯度累积 1、全局 batch = 2 × 1 × rank 数、梯度裁剪取 `max_grad_norm` 的默认值 1.0、学习率取 `learning_rate`。
# 优化器是 ZeRO 的 `DeepSpeedZeroOptimizer`，里面包着配置里 `"type": "AdamW"` 对应的 DeepSpeed Adam 实现。
#
# 训练过程每一步在 rank 0 上打印一行（这里只取 `step` 行）：

# %%
# NBVAL_IGNORE_OUTPUT
# (the last digits of a CPU bf16 loss depend on the CPU)
print("\n".join(line for line in by_launcher["torchrun"].log.splitlines() if line.startswith("step ")))

# %% [markdown]
# ## 2. `accelerate launch --use_deepspeed --zero_stage 2 train.py`
#
# 这里的 `train.py` 是 `dscourse/scripts/accelerate_train.py`：一个普通的 Accelerate 训练循环
# （`Accelerator()`、`accelerator.prepare(model, optimizer, loader)`、`accelerator.backward(loss)`），自己不提 DeepSpeed。
#
# 先**完全照原文**执行：

# %%
seed_cmd = ["--use_deepspeed", "--zero_stage", "2"]
isolated = isolated_hf_home(WORK / "hf_home")  # no `accelerate config` default file from this machine's user
print("$", readable_command(launcher_command("dscourse.scripts.accelerate_train", ["--shape", SHAPE], None,
                                             "accelerate", launcher_args=seed_cmd)))
try:
    seed_run = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE], nproc=None,
                         launcher="accelerate", launcher_args=seed_cmd, timeout=600, env=isolated,
                         out_dir=WORK / "accelerate-seed", expect_ranks=max(1, torch.cuda.device_count()))
    print(f"ran on {seed_run.ranks[0]['world_size']} GPU processes")
except LaunchError as error:
    print("\n".join(line for line in error.log.splitlines()
                    if "num_processes" in line or line.startswith("AssertionError")))
    seed_error = error

# %% [markdown]
# 原文的命令省略了进程数。没有 `accelerate config` 生成的默认配置文件时，`accelerate launch` 把 `--num_processes`
# 设成**本机 GPU 的数量**（`accelerate/commands/launch.py` 的 `_validate_launch_command`）：在有 GPU 的机器上这正是想要的，
# 在没有 GPU 的机器上它是 0，`torchrun` 随即以一个没有说明的 `AssertionError` 退出。所以命令里最好总写明进程数
# （或者先运行一次 `accelerate config`）。加上 `--num_processes`，再加上 `--mixed_precision bf16`：

# %%
flags = ["--use_deepspeed", "--zero_stage", "2", "--mixed_precision", "bf16", f"--num_processes={NPROC}"]
acc_cli = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE], nproc=NPROC, launcher="accelerate",
                    launcher_args=flags, timeout=600, env=isolated, out_dir=WORK / "accelerate-cli")
print(f"$ {cmd(acc_cli)}\n")
r = acc_cli.ranks[0]
print(f"model after accelerator.prepare: {r['model_class']} (ZeRO stage {r['zero_stage']}, {r['optimizer_class']}), "
      f"{r['world_size']} processes, mixed precision {r['mixed_precision']}")
print("the DeepSpeed config Accelerate generated from the flags:")
print(json.dumps(r["ds_config"], indent=1))
assert r["model_class"] == "DeepSpeedEngine" and r["zero_stage"] == 2

# %% [markdown]
# 两点值得注意：
#
# - 命令行方式下 Accelerate 自己生成 DeepSpeed 配置。它把 `gradient_clipping` 设成了 1.0（没人要求过），
#   并打开 `zero_allow_untested_optimizer`，因为优化器是脚本里的 `torch.optim.AdamW` 而不是配置里声明的；
# - micro-batch 取自 DataLoader 的 `batch_size`，全局 batch = micro-batch × 进程数。
#
# 同样的设置也可以写进 Accelerate 配置文件（`accelerate config` 交互生成的就是这种 YAML）：

# %%
yaml_file = CONFIGS / "accelerate_zero2.yaml"
print(yaml_file.read_text())
acc_file = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE], nproc=NPROC, launcher="accelerate",
                     launcher_args=["--config_file", str(yaml_file), f"--num_processes={NPROC}"], timeout=600,
                     env=isolated, out_dir=WORK / "accelerate-file")
print(f"$ {cmd(acc_file)}\n")
same = acc_file.ranks[0]["losses"] == acc_cli.ranks[0]["losses"]
print(f"config file: {acc_file.ranks[0]['model_class']}, ZeRO stage {acc_file.ranks[0]['zero_stage']}; "
      f"same losses as the flags: {same}")
assert same

# %% [markdown]
# ### 优化器写在 DeepSpeed 配置里：`deepspeed_config_file` 与 `DummyOptim`
#
# 上面两种写法里，优化器是脚本里的 `torch.optim.AdamW`，DeepSpeed 配置由 Accelerate 生成。想让 `ds_config.json` 决定一切
# （优化器、学习率调度、ZeRO 的每个键）时，把它交给 `--deepspeed_config_file`（配置文件里是 `deepspeed_config_file: ds_config.json`），
# 脚本里用 Accelerate 的占位对象 `DummyOptim` 和 `DummyScheduler` 代替真的优化器和调度器——它们只携带参数、学习率和步数，
# `accelerator.prepare` 用这些值填配置里的 `"auto"`，然后由 DeepSpeed 按配置建优化器。下面的配置里 `torch_adam: true`
# 让 DeepSpeed 用 PyTorch 的 AdamW（没有 GPU 时 FusedAdam 编译不了；在 GPU 上删掉这一项）：

# %%
ds_file = CONFIGS / "ds_config_accelerate.json"
print(ds_file.read_text())
ds_flags = ["--use_deepspeed", "--deepspeed_config_file", str(ds_file), "--mixed_precision", "bf16"]
acc_dummy = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE, "--save-state"], nproc=NPROC,
                      launcher="accelerate", launcher_args=[*ds_flags, f"--num_processes={NPROC}"], timeout=600,
                      env=isolated, out_dir=WORK / "accelerate-dummy")
print(f"$ {cmd(acc_dummy)}\n")
r = acc_dummy.ranks[0]
print(f"{r['model_class']}, ZeRO stage {r['zero_stage']}: {r['optimizer_class']} around {r['basic_optimizer']}, "
      f"scheduler {r['scheduler_class']}")
filled = {k: r["ds_config"][k] for k in ("optimizer", "scheduler", "steps_per_print")}
print("what Accelerate filled in:", json.dumps(filled))
print("accelerator.save_state wrote:", *r["saved_state"], sep="\n  ")
assert r["zero_stage"] == 2 and r["scheduler_class"] == "WarmupLR" and "auto" not in json.dumps(r["ds_config"])
assert any(f.endswith("optim_states.pt") for f in r["saved_state"])

# %% [markdown]
# 同一个配置，脚本却传了真正的 `torch.optim.AdamW`（一个进程就够看到）：

# %%
both = run_ranks("dscourse.scripts.accelerate_train", ["--shape", SHAPE, "--optimizer", "torch"], nproc=1,
                 launcher="accelerate", launcher_args=[*ds_flags, "--num_processes=1"], timeout=600, env=isolated,
                 out_dir=WORK / "accelerate-both")
print(f"$ {cmd(both)}\n")
print("accelerator.prepare raised ValueError:", both.ranks[0]["prepare_error"])
assert "DummyOptim" in both.ranks[0]["prepare_error"]

# %% [markdown]
# - 配置里有 `optimizer` 段，代码就必须传 `DummyOptim`；反过来，配置里没有 `optimizer` 却传了 `DummyOptim`，`prepare` 同样报错
#   （`accelerate/accelerator.py` 的 `_prepare_deepspeed`）。调度器同理：配置里有 `scheduler` 段就传 `DummyScheduler`。
# - `DummyOptim(lr=...)` 的学习率和 `weight_decay`（默认 0）填进配置的 `"auto"`；`DummyScheduler` 的 `warmup_num_steps` 默认是 0，
#   DeepSpeed 0.19.6 起拒绝 0，Accelerate 1.15 把它至少设为 1。
# - `accelerator.save_state()` 在 DeepSpeed 下调用的就是引擎的 `save_checkpoint`：每个 rank 的优化器分片、模型状态、`latest`，
#   外加 Accelerate 自己的随机数状态；`accelerator.load_state()` 读回它们。
# - `zero3_init_flag`（命令行 `--zero3_init_flag`）让 `from_pretrained` 在构造时就按 ZeRO-3 切分：Accelerate 为此创建的正是下面
#   第 3 部分讲的 `HfDeepSpeedConfig`。配置是 ZeRO-3 时它默认打开，别的 stage 下被忽略并给出警告（`accelerate/utils/dataclasses.py`
#   的 `DeepSpeedPlugin`）。
# - 上面填好的配置里多了 `"steps_per_print": Infinity`：Accelerate 总是这样关掉 DeepSpeed 自己的每步日志。

# %% [markdown]
# ## 3. ZeRO-3 + CPU offload，真实训练
#
# 4.2 节修正过的 `ds_config_zero3_offload.json`（原文的 ZeRO-3 Offload 配置：去掉注释、`fp16` 改由 Trainer 决定、
# bucket 大小交给 `"auto"`）交给同一个 Trainer 脚本：

# %%
offload = run_ranks("dscourse.scripts.hf_train",
                    ["--config", str(CONFIGS / "ds_config_zero3_offload.json"), "--shape", SHAPE, "--steps", "4"],
                    nproc=NPROC, timeout=900, out_dir=WORK / "trainer-offload")
r = offload.ranks[0]
print(f"$ {cmd(offload)}\n")
print(f"ZeRO stage {r['zero_stage']}, {r['optimizer_class']} around {r['basic_optimizer']}, "
      f"optimizer offloaded: {r['offload_optimizer']}")
print("bucket sizes the Trainer filled from the model's hidden size:", r["filled_zero"])
assert r["zero_stage"] == 3 and r["basic_optimizer"] == "DeepSpeedCPUAdam"
assert all(0 < loss < 20 for loss in r["losses"].values())

# %% [markdown]
# 配置里没有 `optimizer` 段，`offload_optimizer` 又指向 CPU，Trainer 于是让 DeepSpeed 建 `DeepSpeedCPUAdam`：
# fp32 主权重和 Adam 的两份状态都在 CPU 内存里，**参数更新在 CPU 上算**，GPU 只把梯度分片送过去、把更新后的 16 位参数取回来。
# `offload_param` 再把 16 位参数分片也放到 CPU，前向和反向时按模块取到 GPU 上（all-gather），用完即释放。
# 原文说“反向传播时：计算梯度后，立即将参数卸载回 CPU”，这一步说错了：反向时送到 CPU 的是**梯度分片**（转成 fp32 交给 CPU 上的 Adam，
# `stage3.py` 的 `partition_grads` / `_offload_grad_partition_at_boundary`），参数在反向里不变，收集来的完整副本用完只是被释放
# （`partition_parameters.py` 的 `free_param`），不往回拷（4.1 节 notebook 第 2 节逐行引用了源码）。
# 它说的“速度降低 30–50%”则是一个需要测量的数，取决于计算能把 PCIe 传输遮住多少（本 notebook 第 8 节给出 H100 上的实测）。
#
# ### `zero.Init`：模型还没建完就已经切分
#
# 模型大到一张卡放不下时，不能先在每个 rank 上建一个完整模型再交给 DeepSpeed 切分。ZeRO-3 的做法是在构造时就切分：
# `deepspeed.zero.Init` 上下文里，每个子模块一建好，它的参数就被切成分片，每个 rank 只留 1/N。
# Transformers 替你做这件事的条件是：**先**创建带 ZeRO-3 配置的 `TrainingArguments`（或 `HfDeepSpeedConfig`，并保持它存活），
# **再**用 `from_pretrained` / `from_config` 建模型。
#
# 下面用三种方式在 ZeRO-3 配置下建同一个 GPT-2（`dscourse.scripts.zero_init`），看每个 rank 建完时持有多少参数元素、
# 词嵌入的标准差（GPT-2 的初始化是 `initializer_range` = 0.02），以及第一步的 loss（随机初始化的模型应当接近均匀分布的 ln V）：

# %%
from dscourse.models import SHAPES

zero_init_run = run_ranks("dscourse.scripts.zero_init", ["--build", "plain", "from_config", "zero_init", "--shape", SHAPE,
                                                        "--padded", "llama-tiny"],
                          nproc=NPROC, timeout=900, out_dir=WORK / "zero-init").ranks[0]
builds = zero_init_run["builds"]
how = {"plain": "GPT2LMHeadModel(config)", "from_config": "AutoModelForCausalLM.from_config(config)",
       "zero_init": "with deepspeed.zero.Init(): GPT2LMHeadModel(config)"}
sane = {b: abs(r["first_loss"] - r["uniform_loss"]) < 1.0 for b, r in builds.items()}
# (losses as a rounded ratio and the std to one digit: their last digits depend on the CPU's kernels and torch)
print(text_table(["how the model is built", "elements held by rank 0", "of", "wte std", "first loss ≈ ln V?",
                  "first loss / ln V"],
                 [[how[b], f"{r['held_after_build']:,}", f"{r['full_params']:,}", f"{r['wte_std']:.1g}",
                   "yes" if sane[b] else "no", f"{r['first_loss'] / r['uniform_loss']:.0f}"] for b, r in builds.items()]))
print(f"\nln V = ln {SHAPES[SHAPE].vocab:,} = {builds['plain']['uniform_loss']:.2f}")
assert sane == {"plain": True, "from_config": True, "zero_init": False}
assert builds["from_config"]["held_after_build"] * NPROC <= builds["from_config"]["full_params"] + NPROC
glue("zero_init_ratio", f"{builds['zero_init']['first_loss'] / builds['zero_init']['uniform_loss']:.0f}")
glue("uniform_loss", f"{builds['plain']['uniform_loss']:.2f}")

# %% [markdown]
# - `GPT2LMHeadModel(config)` 直接构造：每个 rank 先持有**完整**模型，直到 `deepspeed.initialize` 才切分——模型放不下一张卡时，这一步就已经 OOM；
# - `from_config`（`from_pretrained` 同理）：Transformers 检测到 ZeRO-3，把构造包进 `zero.Init`，每个 rank 只持有 1/N；
#   然后**逐模块收集参数再初始化**（`transformers.integrations.deepspeed.initialize_weights_zero3`），所以初始化正确；
# - 自己写 `with deepspeed.zero.Init():`（DeepSpeed 文档给自定义模型的写法）：切分同样发生，但 Hugging Face 模型的
#   `post_init()` 初始化作用在**已经切空的参数**上，什么也没做；留下的是 PyTorch 的默认初始化：`nn.Embedding` 是标准正态分布
#   （std ≈ 1，而不是 0.02）。词嵌入与输出层共享权重，logits 被放大几十倍，第一步 loss 是 ln V 的好几倍。
#   训练不会报错，只会从一个糟糕的起点开始。**检查第一步 loss 是否接近 ln V**，是发现这类问题最便宜的办法；
#   自己用 `zero.Init` 时，初始化要放进 `deepspeed.zero.GatheredParameters(..., modifier_rank=0)` 里做。
#
# 同一次运行还用一个**带 padding token** 的小 Llama（`pad_token_id = 0`；Gemma-2、Phi-3 和许多 Llama 的 `config.json`
# 都有这一项）再试两种写法。有了 `padding_idx`，Transformers 的 `_init_weights` 要把词嵌入的那一行清零
# （`init.zeros_(module.weight[module.padding_idx])`，transformers 5.23 `modeling_utils.py`）；
# 在光秃秃的 `zero.Init` 里，这个参数已经被切成空张量，那一行根本不存在：

# %%
padded = zero_init_run["padded"]["builds"]
def outcome(r):
    if "error" in r:
        return r["error"]
    return "built; first loss ≈ ln V: " + ("yes" if abs(r["first_loss"] - r["uniform_loss"]) < 1.0 else "no")


print(text_table(["how the model is built (llama-tiny, pad_token_id 0)", "what happened"],
                 [[how[b].replace("GPT2LMHeadModel", padded[b]["model_class"]), outcome(padded[b])]
                  for b in ("from_config", "zero_init")]))
assert "error" not in padded["from_config"] and padded["zero_init"]["error"].startswith("IndexError")

# %% [markdown]
# 这一次不是悄悄变差，而是直接报错：`IndexError: index 0 is out of bounds for dimension 0 with size 0`。
# 报错本身不指向 ZeRO，很容易让人以为是词表或 tokenizer 的问题。解决办法同上：让 Transformers 来建模型
# （`from_config` / `from_pretrained`，前面先有 ZeRO-3 配置），它在收集好的完整参数上初始化；
# 自己的模型非用 `zero.Init` 不可时，把初始化放进 `GatheredParameters` 里。
#
# ### 主机内存：每个 rank 都加载一遍完整模型，会不会撑爆内存？
#
# 一台 8 卡的机器上，8 个进程各自 `from_pretrained` 同一个 70B 的检查点：老经验说主机内存要放下 8 份模型，所以要用 `zero.Init`
# 或 `low_cpu_mem_usage=True`。transformers 5 改了三件事（`transformers/modeling_utils.py`）：`dtype` 的默认值是 `"auto"`
# （检查点自己的精度；transformers 4 默认转成 float32，见 transformers#36567）；`low_cpu_mem_usage` 被接受然后忽略
# （模型总是先建在 meta 设备上）；safetensors 文件用 `safe_open` **内存映射**。`benchmarks/load_memory.py` 在 2 个和 4 个 CPU rank 上
# 用三种方式加载同一个 bf16 检查点（5800 万参数，116 MB；`dscourse.scripts.load_memory`），每个 rank 每毫秒读一次自己的
# `/proc/self/status`，记下加载期间私有内存（`RssAnon`）和文件映射（`RssFile`）比加载前多出的峰值。内存数字随机器的分配器而变，
# 所以这里读的是提交的测量文件，不是当场的运行：

# %%
from dscourse.calibration import DATA, load_memory_runs
from dscourse.memory import format_bytes


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


load_prov, load_rows = load_memory_runs()
way = {("every_rank", "auto"): "every rank, file's dtype", ("every_rank", "float32"): "every rank, to float32",
       ("zero3", "auto"): "HfDeepSpeedConfig (ZeRO-3)"}
print(f"{load_prov['shape']}: {load_prov['params']:,} parameters, {mb(load_prov['file_bytes'])} file; "
      f"torch {load_prov['torch']}, transformers {load_prov['transformers']}, DeepSpeed {load_prov['deepspeed']}\n")
print(text_table(["ranks", "how every rank loads", "rank 0 private", "rank 0 mapped", "others private",
                  "params held each"],
                 [[r["world_size"], way[(r["how"], r["load_dtype"])], mb(r["rank0_private"]), mb(r["rank0_mapped"]),
                   mb(r["others_private"]), f"{mb(r['held_bytes'])} {r['held_dtype']}"] for r in load_rows],
                 align_right_from=2))
same = [r for r in load_rows if r["how"] == "every_rank" and r["load_dtype"] == "auto"]
converted = [r for r in load_rows if r["load_dtype"] == "float32"]
zero3 = [r for r in load_rows if r["how"] == "zero3"]
assert all(r["rank0_private"] < 0.05 * load_prov["file_bytes"] for r in same)  # views of the mapped file
assert all(abs(r["rank0_private"] - 2 * load_prov["file_bytes"]) < 0.05 * load_prov["file_bytes"] for r in converted)
assert all(r["others_mapped"] < 0.05 * load_prov["file_bytes"] < r["rank0_mapped"] for r in zero3)
gpu_prov, gpu_rows = load_memory_runs(DATA / "gpu_load_memory_h200.json")
print(f"\nOn one {gpu_prov['gpu'].split(',')[0]} (one rank, {gpu_prov['shape']}, {mb(gpu_prov['file_bytes'])} "
      "file), rank 0's private host memory: "
      + "; ".join(f"{way[(r['how'], r['load_dtype'])]} +{mb(r['rank0_private'])}" for r in gpu_rows))

# %% [markdown]
# - **在检查点自己的精度里加载，每个 rank 的私有内存几乎不增加**：参数就是映射文件的视图（读到哪一页才载入哪一页），
#   文件在节点的页缓存里只有一份，所有 rank 共用，内存紧张时内核可以丢掉它。
# - **加载时转换精度，每个 rank 就有一份私有副本**（bf16 文件转成 float32：每个 rank 多出两倍于文件的私有内存）。这才是
#   “每个 rank 一份模型”的真正来源：transformers 4 的默认行为，或者 `dtype=torch.float32`。
# - **`HfDeepSpeedConfig`（ZeRO-3）**：只有 rank 0 映射文件，其他 rank 连文件都不读；每个 rank 只持有 1/N 的分区。但在 CPU rank 上，
#   “设备”就是主机内存，`zero.Init` 逐个模块先建出完整参数再切分、加载时逐个模块收集再分发，这些临时张量用完就还了，分配器却不一定
#   还给操作系统，所以上表里它的私有内存反而更高。在 GPU 上，这些张量和分区都在显存里：H200 上那一行里它只多了几 MB。
#
# 放大到 8 个 rank、70B 参数（bf16 检查点 140 GB）的一台机器（`dscourse.memory.loading.host_when_loading`）：

# %%
from dscourse.memory.loading import host_when_loading

for how_, label in (("every_rank", "every rank, file's dtype"), ("every_rank_converting", "every rank, to float32"),
                    ("zero3", "HfDeepSpeedConfig (ZeRO-3)")):
    node = host_when_loading(70e9, 8, how_)
    print(f"{label:28s} private {format_bytes(node.private_per_node):>8s} on the node, "
          f"page cache {format_bytes(node.page_cache)} (shared, reclaimable)")
glue("load_converting_70b", f"{format_bytes(host_when_loading(70e9, 8, 'every_rank_converting').private_per_node)} 私有内存")
glue("load_zero3_gpu", mb(next(r for r in gpu_rows if r["how"] == "zero3")["rank0_private"]))

# %% [markdown]
# 所以在 transformers 5 上，别在 `from_pretrained` 里转换精度（用默认的 `dtype="auto"`，需要 fp32 主权重时交给 DeepSpeed 去建），
# 主机内存就不会随 rank 数翻倍；`zero.Init` / `HfDeepSpeedConfig` 要解决的是另一个问题：别让每张 **GPU** 先放下一份完整模型。
#
# ## 4. 等价性：ZeRO 改变显存，不改变数学
#
# ZeRO-1/2/3 切分的是优化器状态、梯度和参数的**存放位置**，每一步算出来的更新应当和普通数据并行（ZeRO-0）相同。
# 下面用 `deepspeed.initialize`（`dscourse.scripts.train_run`）在同一种子、同一批数据上把同一个模型训练 12 步
# （每个 rank 循环使用 4 个 batch，所以 loss 会下降），stage 0、1、2、3 各一次；第 12 步各存一次检查点，ZeRO-2/3 在第 6 步
# 再存一次（第 5 节从那里续训），最后把引擎里的完整权重写出来，供第 5 节核对。检查点只存要用的：在 GPU 规模（GPT-2 350M）上
# 每个检查点约 5 GB。

# %%
from dscourse.integration import BF16_RTOL, FP32_RTOL, losses, max_rel_diff, train_stages

STEPS = 12
SAVE_AT = {0: (12,), 1: (12,), 2: (6, 12), 3: (6, 12)}
bf16_runs = train_stages(WORK / "stages", (0, 1, 2, 3), "bf16", steps=STEPS, shape=SHAPE, nproc=NPROC,
                         save_at=SAVE_AT, dump_weights=True)
print(text_table(["stage", "optimizer DeepSpeed built"], [[s, r["optimizer_class"]] for s, r in bf16_runs.items()],
                 align_right_from=2))
gap_bf16 = max(max_rel_diff(r["losses"], bf16_runs[0]["losses"]) for r in bf16_runs.values())
gap_zero = max(max_rel_diff(bf16_runs[s]["losses"], bf16_runs[1]["losses"]) for s in (2, 3))
print(f"\nZeRO-1/2/3 among themselves: largest relative gap {'below 1e-3' if gap_zero < 1e-3 else f'{gap_zero:.1e}'}; "
      f"to ZeRO-0: below the bf16 tolerance {BF16_RTOL:.4f}: {gap_bf16 < BF16_RTOL}")
assert gap_bf16 < BF16_RTOL, gap_bf16
assert losses(bf16_runs[0])[STEPS] < losses(bf16_runs[0])[1] - 0.1  # it learns
glue("bf16_rtol", f"{BF16_RTOL:.4f}")

# %% [markdown]
# 逐步的 loss 和曲线在下一格。bf16 的数值取决于 CPU 的 bf16 kernel（第二位小数在别的机器上就可能不同），所以上一格只打印结论：

# %%
# NBVAL_IGNORE_OUTPUT
# (bf16 losses depend on the CPU's bf16 kernels)
from dscourse.plots import loss_figure

print(text_table(["step", *(f"ZeRO-{s}" for s in bf16_runs)],
                 [[step, *(f"{losses(r)[step]:.2f}" for r in bf16_runs.values())] for step in range(1, STEPS + 1, 2)]))

show(loss_figure({f"ZeRO-{s}": r["losses"] for s, r in bf16_runs.items()},
                 "Same seed, same data: loss per step at each ZeRO stage (bf16)", "zero-equivalence"))

# %% [markdown]
# 四条曲线在图上几乎重合。数字上（上面最后一行）：ZeRO-1、2、3 彼此几乎相同；它们与 ZeRO-0 的最大相对差
# 小于 bf16 的机器精度 2⁻⁷ ≈ 0.0078（断言用的容差）。差别从哪来？表里第二列给出了答案：bf16 下的 ZeRO-0
# 不是 ZeRO 优化器，而是 `FP16_UnfusedOptimizer`（DeepSpeed 在 `_do_optimizer_sanity_check` 里对“bf16 模型 + bf16 梯度累加 + 不开 ZeRO”
# 选的 `DDP_BFLOAT16` 路径），ZeRO-1/2 用 `DeepSpeedZeroOptimizer`，ZeRO-3 用 `DeepSpeedZeroOptimizer_Stage3`。
# 同一个数学，不同的梯度归约、范数和裁剪实现；bf16 里求和顺序一变，末位就不同，而训练会把末位差异逐步放大。
# 换成 fp32 再比一次，差别应当消失到 fp32 的舍入水平：

# %%
fp32_runs = train_stages(WORK / "stages", (0, 3), "fp32", steps=STEPS, shape=SHAPE, nproc=NPROC)
gap_fp32 = max_rel_diff(fp32_runs[3]["losses"], fp32_runs[0]["losses"])
print(f"fp32: ZeRO-3 vs ZeRO-0, largest relative loss gap over {STEPS} steps below {FP32_RTOL:g}: "
      f"{gap_fp32 < FP32_RTOL}")
assert gap_fp32 < FP32_RTOL

# %% [markdown]
# ## 5. 把权重拿回来：检查点、`zero_to_fp32`、续训
#
# ### 检查点里有什么
#
# `engine.save_checkpoint(dir, tag)` 在每个 rank 上**同时**写自己的分片。文件分两类：`*model_states.pt`（模型权重和引擎状态）
# 与 `*optim_states.pt`（fp32 主权重分片 + Adam 的两份状态，每个 rank 一个）。下表是第 12 步的检查点：

# %%
# NBVAL_IGNORE_OUTPUT
# (save times vary from run to run)
from dscourse.integration import checkpoint_sizes

tag = f"step{STEPS}"
sizes = {s: checkpoint_sizes({k: v for k, v in r["checkpoint_files"].items() if k.startswith(tag + "/")})
         for s, r in bf16_runs.items()}
print(text_table(["stage", "files", "model_states KB", "optim_states KB", "save (s)"],
                 [[s, sum(1 for k in r["checkpoint_files"] if k.startswith(tag + "/")),
                   f"{sizes[s]['model_states'] / 1e3:.0f}", f"{sizes[s]['optim_states'] / 1e3:.0f}",
                   f"{r['save_seconds'][str(STEPS)]:.3f}"] for s, r in bf16_runs.items()]))

# %%
model_kb = {s: sizes[s]["model_states"] / 1e3 for s in sizes}
optim_kb = {s: sizes[s]["optim_states"] / 1e3 for s in sizes}
print(f"ZeRO-3 model_states are {model_kb[2] / model_kb[3]:.0f}x smaller than ZeRO-2's; "
      f"the optimizer shards are the same size (within 1%): {abs(optim_kb[3] - optim_kb[2]) / optim_kb[2] < 0.01}")
assert model_kb[3] * 5 < model_kb[2] and abs(optim_kb[3] - optim_kb[2]) / optim_kb[2] < 0.01

# %% [markdown]
# ZeRO-1/2 的 `mp_rank_00_model_states.pt` 里有一份完整的 16 位权重（rank 0 写），优化器状态按 rank 切成
# `*optim_states.pt`；ZeRO-0 没有切分，rank 0 把权重和整个优化器（fp32 主权重 + Adam 状态）都写进这一个文件。ZeRO-3 每个 rank 写一个
# `zero_pp_rank_N_mp_rank_00_model_states.pt`，里面**没有**权重，只有引擎状态——参数本来就是切开的，
# 完整的权重只以 fp32 主权重分片的形式存在于 `optim_states` 里。这就是“ZeRO-3 下 `pytorch_model.bin` 很小、
# 或者根本没有”的原因：要拿到能用的权重，必须把各 rank 的分片合并。
#
# 原文说“开启 ZeRO-3 后，模型保存速度会变慢（需要从各 GPU 收集参数）”。`save_checkpoint` 本身不收集任何东西：
# 每个 rank 写自己的分片（上表的保存时间在这个规模下都是毫秒级）。慢的是**要求保存完整 16 位模型**的那一步：
# `stage3_gather_16bit_weights_on_model_save: true` 时，`trainer.save_model()` 要把所有参数 all-gather 到 rank 0 再写盘。
#
# ### `zero_to_fp32`：把分片合并成一个 state dict
#
# DeepSpeed 在每个检查点目录里放了一份 `zero_to_fp32.py`。它在 CPU 上读所有 rank 的分片，拼回完整的 fp32 权重，
# 不需要 GPU，也不需要当初的 rank 数。合并结果与训练结束时引擎里的权重比较（`safe_get_full_fp32_param` 从各 rank 收集的 fp32 主权重；
# 以及模型计算用的 bf16 权重）：

# %%
from dscourse.integration import compare_weights, consolidate, run_zero_to_fp32

rows = []
for s in (1, 2, 3):
    out = Path(bf16_runs[s]["dir"]) / "out"
    merged = consolidate(Path(bf16_runs[s]["dir"]) / "ckpt", tag=tag)
    master = compare_weights(merged, torch.load(out / "weights_fp32.pt"))
    module = compare_weights(merged, torch.load(out / "weights_module.pt"))
    rows.append([f"ZeRO-{s}", f"{master['equal']}/{master['tensors']}", f"{module['equal']}/{module['tensors']}",
                 ", ".join(master["extra"]) or "-"])
    assert master["equal"] == master["tensors"] and module["equal"] == module["tensors"]
print(text_table(["checkpoint", "= fp32 master weights", "= bf16 weights (after cast)", "extra keys"], rows,
                 align_right_from=99))

# %% [markdown]
# 每个张量都**逐位相等**。多出来的 `lm_head.weight` 是和 `transformer.wte.weight` 共享的那份权重，state dict 里按名字各列一次。
#
# 读者实际会做的是在命令行上运行检查点里那份脚本，得到一个能直接加载的文件，然后在**纯 PyTorch**里用它：

# %%
from dscourse.integration import ZeroToFp32Error

ckpt3 = Path(bf16_runs[3]["dir"]) / "ckpt"
print(f"$ python {ckpt3.relative_to(WORK)}/zero_to_fp32.py {ckpt3.relative_to(WORK)} consolidated --tag {tag}")
files = run_zero_to_fp32(ckpt3, WORK / "consolidated", tag=tag)
print("wrote:", ", ".join(f"{name} ({size / 1e3:.0f} KB)" for name, size in files.items()))

from dscourse.models import build_model, synthetic_batch

plain = build_model(SHAPE)  # a plain PyTorch model: no DeepSpeed, no process group
state = torch.load(WORK / "consolidated" / "pytorch_model.bin", weights_only=True)
plain.load_state_dict(state, strict=True)  # raises if a key is missing or extra
engine_master = torch.load(Path(bf16_runs[3]["dir"]) / "out" / "weights_fp32.pt")
check = compare_weights(dict(plain.named_parameters()), engine_master)
print(f"plain model.load_state_dict(strict=True): ok; equal to the engine's fp32 weights: "
      f"{check['equal']}/{check['tensors']} tensors")
with torch.no_grad():
    ids = synthetic_batch(SHAPE, 2, 0)
    reloaded_loss = plain(input_ids=ids, labels=ids).loss.item()
    print(f"the reloaded model's loss on the first training batch is below the run's first loss: "
          f"{reloaded_loss < losses(bf16_runs[3])[1]}")
assert check["equal"] == check["tensors"]

print("\n$ python .../zero_to_fp32.py ... --safe_serialization")
try:
    run_zero_to_fp32(ckpt3, WORK / "consolidated-safetensors", tag=tag, safe_serialization=True)
except ZeroToFp32Error as error:
    print(error)

# %% [markdown]
# `zero_to_fp32.py` 默认写 `pytorch_model.bin`（`torch.save` 的格式），`strict=True` 加载成功，说明每个键都对上了。
# 加上 `--safe_serialization` 想得到 `model.safetensors` 时，它在这个模型上**失败**：GPT-2 的输出层与词嵌入共享同一块存储，
# safetensors 拒绝保存共享内存的张量（DeepSpeed 0.19.8 的 `zero_to_fp32.py` 没有去重）。词嵌入共享的模型（GPT-2、许多小模型）
# 用默认格式，或者加载进模型后用 `save_pretrained` 另存。
#
# ### 续训：从第 6 步的检查点接着跑
#
# `engine.load_checkpoint(dir, tag)` 恢复权重、优化器状态、学习率调度器和步数（我们把步数放在 `client_state` 里）。
# 从第 6 步的检查点续训到第 12 步，与一口气训练的曲线比较：

# %%
from dscourse.integration import resume

rows, identical = [], True
for s in (2, 3):
    resumed = resume(bf16_runs[s]["dir"], "step6", STEPS, shape=SHAPE, nproc=NPROC)
    straight = losses(bf16_runs[s])
    again = losses(resumed)
    identical &= all(again[k] == straight[k] for k in again)
    same = sum(again[k] == straight[k] for k in again)
    rows.append([f"ZeRO-{s}", f"{min(again)}-{max(again)}", f"{same} of {len(again)}"])
print(text_table(["stage", "steps resumed from step 6", "losses equal to the uninterrupted run"], rows))
print(f"\nresumed losses equal the uninterrupted ones bit for bit, steps 7-{STEPS}: {identical}")
assert identical
for r in bf16_runs.values():  # done with the checkpoints: at GPU scale they fill ~30 GB of disk
    shutil.rmtree(Path(r["dir"]) / "ckpt")

# %% [markdown]
# 续训的每一步 loss 都与不中断的训练**完全相同**（不只是接近）：权重、Adam 状态、步数都恢复了，数据按步数确定。
# 表里比较的是同一台机器上的两次运行：loss 的末位在不同 CPU 上会不同，但两次运行永远相同。
#
# 在 GPU 上“完全相同”不是白来的：cuBLAS 的工作区、嵌入层反向的原子加、cuDNN 的算法选择、融合注意力的反向，默认都可以按任意顺序累加，
# 两次同样的运行末位就会不同。本课程的训练脚本开头都调用 `dscourse.scripts.deterministic()`：设置 `CUBLAS_WORKSPACE_CONFIG`、
# `torch.use_deterministic_algorithms(True, warn_only=True)`、`torch.backends.cudnn.deterministic = True`，并让注意力走数学实现
# （关掉 flash / memory-efficient / cuDNN 三种融合内核）。最后一条是在 H100 上量出来的：torch 在那里为 GPT-2 选 cuDNN 的融合注意力，
# 它的反向会警告“cuDNN Attention defaults to a non-deterministic algorithm”，两次完全相同的 GPT-2 350M 运行 loss 相差到 1.5×10⁻⁵（相对）；
# 换成数学实现后两次逐位相同，这一节的续训和第 2 节的几组对比也才逐位相同（`dscourse/data/gpu_repeatability.json` 的 `repeats`）。
# 数学实现要把整个注意力矩阵写进显存，通常比融合内核慢、占的显存也多（这里没有单独测），所以吞吐的基准测试（第 8 节）不调用它。自己的训练要可复现，也要打开这些开关
# （Trainer 的对应参数是 `full_determinism=True`）；只要结果在 bf16 的舍入范围内一致就够的训练，不需要付这个代价。
#
# ### 用 Trainer 保存：`stage3_gather_16bit_weights_on_model_save`
#
# Trainer 的 `save_model()` 在 ZeRO-3 下的行为取决于这个键。先把 ZeRO-3 + offload 配置里的它设成 `false`，每 3 步存一个检查点，
# 训练 6 步后 `save_model()`；然后删掉第 6 步的检查点，用原配置（`true`）从第 3 步续训，再 `save_model()`：

# %%
from dscourse.integration import max_rel_diff

cfg = json.loads((CONFIGS / "ds_config_zero3_offload.json").read_text())
cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
no_gather = WORK / "zero3_offload_no_gather.json"
no_gather.write_text(json.dumps(cfg, indent=1))
run_dir = WORK / "trainer-ckpt"
common = ["--shape", SHAPE, "--steps", "6", "--save-steps", "3", "--output-dir", str(run_dir)]
first = run_ranks("dscourse.scripts.hf_train", ["--config", str(no_gather), *common,
                                                "--save-model", str(WORK / "saved-false")],
                  nproc=NPROC, timeout=900, out_dir=WORK / "trainer-first").ranks[0]
print("checkpoints:", sorted(p.name for p in run_dir.iterdir()))
print("checkpoint-3 holds:", sorted(p.name for p in (run_dir / "checkpoint-3").iterdir()))
print("\nsave_model() with stage3_gather_16bit_weights_on_model_save=false wrote:")
print("  " + ", ".join(sorted(first["saved_files"])))
weights_files = ("model.safetensors", "pytorch_model.bin", "model-0", "pytorch_model-0")
assert not any(name.startswith(weights_files) for name in first["saved_files"])

shutil.rmtree(run_dir / "checkpoint-6")
second = run_ranks("dscourse.scripts.hf_train", ["--config", str(CONFIGS / "ds_config_zero3_offload.json"), *common,
                                                 "--resume", "--save-model", str(WORK / "saved-true"), "--dump-weights"],
                   nproc=NPROC, timeout=900, out_dir=WORK / "trainer-second").ranks[0]
print("\nsave_model() with stage3_gather_16bit_weights_on_model_save=true wrote:")
print("  " + ", ".join(sorted(second["saved_files"])))
gap = max_rel_diff(second["losses"], first["losses"])
print(f"\nTrainer resumed from checkpoint-3: steps 4-6 agree with the first run within 1e-5 (relative): {gap < 1e-5}")
assert gap < 1e-5 and "model.safetensors" in second["saved_files"]

# %% [markdown]
# - `false`：`save_model()` 写不出权重文件。Transformers 记一条警告，改为在输出目录里存一份完整的 DeepSpeed 检查点
#   （`global_step6/` 加 `zero_to_fp32.py`），权重要用 `zero_to_fp32` 取出（`transformers/trainer.py` 第 4114–4122 行）。
#   Transformers 4.33 之前的版本在这里会留下一个几乎是空的 `pytorch_model.bin`——这就是很多人遇到的“模型文件只有几 KB”；
#   删掉这个占位文件的是 2023 年 8 月合并的 transformers PR #25817，不是 transformers 5 的新行为；
# - `true`：各 rank 的 16 位参数 all-gather 到 rank 0，写成 `model.safetensors`，可以直接 `from_pretrained`；
# - Trainer 的 `checkpoint-N/` 里同时有 DeepSpeed 分片（`global_stepN/`）、`trainer_state.json`、调度器和各 rank 的随机数状态，
#   `resume_from_checkpoint` 靠它们接着训练。经 Trainer 续训后的第一次参数更新，在有些续训点上与不中断的训练差 1e-6 量级
#   （上面直接用 `engine.load_checkpoint` 的续训则逐位相同），远小于 bf16 本身的舍入：所以这里比较 Trainer 续训的曲线时
#   用 1e-5 的相对容差，而不要求逐位相等。
#
# 最后用 `from_pretrained` 读回 `true` 存下的模型，与训练结束时引擎里的 bf16 权重比较：

# %%
from transformers import AutoModelForCausalLM

from dscourse.integration import compare_weights

reloaded = AutoModelForCausalLM.from_pretrained(WORK / "saved-true")
engine_bf16 = torch.load(WORK / "trainer-second" / "weights_module.pt")
check = compare_weights(dict(reloaded.named_parameters()), engine_bf16)
print(f"from_pretrained: dtype {reloaded.dtype}, {check['equal']}/{check['tensors']} tensors equal the engine's")
assert check["equal"] == check["tensors"]

# %% [markdown]
# ## 6. 配置与 `TrainingArguments` 不一致
#
# 原文的避坑指南说“`train_batch_size` 设为 `"auto"`，避免冲突”。冲突是什么样子？把 ZeRO-2 配置里的
# `train_micro_batch_size_per_gpu` 写成 4、`gradient_clipping` 写成 0.5，而 `TrainingArguments` 里
# `per_device_train_batch_size=2`、`max_grad_norm` 保持默认 1.0：

# %%
cfg = json.loads((CONFIGS / "ds_config_zero2.json").read_text())
cfg.update({"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 0.5})
mismatch = WORK / "mismatch.json"
mismatch.write_text(json.dumps(cfg, indent=1))
try:
    run_ranks("dscourse.scripts.hf_train", ["--config", str(mismatch), "--shape", SHAPE, "--micro-batch", "2",
                                            "--steps", "1"], nproc=NPROC, timeout=600, out_dir=WORK / "mismatch")
    raise AssertionError("the Trainer accepted a config that contradicts TrainingArguments")
except LaunchError as error:
    print(rank_error(error.log, "Please correct the following DeepSpeed config", "'auto'"))

# %% [markdown]
# Transformers 在 `TrainingArguments` 里填 `"auto"`，也**核对**写死的值：只要某个值与对应的参数不同，
# 就在建引擎之前报 `ValueError`，列出每一处不一致（`transformers/integrations/deepspeed.py` 的
# `HfTrainerDeepSpeedConfig.trainer_config_finalize`）。这样一来，配置文件和命令行参数不会各说各话。
# 所有由 Trainer 决定的键（batch、梯度累积、裁剪、优化器和调度器的超参数、精度）写成 `"auto"`，就只有一个地方需要改。
#
# ## 7. 本节用到的脚本
#
# 每个脚本都可以单独用任何启动器运行，`--help` 说明参数：

# %%
import importlib

for name in ("hf_train", "accelerate_train", "train_run", "zero_init"):
    module = importlib.import_module(f"dscourse.scripts.{name}")
    print(f"python -m dscourse.scripts.{name:<17} {module.__doc__.splitlines()[0]}")

# %% [markdown]
# ## 8. GPU 实测：offload 的代价、ZeRO-3 的速度、保存时间
#
# 上面的 CPU 实验证明“对不对”，证明不了“快不快”。原文的三个性能说法——“Offload 让训练速度降低 30–50%（受限于 PCIe 带宽）”、
# “ZeRO-2 是目前性价比最高的选择”、“开启 ZeRO-3 后模型保存速度会变慢”——在一张 H100 上测量过，数据和出处在
# `dscourse/data/`（`benchmarks/throughput_gpu.py`、`benchmarks/checkpoint_gpu.py` 写的），下面的表和图由 `dscourse.gpu_results` 从这些文件生成。
# 注意这是**单卡**：ZeRO 没有跨卡通信，测到的是 offload 的 PCIe 传输和 CPU 上的 Adam，以及 ZeRO-3 切分/收集参数的簿记开销。
#
# 吞吐（tokens/s），GPT-2 350M，序列 1024，bf16，micro-batch 从 1 到 16，最后一列是 micro-batch 16 × 梯度累积 4；
# 几台机器都测过的点取它们的中位数（`machines` 列是测过这一行的机器数）：

# %%
from dscourse import gpu_results, plots

prov = gpu_results.load_throughput()["provenance"]
print(f"{prov['gpu']}; torch {prov['torch']}, DeepSpeed {prov['deepspeed']}; {prov['date']}; {prov['shape']}, "
      f"seq {prov['seq']}, {prov['precision']}\n")
print(gpu_results.throughput_table())
stages = gpu_results.stage_comparison()["relative_to_zero2"]
print(f"\nat {gpu_results.stage_comparison()['tokens_per_step']:,} tokens per step: ZeRO-0 {stages['ZeRO-0']:.2f}x, "
      f"ZeRO-1 {stages['ZeRO-1']:.2f}x, ZeRO-3 {stages['ZeRO-3']:.2f}x the tokens/s of ZeRO-2")
glue("gpu_zero3_vs_zero2", f"{100 * (1 - stages['ZeRO-3']):.0f}%")

# %% [markdown]
# 每个 offload 点与同一 stage、同一 micro-batch 不 offload 的吞吐相比，慢了多少（只比同一台机器上测的两次运行；`*` 标出落在原文 30–50% 里的点）：

# %%
claim = gpu_results.offload_claim(same_lease_only=True)  # each offload run beside a baseline from the same machine
print(gpu_results.offload_slowdown_table())
print(f"\nSame-machine comparisons: {claim['points_in_claim']} of {claim['points']} fall in the seed's 30-50%. "
      "Range per variant:")
for name, (lo, hi) in claim["ranges"].items():
    print(f"  {name:<48} {100 * lo:3.0f}% to {100 * hi:3.0f}% slower")
figures = gpu_results.key_figures()
for key in ("offload_zero2_unpinned_range", "offload_zero2_pinned_range", "offload_zero3_pinned_range",
            "offload_zero2_1_3b_pinned_range", "ckpt_zero2_gb", "ckpt_zero3_gb"):
    glue(f"gpu_{key}", figures[key])
glue("gpu_offload_in_claim", f"{claim['points_in_claim']} / {claim['points']}")

# %%
show(plots.slowdown_figure(), "offload-slowdown")

# %% [markdown]
# - “慢 30–50%”只在部分情形成立。决定性的是 `pin_memory`：不锁页时 CPU↔GPU 拷贝要先经过一块临时的锁页缓冲，也不能与计算重叠，
#   offload 的代价远超 50%；锁页（原文配置里的 `"pin_memory": true`）时小得多，而且每步 token 越多，GPU 计算越能遮住传输和 CPU 上的 Adam，
#   代价越小（上表的区间）。每个点只是 4–6 个计时步的中位数，同一设置在不同机器上相差约 10%：看趋势，不要读小数（测量方法见书末附录）。
#   `dscourse.config.build_config` 为 CPU 上的演示把 `pin_memory` 设成了 `false`；在 GPU 上请用 `true`（它多占锁页的主机内存）。
# - ZeRO-2 和 ZeRO-0/1 在测量噪声内一样快；ZeRO-3 在单卡上就明显更慢（上面最后一行；切分和收集参数的钩子在每个模块上都要运行）。
#   这**不能**用来支持原文“ZeRO-2 性价比最高”：那是多卡的说法（省下的显存对比多出的通信），而单卡上 ZeRO-1/2 什么也不切分、
#   不省显存，也没有通信。单卡数据只说明 ZeRO-2 的簿记不花时间、ZeRO-3 的钩子本身就有代价；多卡上两者的通信量见 4.5 节
#   （CPU rank 上数出的字节），本书没有多卡吞吐的实测。按显存公式和通信量权衡：放得下就用 ZeRO-2，放不下再上 ZeRO-3。
#
# 保存检查点，GPT-2 1.3B（每个文件写完后再 `os.sync()` 一次，把操作系统缓存里的数据真正落盘的时间单独列出）：

# %%
ck = gpu_results.load_checkpoint()["provenance"]
print(f"{ck['gpu']}; DeepSpeed {ck['deepspeed']}; {ck['date']}; {ck['shape']}\n")
print(gpu_results.checkpoint_table())
saves = gpu_results.checkpoint_summary()
glue("gpu_save_zero2", f"{saves['save_checkpoint']['ZeRO-2']['seconds']:.0f}")
glue("gpu_save_zero3", f"{saves['save_checkpoint']['ZeRO-3']['seconds']:.0f}")
glue("gpu_save16_zero2", f"{saves['save_16bit_model']['ZeRO-2']['seconds']:.1f}")
glue("gpu_save16_zero3", f"{saves['save_16bit_model']['ZeRO-3 gather=true']['seconds']:.1f}")

# %% [markdown]
# `save_checkpoint` 在 ZeRO-3 下**更小**：ZeRO-2 的检查点多存一份完整的 16 位权重，ZeRO-3 没有（第 5 节）。用时也短一些，
# 但每个 stage 只测了一次（数据文件里的命令是 `--repeats 1`，ZeRO-2 与 ZeRO-3 分在同一台机器的两次调用里），差别大致就是少写的那份权重：
# 能说的是 ZeRO-3 的检查点没有变慢，说不上“更快”。
# 真正变慢的是把 16 位模型收集到 rank 0 写出的 `save_16bit_model`（`trainer.save_model()` 走的就是它）：ZeRO-3 要先 all-gather 每一个参数。
# 原文“ZeRO-3 保存变慢”因此只对“保存可直接加载的模型文件”成立，对训练中途的检查点不成立。
#
# ### 本书的 notebook 在 GPU 上从头跑到尾
#
# CI 只在 CPU 上以缩小的规模运行这些 notebook。GPU 上的读者跑的是另一条路径（GPT-2 350M、FusedAdam、NCCL），所以 4.1–4.6 节的每个 notebook
# 也在一张 H100 上以 `DSCOURSE_SCALE=gpu` 从第一个单元跑到最后一个（`tools/run_notebooks_gpu.py`；一次调用最长 10 分钟，
# 长的 notebook 分几次跑，每次都先跑开头的准备单元）。每个单元是否跑完、用了多少秒、GPU 显存峰值，都记在
# `dscourse/data/gpu_notebooks.json`：

# %%
runs = gpu_results.load_notebook_runs()
env = runs["environment"]
print(f"{env['gpu']}; torch {env['torch']}; DeepSpeed {env['deepspeed']}; transformers {env['transformers']}\n")
print(gpu_results.notebooks_table(runs))
glue("gpu_notebooks_minutes", f"{runs['seconds'] / 60:.0f}")

# %% [markdown]
# 在 GPU 上第一次跑时暴露、在 CPU 上永远不会出现的几处问题（FusedAdam 的即时编译、非确定性的注意力内核、对 350M 太大的学习率），
# 以及每一处的修正，记在书末的附录“实测记录与方法”里。对读者有用的一条：GPU 规模下每个 350M 的检查点约 5 GB，
# 只在要续训时保存，用完就删。

# %% [markdown]
# ## 小结
#
# - `TrainingArguments(deepspeed=...)` 和 `accelerate launch --use_deepspeed` 都真的建了 DeepSpeed 引擎；原文的 Accelerate 命令
#   依赖本机 GPU 数或 `accelerate config` 的默认值，最好写明 `--num_processes`；
# - ZeRO-0/1/2/3 的 loss 曲线在 bf16 容差内一致，fp32 下几乎逐位一致：ZeRO 只改变显存；
# - ZeRO-3 检查点里没有完整权重；`zero_to_fp32` 合并后的权重与引擎里的逐位相等；要 `save_model()` 直接写出可用的模型，
#   打开 `stage3_gather_16bit_weights_on_model_save`；
# - 用 `engine.load_checkpoint` 续训，loss 逐位相同；经 Trainer 续训，相差不到 1e-5；
# - 自己用 `zero.Init` 时检查第一步 loss 是否接近 ln V；
# - 由 Trainer 决定的值写 `"auto"`，写死的值与 `TrainingArguments` 不一致会在启动时报错。
