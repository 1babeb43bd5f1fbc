"""The keys of the source chapter's configs, explained: what each does, when to change it, what it costs.

The explanations are the book's (Chinese, like the prose); the defaults are read from DeepSpeed
0.19.8 itself (its pydantic models and constants) by :func:`deepspeed_default`, never typed in.
"""

from __future__ import annotations

# path -> (what it does, when to change it, memory it costs)
KEY_NOTES = {
    "train_batch_size": ("全局 batch = micro-batch × 梯度累积 × GPU 数", "用 Trainer 时写 \"auto\"", "—"),
    "train_micro_batch_size_per_gpu": ("每张卡每次前向的样本数", "用 Trainer 时写 \"auto\"", "激活值随它线性增长"),
    "gradient_accumulation_steps": ("累积几次 micro-batch 再做一次 step", "用 Trainer 时写 \"auto\"", "—"),
    "steps_per_print": ("每隔多少步打印一次 DeepSpeed 日志", "嫌日志多就调大", "—"),
    "gradient_clipping": ("梯度范数裁剪阈值", "用 Trainer 时写 \"auto\"（取 max_grad_norm）", "—"),
    "fp16.enabled": ("fp16 混合精度", "有 bf16 的卡（A100/H100 起）用 bf16", "参数、梯度 2 字节；另有 fp32 主权重"),
    "fp16.loss_scale": ("0 = 动态 loss scaling；非 0 = 固定倍数", "几乎总是 0", "—"),
    "fp16.initial_scale_power": ("动态 loss scale 的初值 2^n", "开头大量 overflow 跳步时调小", "—"),
    "bf16.enabled": ("bf16 混合精度：与 fp32 同样的指数范围，无需 loss scaling", "A100/H100 及以后的默认选择",
                     "与 fp16 相同"),
    "optimizer.type": ("DeepSpeed 创建的优化器", "Adam/AdamW 最常见", "Adam 状态 8 字节/参数（fp32 m, v）"),
    "zero_optimization.stage": ("ZeRO 阶段 0-3", "放不下时逐级提高", "见 4.1 节的显存公式"),
    "zero_optimization.allgather_partitions": ("stage 1/2：step 后用 all-gather 收集各 rank 更新过的参数",
                                               "保持 true", "—"),
    "zero_optimization.allgather_bucket_size": ("stage 1/2：all-gather 每次通信的元素数",
                                                "显存紧张时调小，通信慢时调大", "通信缓冲区，元素数 × 2 字节"),
    "zero_optimization.reduce_scatter": ("stage 2：用 reduce-scatter 而不是 all-reduce 聚合梯度", "保持 true", "—"),
    "zero_optimization.reduce_bucket_size": ("梯度规约桶的元素数",
                                             "显存紧张时调小；ZeRO-3 会一直占着这个桶",
                                             "ZeRO-3：元素数 × 2 字节常驻（默认 5e8 → 1 GB）"),
    "zero_optimization.overlap_comm": ("梯度通信与反向计算重叠", "追求速度时开",
                                       "stage 2 反向期间同时存在两个规约桶"),
    "zero_optimization.contiguous_gradients": ("把梯度拷进连续缓冲区，减少碎片", "保持 true", "梯度分片的连续缓冲区"),
    "zero_optimization.offload_optimizer.device": ("把 fp32 主权重、Adam 状态和优化器 step 放到 CPU",
                                                   "GPU 放不下优化器状态时", "GPU 省 12 字节/参数；主机内存多出约 16 字节/参数"),
    "zero_optimization.offload_optimizer.pin_memory": ("主机内存页锁定，加快 PCIe 传输", "主机内存充裕时开",
                                                       "页锁定内存不能被换出"),
    "zero_optimization.offload_param.device": ("stage 3：把参数分片也放到 CPU，用到时再搬上 GPU",
                                               "连参数分片都放不下时；只在 stage 3 有效", "GPU 再省 2 字节/参数"),
    "zero_optimization.offload_param.pin_memory": ("同上，参数的主机缓冲区页锁定", "主机内存充裕时开", "—"),
    "zero_optimization.stage3_max_live_parameters": ("stage 3：同时收集在 GPU 上的参数个数上限",
                                                     "显存紧张时调小", "上限 × 2 字节"),
    "zero_optimization.stage3_max_reuse_distance": ("stage 3：参数在这么多个参数之内会再用到就不释放",
                                                    "激活重算时有用", "与上一项共同决定常驻参数"),
    "zero_optimization.stage3_prefetch_bucket_size": ("stage 3：提前收集下一层参数的元素数", "调大加速、调小省显存",
                                                      "元素数 × 2 字节"),
    "zero_optimization.stage3_param_persistence_threshold": ("stage 3：元素数不超过它的参数不切分，每个 rank 保留完整副本",
                                                             "小参数多时调小", "这些参数 × 2 字节 × 每个 rank"),
    "zero_optimization.sub_group_size": ("stage 3 offload：优化器 step 按多少个参数一组分批做",
                                         "CPU 内存紧张时调小", "每组的 fp32 梯度缓冲区"),
}


def deepspeed_default(path: str):
    """The default DeepSpeed 0.19.8 uses when ``path`` is absent (read from DeepSpeed, lazily imported)."""
    section, _, rest = path.partition(".")
    if section == "zero_optimization":
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
        from deepspeed.runtime.zero.offload_config import (
            DeepSpeedZeroOffloadOptimizerConfig,
            DeepSpeedZeroOffloadParamConfig,
        )

        head, _, tail = rest.partition(".")
        if tail:
            model = {"offload_optimizer": DeepSpeedZeroOffloadOptimizerConfig,
                     "offload_param": DeepSpeedZeroOffloadParamConfig}[head]
            return _field_default(model, tail)
        return _field_default(DeepSpeedZeroConfig, rest)
    if section in ("fp16", "bf16"):
        from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config

        return _field_default(DeepSpeedFP16Config if section == "fp16" else DeepSpeedBF16Config, rest)
    from deepspeed.runtime import constants

    names = {"train_batch_size": "TRAIN_BATCH_SIZE_DEFAULT",
             "train_micro_batch_size_per_gpu": "TRAIN_MICRO_BATCH_SIZE_PER_GPU_DEFAULT",
             "gradient_accumulation_steps": "GRADIENT_ACCUMULATION_STEPS_DEFAULT",
             "steps_per_print": "STEPS_PER_PRINT_DEFAULT", "gradient_clipping": "GRADIENT_CLIPPING_DEFAULT"}
    if path in names:
        return getattr(constants, names[path])
    return None  # optimizer.* has no default: without the section the client's optimizer is used


def _field_default(model, name: str):
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            value = info.default
            return value.value if hasattr(value, "value") else value
    raise KeyError(f"{model.__name__} has no field {name!r}")


def key_groups(paths) -> list[tuple[str, list[str]]]:
    """``paths`` in three groups, each a small table: the keys outside ZeRO, the ZeRO keys of every stage (offload
    included), and the keys that only stage 3 reads."""
    def group(path: str) -> int:
        if not path.startswith("zero_optimization."):
            return 0
        name = path.split(".")[1]
        return 2 if name.startswith("stage3_") or name == "sub_group_size" else 1

    titles = ("batch size, logging, precision, optimizer", "zero_optimization: every stage",
              "zero_optimization: stage 3 only")
    return [(title, [p for p in paths if group(p) == i]) for i, title in enumerate(titles)]


def key_table(paths) -> list[list]:
    """Rows of (key, DeepSpeed default, what it does, when to change it, memory cost) for ``paths``."""
    return [[p, repr(deepspeed_default(p)), *KEY_NOTES[p]] for p in paths]
