"""Train with the Hugging Face Trainer and ``TrainingArguments(deepspeed=CONFIG)``, as a reader's script would.

    torchrun --nproc_per_node 2 -m dscourse.scripts.hf_train --config ds_config_zero2.json --out results/
    deepspeed --num_gpus 2 --module dscourse.scripts.hf_train --config ds_config_zero2.json --out results/

No ``import deepspeed`` and no DeepSpeed call: the Trainer builds the engine from the config file and
fills its ``"auto"`` values from the arguments. ``--save-steps`` lets the Trainer write checkpoints
(``checkpoint-N/``), ``--resume`` continues from the last one, ``--save-model DIR`` calls
``trainer.save_model(DIR)`` at the end (timed) and ``--dump-weights`` makes rank 0 write the engine's
full weights beside the results, to check a saved model against. Rank 0 prints ``step N loss X``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dscourse.scripts import deterministic, dir_bytes, engine_summary, finish, full_weights, uses_cuda


def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="DeepSpeed config file (\"auto\" allowed)")
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=4, help="max_steps")
    p.add_argument("--micro-batch", type=int, default=2, help="per_device_train_batch_size")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient_accumulation_steps")
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=0, help="save a checkpoint every N steps (0: never)")
    p.add_argument("--output-dir", default=None, help="the Trainer's output_dir (default: OUT/trainer)")
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    p.add_argument("--save-model", default=None, help="call trainer.save_model(DIR) after training")
    p.add_argument("--dump-weights", action="store_true", help="rank 0 writes the engine's full weights")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lr = args.lr or learning_rate(args.shape)
    for name in ("steps", "micro_batch", "grad_accum"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    return args


def make_trainer(args, shape, world: int, wrap=None):
    """A Trainer on synthetic tokens; its TrainingArguments carry the DeepSpeed config. ``wrap``: a function the
    freshly built model goes through first (``peft.get_peft_model`` in ``lora_train``)."""
    import torch
    from transformers import Trainer, TrainingArguments

    from dscourse.models import build_model, synthetic_batch

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return args.steps * args.micro_batch * args.grad_accum * world

        def __getitem__(self, i):
            ids = synthetic_batch(shape, 1, i, seed=args.seed)[0]
            return {"input_ids": ids, "labels": ids}

    save = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {"save_strategy": "no"}
    targs = TrainingArguments(output_dir=args.output_dir or os.path.join(args.out, "trainer"),
                              deepspeed=args.config, bf16=True, use_cpu=not uses_cuda(),
                              per_device_train_batch_size=args.micro_batch,
                              gradient_accumulation_steps=args.grad_accum, max_steps=args.steps,
                              learning_rate=args.lr, logging_steps=1, report_to=[], seed=args.seed,
                              disable_tqdm=True, **save)
    # build_model calls the model class itself, which transformers does not wrap in deepspeed.zero.Init (only
    # from_pretrained and _from_config do): the model is built whole and the Trainer's engine partitions it.
    model = build_model(shape)
    return Trainer(model=wrap(model) if wrap else model, args=targs, train_dataset=Tokens())


def progress_callback():
    """A TrainerCallback with which rank 0 prints ``step N loss X`` as the Trainer logs."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                print(f"step {state.global_step} loss {logs['loss']:.4f}", flush=True)

    return Progress()


def main(argv=None) -> int:
    args = parse_args(argv)
    deterministic()
    import torch

    from dscourse.models import SHAPES

    torch.manual_seed(args.seed)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    trainer = make_trainer(args, SHAPES[args.shape], world)
    trainer.add_callback(progress_callback())
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    result = {"losses": losses, **engine_summary(trainer.model_wrapped)}
    if args.save_model:
        t0 = time.perf_counter()
        trainer.save_model(args.save_model)
        torch.distributed.barrier()
        result["save_model_seconds"] = time.perf_counter() - t0
        result["saved_files"] = dir_bytes(Path(args.save_model))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dump_weights:
        master, module = full_weights(trainer.model_wrapped)
        if rank == 0:
            torch.save(master, out / "weights_fp32.pt")
            torch.save(module, out / "weights_module.pt")
    result.update({"rank": rank, "world_size": world, "config": str(args.config)})
    finish(result, out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
