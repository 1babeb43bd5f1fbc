"""What DeepSpeed 0.19.8 reads from a config: its top-level keys, the sections it validates with pydantic models,
the scalars it reads with a bare ``dict.get``, and its own tables (optimizer and scheduler names), imported lazily.

Pure Python at import: DeepSpeed (and torch) are imported on first use by :func:`tables`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import typing
import warnings

# Every top-level key DeepSpeedConfig._initialize_params (and deepspeed.initialize) reads; the
# tests trace DeepSpeedConfig's reads to keep this list honest.
TOP_LEVEL_KEYS = frozenset((
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
    "managed_gradient_accumulation", "steps_per_print", "dump_state", "disable_python_gc", "disable_allgather",
    "communication_data_type", "seq_parallel_communication_data_type", "prescale_gradients",
    "gradient_predivide_factor", "gradient_allreduce_op", "zero_optimization", "activation_checkpointing",
    "comms_logger", "tensorboard", "wandb", "csv_monitor", "comet", "gradient_clipping", "fp16", "bf16",
    "bfloat16", "torch_autocast", "optimizer", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer",
    "scheduler", "flops_profiler", "wall_clock_breakdown", "memory_breakdown", "autotuning",
    "use_data_before_expert_parallelism", "hybrid_engine", "pipeline", "data_efficiency", "checkpoint",
    "data_types", "aio", "dataloader_drop_last", "log_level", "datastates_ckpt", "weight_quantization", "compile",
    "timers", "tensor_parallel", "expert_parallel", "vocabulary_size", "sequence_parallel_size",
    "data_parallel_size",
))

# Sections DeepSpeed builds a pydantic model from (extra keys forbidden, values typed).
MODELS = {
    "zero_optimization": ("deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
    "fp16": ("deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
    "bf16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "bfloat16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "hybrid_engine": ("deepspeed.runtime.config", "HybridEngineConfig"),
    "compile": ("deepspeed.compile.config", "CompileConfig"),
    "comms_logger": ("deepspeed.comm.config", "CommsLoggerConfig"),
    "tensorboard": ("deepspeed.monitor.config", "TensorBoardConfig"),
    "wandb": ("deepspeed.monitor.config", "WandbConfig"),
    "csv_monitor": ("deepspeed.monitor.config", "CSVConfig"),
    "comet": ("deepspeed.monitor.config", "CometConfig"),
    "tensor_parallel": ("deepspeed.runtime.tensor_parallel.config", "TPTrainingConfig"),
}

# Keys the HF Trainer fills when they say "auto" (trainer_config_process / trainer_config_finalize).

# Places where "auto" is DeepSpeed's own value, not a placeholder.
DS_NATIVE_AUTO = frozenset({"data_types.keep_in_fp32_modules", "pipeline.stages",
                             "expert_parallel.routed_scaling_factor",
                             "zero_optimization.zenflow.select_strategy",
                             "zero_optimization.zenflow.select_interval",
                             "zero_optimization.zenflow.update_interval"})

# Read only inside DeepSpeedEngine._configure_zero_optimizer: at stage 0 they do nothing.
ZERO_OPTIMIZER_ONLY = ("overlap_comm", "contiguous_gradients", "reduce_scatter",
                        "round_robin_gradients", "sub_group_size")

TOP_TYPES = {  # top-level scalars DeepSpeed reads with a bare dict.get (no type checking)
    "steps_per_print": "count", "gradient_clipping": "number", "gradient_predivide_factor": "number",
    "prescale_gradients": "bool", "wall_clock_breakdown": "bool", "memory_breakdown": "bool",
    "dump_state": "bool", "disable_allgather": "bool", "disable_python_gc": "bool",
    "zero_allow_untested_optimizer": "bool", "zero_force_ds_cpu_optimizer": "bool",
    "dataloader_drop_last": "bool", "managed_gradient_accumulation": "bool",
    "use_data_before_expert_parallelism": "bool",
    "communication_data_type": ("fp16", "bf16", "fp32"),
    "seq_parallel_communication_data_type": ("fp16", "bf16", "fp32"),
    "gradient_allreduce_op": ("mean", "sum"),
}
SECTIONS = {"optimizer", "scheduler", "activation_checkpointing", "flops_profiler", "autotuning",
             "pipeline", "data_efficiency", "checkpoint", "data_types", "torch_autocast", "timers",
             "weight_quantization", "expert_parallel", "datastates_ckpt", *MODELS}

OPT_NUMBERS = ("lr", "eps", "weight_decay", "momentum", "dampening", "lr_decay", "alpha")
OPT_BOOLS = ("torch_adam", "adam_w_mode", "amsgrad", "bias_correction", "nesterov", "foreach",
              "fused", "maximize")
SCHED_NUMBERS = ("warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "total_num_steps",
                  "warmup_min_ratio", "cos_min_ratio", "cycle_min_lr", "cycle_max_lr",
                  "decay_lr_rate", "cycle_first_step_size", "cycle_second_step_size",
                  "decay_step_size", "lr_range_test_min_lr", "lr_range_test_step_rate",
                  "lr_range_test_step_size", "last_batch_iteration")

FRIENDLY_DEPRECATED = {  # the modern spelling, as JSON to paste
    "cpu_offload": '"offload_optimizer": {"device": "cpu"}',
    "cpu_offload_param": '"offload_param": {"device": "cpu"}',
    "cpu_offload_use_pin_memory": '"pin_memory": true inside offload_optimizer / offload_param',
    "stage3_gather_fp16_weights_on_model_save": '"stage3_gather_16bit_weights_on_model_save"',
}


@contextlib.contextmanager
def quiet():
    """DeepSpeed logs to stdout (the CPU-accelerator notice, deprecations): keep output ours."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


@functools.cache
def tables():
    """DeepSpeed's own tables, imported once; None when DeepSpeed cannot be imported."""
    try:
        with quiet():
            import torch
            from deepspeed.profiling import constants as prof
            from deepspeed.runtime import config as ds_config
            from deepspeed.runtime import lr_schedules
            from deepspeed.runtime.activation_checkpointing.config import ACT_CHKPT_DEFAULT
            models = {section: getattr(importlib.import_module(mod), cls)
                      for section, (mod, cls) in MODELS.items()}
    except Exception:  # noqa: BLE001 - any import failure means "no DeepSpeed here"
        return None
    torch_optims = {n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                    and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)}
    sched_base = torch.optim.lr_scheduler.LRScheduler
    torch_scheds = {n for n in dir(torch.optim.lr_scheduler)
                    if isinstance(getattr(torch.optim.lr_scheduler, n), type)
                    and issubclass(getattr(torch.optim.lr_scheduler, n), sched_base)}
    flops_keys = {v for k, v in vars(prof).items() if k.startswith("FLOPS_PROFILER_")
                  and isinstance(v, str) and not k.endswith(("_DEFAULT", "_FORMAT"))}
    return {
        "models": models,
        "optimizers": tuple(ds_config.DEEPSPEED_OPTIMIZERS),
        "torch_optimizers": torch_optims - {"Optimizer"},
        "schedulers": tuple(lr_schedules.VALID_LR_SCHEDULES),
        "scheduler_classes": {n: getattr(lr_schedules, n) for n in lr_schedules.VALID_LR_SCHEDULES},
        "torch_schedulers": torch_scheds - {"LRScheduler", "_LRScheduler"},
        "plain_sections": {"activation_checkpointing": set(ACT_CHKPT_DEFAULT),
                           "flops_profiler": flops_keys},
    }


def zero_default_stage() -> int:
    """The ZeRO stage DeepSpeed uses when ``zero_optimization.stage`` is absent (0 in 0.19.8)."""
    found = tables()
    return int(found["models"]["zero_optimization"].model_fields["stage"].default) if found else 0


def fields(model) -> dict:
    """Every spelling the model accepts (field names and aliases) -> (field name, FieldInfo)."""
    out = {}
    for name, info in model.model_fields.items():
        out[name] = (name, info)
        if info.alias:
            out[info.alias] = (name, info)
    return out


def field_types(info) -> tuple:
    args = typing.get_args(info.annotation)
    return tuple(a for a in args if a is not type(None)) if args else (info.annotation,)


def submodel(info):
    import pydantic

    for t in field_types(info):
        if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
            return t
    return None


def field_at(model, dotted: str):
    """The FieldInfo of a dotted key path inside a pydantic model ("offload_param.buffer_size"), or None."""
    head, _, rest = dotted.partition(".")
    entry = fields(model).get(head)
    if entry is None:
        return None
    if not rest:
        return entry[1]
    sub = submodel(entry[1])
    return field_at(sub, rest) if sub is not None else None
