"""Fine-tune with LoRA (PEFT) through the Hugging Face Trainer and a DeepSpeed config, and save the adapter.

    torchrun --nproc_per_node 2 -m dscourse.scripts.lora_train --config ds_zero3.json --lora-rank 8 --out results/
    torchrun --nproc_per_node 2 -m dscourse.scripts.lora_train --config ds_zero3.json --lora-rank 0 --out full/

``--lora-rank R`` wraps the model with ``peft.get_peft_model`` (``LoraConfig(r=R, lora_alpha=2R)`` on the attention
projections: ``c_attn`` for GPT-2, ``q_proj``/``v_proj`` for Llama); ``--lora-rank 0`` trains every parameter, for
comparison. After training each rank counts the bytes its DeepSpeed engine holds, by category
(``dscourse.accounting.count_engine_bytes``: the frozen base is partitioned too under ZeRO-3, but has no gradient,
master weight or Adam state). Rank 0 gathers the trained LoRA weights; ``trainer.save_model(DIR)`` then writes the
adapter, rank 0 loads it back onto a fresh copy of the base (``PeftModel.from_pretrained``) and compares.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dscourse.scripts import deterministic, finish

FAMILIES = ("gpt2", "llama")  # the model families whose LoRA targets peft_targets names

def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--config", required=True, help="DeepSpeed config file (\"auto\" allowed)")
    p.add_argument("--shape", default="llama-tiny", choices=sorted(SHAPES))
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA's r; 0 trains every parameter instead")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=None, help="default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-adapter", default=None, help="trainer.save_model(DIR) at the end, then reload it")
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(grad_accum=1, save_steps=0, output_dir=None)  # what hf_train.make_trainer also reads
    args = p.parse_args(argv)
    args.lr = args.lr or learning_rate(args.shape)
    if args.lora_rank < 0 or args.steps < 1:
        p.error(f"--lora-rank must be 0 or more and --steps at least 1, not {args.lora_rank} and {args.steps}")
    if SHAPES[args.shape].family not in FAMILIES:
        p.error(f"--shape {args.shape}: LoRA targets are known for {', '.join(FAMILIES)} models only")
    if args.save_adapter and not args.lora_rank:
        p.error("--save-adapter saves a LoRA adapter: give --lora-rank 1 or more")
    return args


def lora_weights(model) -> dict:
    """The LoRA matrices by name, full size (gathered from their ZeRO-3 partitions), on every rank."""
    import deepspeed

    named = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    with deepspeed.zero.GatheredParameters([p for _, p in named], enabled=any(hasattr(p, "ds_id") for _, p in named)):
        return {n.replace(".default", ""): p.detach().float().cpu().clone() for n, p in named}


def main(argv=None) -> int:
    args = parse_args(argv)
    deterministic()
    import torch

    from dscourse.accounting import count_engine_bytes
    from dscourse.memory.lora import peft_targets
    from dscourse.models import SHAPES, build_model
    from dscourse.scripts.hf_train import make_trainer, progress_callback

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    shape = SHAPES[args.shape]
    torch.manual_seed(args.seed)

    def add_lora(model):
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise SystemExit("dscourse.scripts.lora_train needs PEFT: pip install peft==0.21.2") from None
        return get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, lora_dropout=0.0,
                                                target_modules=peft_targets(shape.family), init_lora_weights=True))

    # hf_train's Trainer (TrainingArguments(deepspeed=...) first, then the model), the LoRA wrap in between
    trainer = make_trainer(args, shape, world, wrap=add_lora if args.lora_rank else None)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    trainer.add_callback(progress_callback())
    trainer.train()
    engine = trainer.model_wrapped
    held = count_engine_bytes(engine)
    result = {"rank": rank, "world_size": world, "lora_rank": args.lora_rank, "zero_stage":
              engine.zero_optimization_stage(), "trainable_params": trainable, "total_params": total,
              "losses": {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e},
              "held": {k: v for k, v in held.items() if k != "paths"}}
    if args.save_adapter:
        trained = lora_weights(trainer.model)
        trainer.save_model(args.save_adapter)
        torch.distributed.barrier()
        result["saved_files"] = sorted(f.name for f in Path(args.save_adapter).iterdir())
        if rank == 0:  # a fresh base, the adapter read back from the file, compared with what was trained
            from peft import PeftModel

            base = build_model(shape)
            try:
                loaded = PeftModel.from_pretrained(base, args.save_adapter)
                back = {n.replace(".default", ""): p.detach().float()
                        for n, p in loaded.named_parameters() if "lora_" in n}
                result["reloaded_equal"] = sorted(back) == sorted(trained) and all(
                    torch.equal(back[n], trained[n]) for n in trained)
                result["reloaded_max_abs_diff"] = max((back[n] - trained[n]).abs().max().item() for n in trained)
            except Exception as e:  # the lesson is what went wrong: report it
                result["reload_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            result["trained_lora_norm"] = sum(t.norm().item() for t in trained.values())
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
