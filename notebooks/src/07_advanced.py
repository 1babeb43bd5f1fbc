# %% [markdown]
# # 4.7 实验：换 GPU 数续训，LoRA 与 ZeRO-3，卸载到 NVMe
#
# 训练到一半，手里的 GPU 变了：8 张卡的任务要挪到 4 张卡上，或者抢到了更多的卡。ZeRO 的检查点把优化器状态按 rank 切成了
# 一片一片（每个 rank 一个 `*_optim_states.pt`），只有同样多的 rank 才读得回来。本 notebook 在真实的 DeepSpeed rank 上：
#
# 1. 用 4 个 rank 训练并保存 ZeRO-2 和 ZeRO-3 检查点；
# 2. 用 DeepSpeed 自带的 `ds_to_universal` 把它转成**通用检查点**（universal checkpoint）；
# 3. 在 2 个 rank 上用 `"checkpoint": {"load_universal": true}` 接着训练，核对 loss 曲线接得上；
# 4. 看不转换时 DeepSpeed 怎样拒绝；
# 5. 另一件常做的事：在 ZeRO-3 下用 LoRA（PEFT）微调，数清每个 rank 持有什么，保存并重新加载 adapter；
# 6. 再往下一层：把优化器状态和参数卸载到 NVMe 盘上的文件（ZeRO-Infinity），看文件里是什么。
#
# 训练脚本是 4.3 节的 `dscourse/scripts/train_run.py`，整个往返由 `dscourse.resume.universal_resume` 完成；
# LoRA 一节用 `dscourse/scripts/lora_train.py`（Trainer + PEFT）。

# %%
# NBVAL_IGNORE_OUTPUT
import deepspeed
import torch
import transformers

from dscourse import scale

print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}, transformers {transformers.__version__}")
print(f"scale: {scale.scale()}, model for 4 ranks: {scale.train_shape(4)}")

# %%
import json
import shutil
import tempfile
from pathlib import Path

from dscourse.book import glue
from dscourse.resume import universal_resume
from dscourse.tables import text_table

WORK = Path(tempfile.gettempdir()) / "dscourse-4.7"
shutil.rmtree(WORK, ignore_errors=True)
WORK.mkdir(parents=True)
SHAPE = scale.train_shape(4)  # GPT-2 350M on 4 GPUs; the CPU model where fewer GPUs are visible

# %% [markdown]
# ## 1. 4 个 rank 保存，2 个 rank 继续
#
# 同一个模型训练 8 步，第 4 步保存；每个 rank 循环使用 2 个 batch，所以 loss 会下降。`train_run` 让 rank 0 在每一步都拿到同一个
# batch，不论一共几个 rank——所以如果权重原样恢复，续训的第 5 步在 rank 0 上的 loss 必须与不中断的 4-rank 运行的第 5 步**逐位相同**；
# 第 6 步起，2 个 rank 的全局 batch 只有一半，曲线开始分开，但应当沿着同样的下降继续。

# %%
# NBVAL_IGNORE_OUTPUT
# (the losses' last digits depend on the CPU's bf16 kernels; the next cell's checks are compared everywhere)
runs = {stage: universal_resume(WORK, stage=stage, save_ranks=4, resume_ranks=2, steps=8, save_at=4, shape=SHAPE)
        for stage in (2, 3)}
def resumed(r, step):
    return f"{r['resumed'][step]:.4f}" if step in r["resumed"] else "(saved)" if step == r["save_at"] else ""


print(text_table(["step", "ZeRO-2, 4 ranks", "ZeRO-2 resumed on 2", "ZeRO-3, 4 ranks", "ZeRO-3 resumed on 2"],
                 [[step, *(cell for r in runs.values() for cell in (f"{r['full'][step]:.4f}", resumed(r, step)))]
                  for step in range(1, 9)], align_right_from=0))
glue("uc_step5", f"{runs[2]['resumed'][5]:.4f}")

# %%
for stage, r in runs.items():
    exact = r["resumed"][5] == r["full"][5]  # the weights and the optimizer state came back exactly
    close = max(abs(r["resumed"][s] - r["full"][s]) / r["full"][s] for s in (6, 7, 8)) < 0.02
    trained = r["resumed"][8] < r["full"][1] - 0.3  # still trained, not a fresh start near ln V
    print(f"ZeRO-{stage}: step 5 identical to the uninterrupted run: {exact}; steps 6-8 within 2%: {close}; "
          f"step 8 well below step 1: {trained}")
    assert exact and close and trained

# %% [markdown]
# 第 5 步两列相同：权重、fp32 主权重和 Adam 的两个状态都原样回来了，2 个 rank 上的分区是从通用检查点重新切出来的。
#
# ## 2. 通用检查点里有什么
#
# 原来的检查点每个 rank 一个优化器文件；转换后按**参数**存放，每个参数一个文件夹，里面是它完整的 fp32 值和 Adam 的 `exp_avg`、
# `exp_avg_sq`，与 rank 数无关：

# %%
r = runs[2]
print("saved by 4 ranks (ZeRO-2):", *[f for f in r["checkpoint_files"] if f.startswith("step")], sep="\n  ")
folders: dict = {}
for f in r["universal_files"]:
    if f.startswith("zero/") and f.count("/") == 2:
        _, param, name = f.split("/")
        folders.setdefault(param, []).append(name)
example = next(p for p in sorted(folders) if "exp_avg.pt" in folders[p])
print(f"\nuniversal: {len(folders)} parameter folders, e.g. zero/{example}/: {sorted(folders[example])}")
print("a weight tied to another (GPT-2's lm_head.weight is wte's):", sorted(folders.get("lm_head.weight", [])))
assert len([f for f in r["checkpoint_files"] if f.endswith("optim_states.pt")]) == 4
assert all({"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt"} <= set(names) for p, names in folders.items() if p != "lm_head.weight")
glue("uc_params", len(folders))

# %% [markdown]
# 转换命令（每个检查点一次，在一台 CPU 机器上就能做，不需要 GPU）：
#
# ```bash
# python -m deepspeed.checkpoint.ds_to_universal --input_folder ckpt/step4 --output_folder ckpt/step4_universal
# ```
#
# 它要求检查点里有 `universal_checkpoint_info`：Megatron-DeepSpeed 会写，普通的 `deepspeed.initialize` 训练不会——没有它，
# 转换以 `AssertionError: Required universal_checkpoint_info state is missing in checkpoint` 退出。DeepSpeed 0.19.8 保存时会把
# 模型对象上同名的属性写进检查点（`deepspeed/runtime/engine.py` 的 `_save_checkpoint`），所以数据并行的模型在
# `deepspeed.initialize` **之前**设一个空字典就够了（`train_run --universal-info` 就是这样做的）：
#
# ```python
# from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO
# setattr(model, UNIVERSAL_CHECKPOINT_INFO, {})   # 张量并行的模型要在这里写明切分方式
# ```
#
# ## 3. 不转换会怎样

# %%
for stage, r in runs.items():
    print(f"ZeRO-{stage}, the 4-rank checkpoint loaded on 2 ranks as it is:\n  {r['unconverted_error']}")
    assert "used a DP world size of 4 but the current world size is 2" in r["unconverted_error"]

# %% [markdown]
# DeepSpeed 在读优化器分片前就比较了 rank 数，给出的原因很清楚。`zero_to_fp32.py` 能把同一个检查点合并成完整的 fp32 权重
# （4.3 节），但那样只剩权重：Adam 的状态丢了，续训等于换了一个优化器从头热身。通用检查点两样都保留。
#
# ## 4. LoRA 与 ZeRO-3
#
# 今天微调 7B–70B 模型最常见的做法是 LoRA：冻住原模型，只在注意力的投影旁边训练两个小矩阵（秩 r）。它和 ZeRO 怎样配合？
# `lora_train.py` 先建 `TrainingArguments(deepspeed=...)`，再建模型、用 `peft.get_peft_model` 加上 LoRA（r = 8，`q_proj` 和
# `v_proj`），交给 Trainer；训练之后每个 rank 用 `dscourse.accounting.count_engine_bytes` 逐个张量清点自己持有的字节。
# 同一个模型再做一次全参数微调作对照，ZeRO-2 和 ZeRO-3 各一次（ZeRO-3 的 `stage3_param_persistence_threshold` 设为 0，
# 让每个参数都切分，便于和公式对照）：

# %%
from dscourse.config import build_config
from dscourse.launch import run_ranks
from dscourse.memory.lora import lora_state_bytes, lora_trainable
from dscourse.models import SHAPES

LORA_SHAPE, LORA_RANKS = "llama-tiny", 2
lora_runs = {}
for stage in (2, 3):
    cfg = WORK / f"lora-zero{stage}.json"
    ds = build_config(stage, micro_batch=2, world_size=LORA_RANKS, integration="hf")
    if stage == 3:
        ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition every parameter
    cfg.write_text(json.dumps(ds))
    for r in (8, 0):
        save = ["--save-adapter", str(WORK / f"adapter-zero{stage}")] if r and stage == 3 else []
        lora_runs[(stage, r)] = run_ranks("dscourse.scripts.lora_train",
                                          ["--config", str(cfg), "--shape", LORA_SHAPE, "--lora-rank", str(r), *save],
                                          nproc=LORA_RANKS, timeout=900, out_dir=WORK / f"lora-{stage}-{r}").ranks[0]
CATS = ("params", "grads", "master", "optim")
rows = []
for (stage, r), run in lora_runs.items():
    held = run["held"]["cpu"] if "cpu" in run["held"] else next(iter(run["held"].values()))
    formula = lora_state_bytes(run["total_params"], run["trainable_params"], LORA_RANKS, stage)
    rows.append([f"ZeRO-{stage}", f"LoRA r={r}" if r else "full", f"{run['trainable_params']:,} / {run['total_params']:,}",
                 *(f"{held.get(c, 0):,}" for c in CATS), f"{sum(held.get(c, 0) for c in CATS):,}"])
    for c in CATS:  # the formula's bytes; Adam's step counter and a 64-byte tensor more
        assert abs(held.get(c, 0) - formula[c]) <= 128, (stage, r, c, held, formula)
print(text_table(["stage", "training", "trainable / all", "bf16 params", "grads", "fp32 master", "Adam m, v",
                  "total bytes"], rows, align_right_from=2))
assert lora_trainable(SHAPES[LORA_SHAPE], 8) == lora_runs[(3, 8)]["trainable_params"]

# %% [markdown]
# - 冻住的底座**只有 16 位参数**：没有梯度、fp32 主权重和 Adam 状态（DeepSpeed 只为需要梯度的参数建这些），ZeRO-3 还把它切成 1/N；
#   ZeRO-2 则让每个 rank 都存一整份 16 位底座。
# - 可训练的 adapter 按 ZeRO 的规则切分，每个参数 16 字节，和全参数微调一样，只是参数少得多。
# - 公式 `dscourse.memory.lora.lora_state_bytes` 与清点的字节相差不到 128 字节（Adam 的 `step` 计数器 4 字节，
#   16 位参数里多一个 64 字节的小张量）。
#
# 保存：ZeRO-3 下参数是分片，`trainer.save_model()` 写出的 adapter 能不能用？rank 0 把它读回一份新的底座上
# （`PeftModel.from_pretrained`），与训练结束时收集的 LoRA 权重逐个比较：

# %%
saved = lora_runs[(3, 8)]
print("trainer.save_model wrote:", ", ".join(f for f in saved["saved_files"] if f != "training_args.bin"))
print(f"adapter read back onto a fresh base, equal to the trained LoRA weights: {saved['reloaded_equal']} "
      f"(largest difference {saved['reloaded_max_abs_diff']})")
assert saved["reloaded_equal"] and saved["trained_lora_norm"] > 0
glue("lora_reloaded", "逐位相等" if saved["reloaded_equal"] else "不相等")

# %% [markdown]
# 网上常说 ZeRO-3 下保存 adapter 要先打开 `stage3_gather_16bit_weights_on_model_save`，否则得到空的权重：transformers 5.23 的
# Trainer 保存 PEFT 模型时自己收集 adapter 的分片（上面的配置没有打开它），读回的权重与训练的逐位相等。
#
# 放大到 8 张 GPU 上的 Llama-2-70B（LoRA r = 16，`q_proj` 和 `v_proj`），同一个公式给出每张卡两步之间的模型状态：

# %%
from dscourse.memory import PRESETS, format_bytes

big = PRESETS["Llama-2-70B"]
t = lora_trainable(big, 16)
print(f"LoRA r=16 on q_proj, v_proj: {t:,} trainable parameters ({100 * t / big.params:.3f}% of {big.params:,})")
for stage in (2, 3):
    lora = sum(lora_state_bytes(big.params + t, t, 8, stage).values())
    full = sum(lora_state_bytes(big.params, big.params, 8, stage).values())
    print(f"ZeRO-{stage} on 8 GPUs: LoRA {format_bytes(lora)} per GPU, full fine-tuning {format_bytes(full)}")
glue("lora_70b_z3", format_bytes(sum(lora_state_bytes(big.params + t, t, 8, 3).values())))
glue("full_70b_z3", format_bytes(sum(lora_state_bytes(big.params, big.params, 8, 3).values())))

# %% [markdown]
# 放不放得下看的是一步之中的**峰值**（4.1 节）。计算器的 `--lora-rank` 选项把 LoRA 接进同一个峰值模型：adapter 也是参数，
# 只有它们有梯度、fp32 主权重和 Adam 状态，冻住的词嵌入没有梯度；激活值按冻住的底座少存的张量减去
# （`dscourse.memory.peak.lora_activation_terms`：冻住的 RMSNorm 不存它的 bf16 中间结果，冻住的投影不存输入，
# 每个 adapter 多存 r 个元素；在四个模型家族的真实 PEFT 模型上用 autograd 的 saved-tensor 钩子逐字节核对过）：
#
# ```bash
# python -m dscourse.memory --preset Llama-2-70B --gpus 8 --stage 3 --seq 4096 --lora-rank 16
# ```

# %%
from dscourse.memory.peak import Lora, peak_of

rows, peaks = [], {}
for label, lora in (("full fine-tuning", None), ("LoRA r=16, q_proj v_proj", Lora(16)),
                    ("LoRA r=16, all-linear", Lora(16, "all-linear"))):
    for ckpt in (False, True):
        pk = peaks[label, ckpt] = peak_of(big, gpus=8, stage=3, seq=4096, lora=lora, checkpointing=ckpt)
        rows.append([label, "on" if ckpt else "off", f"{pk.setup.trainable or pk.setup.params:,}",
                     format_bytes(pk.gpu_bytes), format_bytes(pk.phases["forward"]["activations"]),
                     f"{format_bytes(pk.peak_bytes)} ({pk.peak_phase})"])
print("Llama-2-70B, ZeRO-3 on 8 GPUs, micro-batch 1 x 4096 tokens, per GPU:")
print(text_table(["training", "checkpointing", "trainable", "between steps", "activations", "peak of a step"], rows,
                 align_right_from=2))
glue("lora_70b_peak", format_bytes(peaks["LoRA r=16, q_proj v_proj", False].peak_bytes))
glue("lora_70b_peak_ckpt", format_bytes(peaks["LoRA r=16, q_proj v_proj", True].peak_bytes))
glue("full_70b_peak", format_bytes(peaks["full fine-tuning", False].peak_bytes))

# %% [markdown]
# LoRA 省掉的主要是模型状态；激活值只少了一部分（冻住的层照样要把梯度传回去），在长序列上它成了峰值的大头——这时该开的是
# activation checkpointing（`--checkpointing`），而不是更小的 rank。

# %% [markdown]
# ## 5. 卸载到 NVMe（ZeRO-Infinity）
#
# CPU 卸载（4.3 节）把 fp32 主权重和 Adam 状态放进主机内存：每个参数 12 字节（再加 ZeRO-3 的 16 位参数分片 2 字节、
# fp32 梯度 4 字节）。放大到一台 8 卡机器上的 Llama-2-70B：

# %%
from dscourse.memory import Setup, estimate

host = estimate(Setup(params=big.params, gpus=8, stage=3, offload_optimizer="cpu", offload_param="cpu"), "allocated")
print(f"Llama-2-70B, ZeRO-3, parameters and optimizer offloaded to the CPU, 8 GPUs on one node: "
      f"{format_bytes(host.cpu_bytes)} of host RAM for the model states")
glue("nvme_70b_host", format_bytes(host.cpu_bytes))

# %% [markdown]
# 很少有机器有这么多内存。ZeRO-Infinity 再往下一层：把它们写进本地 NVMe 盘上的文件，用到时再读回来。配置上只是把 `"device"`
# 从 `"cpu"` 换成 `"nvme"`，再给一个目录：
#
# ```json
# "zero_optimization": {
#   "stage": 3,
#   "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"},
#   "offload_param": {"device": "nvme", "nvme_path": "/local_nvme",
#                     "buffer_count": 5, "buffer_size": 1e8, "max_in_cpu": 1e9}
# },
# "aio": {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 1,
#         "single_submit": false, "overlap_events": true, "use_gds": false}
# ```
#
# 读写文件用的是 DeepSpeed 的 `async_io` 算子（Linux 的异步 I/O，libaio），第一次用到时现场编译。先问 DeepSpeed 这台机器能不能
# 编译它（`AsyncIOBuilder.is_compatible`，它会编译并链接一个调用 `io_submit` 的小程序）：

# %%
from dscourse.nvme_offload import AIO_PACKAGE_HINT, aio_op_report

report = aio_op_report()
print(f"DeepSpeed can build its async_io op here: {report['compatible']}")
if not report["compatible"]:  # DeepSpeed's own words, then what to do
    raise RuntimeError("\n".join([*report["messages"], AIO_PACKAGE_HINT]))

# %% [markdown]
# 能。没有 libaio 的机器上这里是 `False`，DeepSpeed 的提示是 “async_io requires the dev libaio .so object and headers but these
# were not found”，并建议 `apt install libaio-dev`（Colab 上 `!apt-get install -y libaio-dev`）。
#
# 同一个 ZeRO-3 模型训练 4 步，两次：参数和优化器状态都卸载到 CPU，都卸载到 NVMe（这里是一个临时目录）。两次用的是同一个
# CPU 上的 Adam，差别只在状态放在内存还是文件里，所以 loss 应当逐位相同：

# %%
# NBVAL_IGNORE_OUTPUT
# (the losses' last digits depend on the CPU's bf16 kernels; the next cell's checks are compared everywhere)
from dscourse.nvme_offload import nvme_vs_cpu, swap_totals

NVME_SHAPE = "gpt2-small-cpu"
offload = nvme_vs_cpu(WORK / "nvme", shape=NVME_SHAPE, ranks=2, steps=4)
print(text_table(["step", "offloaded to the CPU", "offloaded to NVMe"],
                 [[step, f"{offload['cpu']['losses'][step]:.4f}", f"{offload['nvme']['losses'][step]:.4f}"]
                  for step in offload["cpu"]["losses"]], align_right_from=0))

# %%
same = offload["cpu"]["losses"] == offload["nvme"]["losses"]
print(f"every step's loss identical with the states on the CPU and on NVMe: {same}")
assert same and len(offload["nvme"]["losses"]) == 4

# %% [markdown]
# 训练结束时，每个 rank 在 `nvme_path` 下有这些文件（rank 0 的；rank 1 的一样多）：

# %%
from dscourse.memory.nvme import MIN_AIO_BYTES, swap_bytes
from dscourse.memory.peak import param_tensors
from dscourse.nvme_offload import swap_file_holds

files = offload["nvme"]["swap_files"]
print(text_table(["file (rank 0)", "holds", "bytes"],
                 [[f.removeprefix("zero_stage_3/"), swap_file_holds(f)[1], f"{b:,}"]
                  for f, b in files.items() if "/rank0/" in f], align_right_from=2))
measured = swap_totals(files, rank=0)
predicted = swap_bytes(param_tensors(SHAPES[NVME_SHAPE]), ranks=2)
print(f"\nrank 0 on disk: {measured}\nswap_bytes():   {predicted}")
assert measured == predicted == swap_totals(files, rank=1)
glue("nvme_min_aio", f"{MIN_AIO_BYTES // 2 ** 20} MiB")  # 1024 ** 2 bytes

# %% [markdown]
# - 优化器状态：fp32 主权重、`exp_avg`、`exp_avg_sq` 各一个文件，都是这个 rank 的整段分区（约 $\Psi/N$ 个元素 × 4 字节），
#   外加 fp32 梯度；参数：每个参数一个文件，存它的 bf16 分片。
# - 只有**一个**参数被写进了文件：DeepSpeed 不交换小于 `max(MIN_AIO_BYTES, aio.block_size)`（1 MiB）的张量
#   （`swap_tensor/partitioned_param_swapper.py` 的 `swappable_tensor`），它们留在主机内存里。这个小模型只有词嵌入的分片够大；
#   真实模型的每个投影矩阵都有几百万个元素，几乎全部写进文件。
# - `dscourse.memory.nvme.swap_bytes` 按这些规则算出每个 rank 的文件字节，与实际文件逐字节相等。
#
# `aio` 一节的每个键（DeepSpeed 0.19.8 的默认值；`deepspeed/runtime/swap_tensor/constants.py`）：
#
# | 键 | 默认 | 含义 |
# |---|---|---|
# | `block_size` | 1048576 | 每个 I/O 请求的字节数；也是能被交换的张量的下限 |
# | `queue_depth` | 8 | 同时提交给内核的请求数 |
# | `intra_op_parallelism` | 1 | 一次读写拆给几个线程（旧名 `thread_count`） |
# | `single_submit` | false | true：请求一个一个提交；false：成批提交 |
# | `overlap_events` | true | 提交新请求与等待已完成的请求重叠 |
# | `use_gds` | false | GPUDirect Storage：盘与 GPU 直接传输，只在 CUDA 上可用 |
#
# `offload_param` 的三个键管主机上的缓冲：`buffer_count` 个、每个 `buffer_size` 个元素的缓冲区（必须装得下最大的参数），
# `max_in_cpu` 是留在内存里不写盘的参数元素数。上面的运行把 `max_in_cpu` 设为 0，让能写盘的参数都写盘。

# %% [markdown]
# ## 小结
#
# - ZeRO 检查点只能由同样多的 rank 读回；换 GPU 数续训，先用 `ds_to_universal` 转换，再在配置里写
#   `"checkpoint": {"load_universal": true}`。
# - 普通的数据并行训练要在 `deepspeed.initialize` 之前给模型设 `universal_checkpoint_info`，否则无法转换。
# - 续训的第一步与不中断的训练逐位相同，说明权重和优化器状态都完整地回来了。
# - LoRA 下冻住的底座只占 16 位参数（ZeRO-3 再除以 N），优化器状态只为 adapter 建；Trainer 在 ZeRO-3 下保存的 adapter 读回来逐位相等。
# - 卸载到 NVMe 只需把 `"device"` 换成 `"nvme"` 并给出 `nvme_path`；它需要能编译 `async_io` 算子（libaio）。结果与 CPU 卸载逐位
#   相同，只是状态在文件里；小于 1 MiB 的张量不写盘。
