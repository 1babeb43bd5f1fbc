"""Train a transformer for a few steps under one ZeRO setting and record what each rank holds.

Run it through a launcher, one process per rank, for example::

    torchrun --nproc_per_node 2 -m dscourse.scripts.zero_memory --stage 2 --out results/

Every rank writes ``rank<N>.json``: the bytes its engine holds by category (counted by
:func:`dscourse.accounting.count_engine_bytes`), and on a GPU ``torch.cuda.memory_allocated()``
after ``deepspeed.initialize``, after the last optimizer step, and the peak.

``--variants 0 1 2 3 2+oo 3+oo+op`` builds one engine after the other in the same ranks (each from the same seed),
and ``rank<N>.json`` holds ``{"variants": [one record per variant]}`` (read them with
:func:`dscourse.calibration.variant_runs`): one launch instead of six, since starting ranks (torch, DeepSpeed and
transformers imported in every one) costs more than training a tiny model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from dscourse.scripts import finish, init


def parse_variant(text: str) -> tuple[int, str, str]:
    from dscourse.calibration import parse_variant

    try:
        return parse_variant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES), help="model shape (dscourse.models.SHAPES)")
    p.add_argument("--stage", type=int, default=2, choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--offload-optimizer", default="none", choices=["none", "cpu"])
    p.add_argument("--offload-param", default="none", choices=["none", "cpu"])
    p.add_argument("--variants", nargs="+", type=parse_variant, default=None, metavar="VARIANT",
                   help="several engines in one launch: stage, +oo optimizer offload, +op parameter offload "
                        "(e.g. 0 1 2 3 2+oo 3+oo+op); replaces --stage and --offload-*")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zero-json", default="{}", help='extra zero_optimization keys, e.g. \'{"reduce_bucket_size": 2e8}\'')
    p.add_argument("--variant-zero-json", nargs="+", default=None, metavar="JSON",
                   help="with --variants: extra zero_optimization keys for each variant in turn, instead of --zero-json "
                        "(e.g. --variants 3 3 --variant-zero-json '{}' '{\"reduce_bucket_size\": 1e7}')")
    p.add_argument("--zero-init", action="store_true", help="build the model under deepspeed.zero.Init (stage 3)")
    p.add_argument("--out", required=True, help="folder for rank<N>.json")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = p.parse_args(argv)
    if args.variant_zero_json is not None:
        if args.variants is None or len(args.variant_zero_json) != len(args.variants):
            p.error(f"--variant-zero-json needs one JSON object per variant: {len(args.variant_zero_json)} given for "
                    f"{len(args.variants or [])} --variants")
        for text in args.variant_zero_json:
            try:
                json.loads(text)
            except ValueError as e:
                p.error(f"--variant-zero-json {text!r} is not JSON ({e}): write it as '{{\"key\": value}}'")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = init(args.seed)
    if args.variants is None:
        result = run_variant(args, args.stage, args.offload_optimizer, args.offload_param, rank, world, device)
    else:
        zero_jsons = args.variant_zero_json or [args.zero_json] * len(args.variants)
        result = {"rank": rank, "world_size": world,
                  "variants": [run_variant(args, *v, rank, world, device, zero_json)
                               for v, zero_json in zip(args.variants, zero_jsons)]}
    finish(result, args.out, rank)
    return 0


def run_variant(args, stage: int, offload_optimizer: str, offload_param: str, rank: int, world: int, device,
                zero_json: str | None = None) -> dict:
    import gc

    import deepspeed
    import torch

    from dscourse.accounting import count_engine_bytes
    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, count_params, persistent_params, synthetic_batch

    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)  # every variant of a launch starts from the same weights
    cfg = build_config(stage, micro_batch=args.micro_batch, world_size=world,
                       offload_optimizer=offload_optimizer, offload_param=offload_param,
                       extra_zero=json.loads(args.zero_json if zero_json is None else zero_json))
    shape = SHAPES[args.shape]
    if args.zero_init and stage == 3:
        with deepspeed.zero.Init(config_dict_or_path=cfg):
            model = build_model(shape)
    else:
        model = build_model(shape)
    total_params, largest_layer = count_params(model)
    persistent = persistent_params(model) if not args.zero_init else None

    def cuda_now():
        return torch.cuda.memory_allocated() if cuda else None

    before_init = cuda_now()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    after_init = cuda_now()
    held_after_init = count_engine_bytes(engine)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    losses, t0, forward_activations = [], time.perf_counter(), None
    for step in range(args.steps):
        ids = synthetic_batch(shape, args.micro_batch, step * world + rank, seed=args.seed, device=device)
        before_forward = cuda_now()
        loss = engine(input_ids=ids, labels=ids).loss
        if cuda and step == 0:  # what the forward pass leaves alive for backward: the activations
            forward_activations = cuda_now() - before_forward
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        if rank == 0:
            print(f"stage {stage} step {step}: loss {loss.item():.4f}", flush=True)
    del loss
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    held = count_engine_bytes(engine)
    paths = held.pop("paths")
    held_after_init.pop("paths")

    result = {
        "rank": rank, "world_size": world, "shape": args.shape, "shape_spec": shape.as_dict(),
        "stage": stage, "offload_optimizer": offload_optimizer, "offload_param": offload_param,
        "zero_init": bool(args.zero_init and stage == 3), "zero_config": cfg["zero_optimization"],
        "params": total_params, "largest_layer": largest_layer, "persistent_params": persistent,
        "micro_batch": args.micro_batch,
        "optimizer_class": type(engine.optimizer).__name__,
        "held_after_init": held_after_init, "held_after_step": held,
        "paths": {k: list(v) for k, v in sorted(paths.items(), key=lambda kv: -kv[1][2])[:40]},
        "cuda_allocated_before_init": before_init, "cuda_allocated_after_init": after_init,
        "cuda_allocated_after_step": cuda_now(),
        "cuda_peak_during_steps": torch.cuda.max_memory_allocated() if cuda else None,
        "cuda_forward_activations": forward_activations,
        "losses": losses, "seconds": seconds,
    }
    engine.destroy()  # its hooks and buffers go before the next variant's engine
    del engine, model
    gc.collect()
    return result


if __name__ == "__main__":
    sys.exit(main())
