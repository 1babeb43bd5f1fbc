"""Prove a DeepSpeed config: load it and train a few steps with it, on every rank.

    torchrun --nproc_per_node 2 -m dscourse.scripts.train_step --config ds_config.json --out results/
    torchrun --nproc_per_node 2 -m dscourse.scripts.train_step --config ds_config.json --trainer --out results/

Without ``--trainer`` the file goes to ``deepspeed.initialize`` as it is (DeepSpeed reads it with
hjson). With ``--trainer`` it goes to ``TrainingArguments(deepspeed=FILE)``, which fills every
``"auto"`` from the arguments, exactly as a reader's training script would. Each rank writes
``rank<N>.json``: the losses, the ZeRO stage and optimizer DeepSpeed really built, and the config
values it ended up with. Several files without ``--trainer`` build one engine after the other in the same
ranks (``rank<N>.json`` then holds ``{"configs": [one record per file]}``): starting ranks costs more than the step.
"""

from __future__ import annotations

import argparse
import sys

from dscourse.scripts import engine_summary, finish, init


def parse_args(argv=None):
    from dscourse.models import SHAPES, learning_rate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, nargs="+", help="the DeepSpeed config file(s) to prove")
    p.add_argument("--trainer", action="store_true", help="go through the Hugging Face Trainer")
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=2, help="per-device batch (Trainer) / micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None,
                   help="the Trainer's learning rate (--trainer); default: dscourse.models.learning_rate(--shape)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trainer and len(args.config) > 1:
        p.error("--trainer proves one config per launch (the Trainer's Accelerate state is one per process)")
    args.lr = args.lr or learning_rate(args.shape)
    return args


def run_plain(args, config: str, shape, rank, world) -> dict:
    import deepspeed
    import torch

    from dscourse.models import build_model, synthetic_batch

    torch.manual_seed(args.seed)  # every config of a launch starts from the same weights
    model = build_model(shape)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    losses = []
    for step in range(args.steps):
        ids = synthetic_batch(shape, engine.train_micro_batch_size_per_gpu(), step * world + rank, seed=args.seed)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    summary = engine_summary(engine)
    engine.destroy()  # its hooks and buffers go before the next config's engine
    return {"losses": losses, "config": config, **summary}


def run_trainer(args, config: str, shape, rank, world) -> dict:
    from dscourse.scripts.hf_train import make_trainer

    args.config, args.output_dir, args.save_steps = config, None, 0
    trainer = make_trainer(args, shape, world)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"losses": losses, "config": config, **engine_summary(trainer.model_wrapped)}


def main(argv=None) -> int:
    args = parse_args(argv)

    from dscourse.models import SHAPES

    rank, world, _ = init(args.seed)
    shape = SHAPES[args.shape]
    run = run_trainer if args.trainer else run_plain
    results = [{**run(args, config, shape, rank, world), "rank": rank, "world_size": world, "trainer": args.trainer}
               for config in args.config]
    result = results[0] if len(results) == 1 else {"rank": rank, "world_size": world, "configs": results}
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
