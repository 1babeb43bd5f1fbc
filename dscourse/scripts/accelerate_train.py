"""A plain Accelerate training loop: the ``train.py`` of ``accelerate launch --use_deepspeed --zero_stage 2 train.py``.

    accelerate launch --use_deepspeed --zero_stage 2 --num_processes 2 accelerate_train.py --out results/
    accelerate launch --config_file accelerate_zero2.yaml accelerate_train.py --out results/
    accelerate launch --config_file accelerate_fsdp.yaml accelerate_train.py --out results/
    accelerate launch --use_deepspeed --deepspeed_config_file ds_config_accelerate.json accelerate_train.py --out r/

The script knows nothing about DeepSpeed or FSDP: ``Accelerator()`` reads what the launcher put in the
environment, and ``accelerator.prepare`` turns model and optimizer into a ``DeepSpeedEngine`` when the
launch asked for DeepSpeed, into an FSDP2-sharded model when it asked for FSDP. Each rank writes what it
really got (engine class, ZeRO stage, precision, the DeepSpeed config Accelerate generated, or the FSDP
settings and the elements each rank holds) and the losses; rank 0 prints ``step N loss X``.

When the DeepSpeed config file has an ``optimizer`` (and a ``scheduler``) block, the script passes Accelerate's
placeholders ``DummyOptim`` (and ``DummyScheduler``) instead of a torch optimizer, as Accelerate's examples do: the
optimizer is then the config's, built by DeepSpeed, with the ``"auto"`` values filled from the placeholders.
``--optimizer torch`` passes a real ``torch.optim.AdamW`` regardless, to show what Accelerate says to that.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--micro-batch", type=int, default=2, help="the DataLoader's batch size, per process")
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=["auto", "torch"], default="auto",
                   help="auto: DummyOptim/DummyScheduler where the DeepSpeed config has optimizer/scheduler blocks, "
                        "else torch.optim.AdamW; torch: always torch.optim.AdamW")
    p.add_argument("--save-state", action="store_true",
                   help="end with accelerator.save_state(OUT/state) and report the files it wrote")
    p.add_argument("--cpu-as-is", action="store_true",
                   help="on a CPU, leave Accelerate's FSDP handling as it is (it then does not shard)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    args.lr = args.lr or learning_rate(args.shape)
    if args.steps < 1 or args.micro_batch < 1:
        p.error("--steps and --micro-batch must be at least 1")
    return args


def main(argv=None) -> int:
    from dscourse.scripts import deterministic, finish, uses_cuda

    args = parse_args(argv)
    deterministic()
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from dscourse.models import SHAPES, build_model, synthetic_batch

    if not uses_cuda():
        # Without a GPU, Accelerate 1.15 picks no backend for a DeepSpeed launch and counts one process
        # although DeepSpeed runs on all of them; naming gloo makes both agree. Nothing changes on a GPU.
        from accelerate import PartialState
        from accelerate.utils import DistributedType

        state = PartialState(backend="gloo")
        if (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not args.cpu_as_is
                and state.distributed_type == DistributedType.NO and state.num_processes > 1):
            # Accelerate 1.15 applies FSDP only to accelerator devices (MULTI_GPU, ...): on a CPU it would
            # silently train one unsharded copy per process. Declaring the gloo processes multi-device makes it
            # shard as it does on GPUs (FSDP2 then builds its mesh on the CPU). --cpu-as-is shows the default.
            state.distributed_type = DistributedType.MULTI_GPU
    accelerator = Accelerator()
    set_seed(args.seed)
    shape = SHAPES[args.shape]
    world = accelerator.num_processes
    tokens = [synthetic_batch(shape, 1, i, seed=args.seed)[0] for i in range(args.steps * args.micro_batch * world)]
    loader = torch.utils.data.DataLoader(tokens, batch_size=args.micro_batch, shuffle=False)
    model = build_model(shape)
    plugin = accelerator.state.deepspeed_plugin
    ds_config = plugin.deepspeed_config if plugin else {}
    if "optimizer" in ds_config and args.optimizer == "auto":
        from accelerate.utils import DummyOptim, DummyScheduler

        optimizer = DummyOptim(model.parameters(), lr=args.lr)  # the config's optimizer; lr fills its "auto"
        scheduler = (DummyScheduler(optimizer, total_num_steps=args.steps, warmup_num_steps=1)
                     if "scheduler" in ds_config else None)
    else:
        optimizer, scheduler = torch.optim.AdamW(model.parameters(), lr=args.lr), None
    try:
        if scheduler is not None:
            model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        else:
            model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    except ValueError as e:  # Accelerate's word on an optimizer given twice is the lesson: report it, exit 0
        accelerator.print(f"accelerator.prepare raised ValueError: {e}")
        finish({"rank": accelerator.process_index, "prepare_error": str(e)}, args.out, accelerator.process_index)
        return 0

    losses = {}
    for step, ids in enumerate(loader, start=1):
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        losses[step] = accelerator.reduce(loss.detach(), reduction="mean").item()
        accelerator.print(f"step {step} loss {losses[step]:.4f}")

    result = {"rank": accelerator.process_index, "world_size": world, "losses": losses,
              "distributed_type": str(accelerator.distributed_type), "model_class": type(model).__name__,
              "mixed_precision": accelerator.mixed_precision,
              "zero_stage": model.zero_optimization_stage() if hasattr(model, "zero_optimization_stage") else None,
              "optimizer_class": type(getattr(model, "optimizer", optimizer)).__name__,
              "basic_optimizer": type(getattr(getattr(model, "optimizer", None), "optimizer", optimizer)).__name__,
              "scheduler_class": type(getattr(model, "lr_scheduler", None)).__name__ if scheduler is not None else None,
              "lrs": getattr(model, "lr_scheduler", None) and [g["lr"] for g in model.optimizer.param_groups],
              "ds_config": plugin.deepspeed_config if plugin else None}
    if args.save_state:  # under DeepSpeed: the engine's own save_checkpoint, one folder per call
        state = Path(args.out) / "state"
        accelerator.save_state(str(state))
        accelerator.wait_for_everyone()
        result["saved_state"] = sorted(str(f.relative_to(state)) for f in state.rglob("*") if f.is_file())
    if str(accelerator.distributed_type).endswith("FSDP"):
        from dscourse.accounting import count_fsdp_bytes

        fsdp = accelerator.state.fsdp_plugin
        held = count_fsdp_bytes(model, optimizer.optimizer)
        result["fsdp"] = {"version": fsdp.fsdp_version, "reshard_after_forward": fsdp.reshard_after_forward,
                          "offload": str(fsdp.cpu_offload), "mixed_precision": str(fsdp.mixed_precision_policy),
                          "elements": held["elements"], "param_dtype": str(next(model.parameters()).dtype)}
    finish(result, args.out, accelerator.process_index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
