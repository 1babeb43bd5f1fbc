"""Build a model three ways under a ZeRO-3 config and check what each rank holds and whether the loss is sane.

    torchrun --nproc_per_node 2 -m dscourse.scripts.zero_init --build plain from_config zero_init --out results/

``--build`` (one or more, run one after the other):
  ``plain``        ``GPT2LMHeadModel(config)``: the whole model on every rank until ``deepspeed.initialize``.
  ``from_config``  ``AutoModelForCausalLM.from_config(config)`` after ``HfDeepSpeedConfig``: transformers builds
                   it inside ``deepspeed.zero.Init`` (partitioned as it is built) and then initialises the
                   weights module by module with the parameters gathered.
  ``zero_init``    ``with deepspeed.zero.Init(): GPT2LMHeadModel(config)``, as DeepSpeed's docs show for a
                   custom model: partitioned too, but the model's own weight init runs on empty shards.
``--padded SHAPE`` then also builds SHAPE with a padding token (``pad_token_id`` 0; Gemma-2's, Phi-3's and many Llama
configs have one) by ``from_config`` and by a bare ``zero.Init``: the embedding then has a ``padding_idx`` whose row
transformers' ``_init_weights`` zeroes, and under a bare ``zero.Init`` that row of an empty shard does not exist
(``IndexError``). A build that raises is reported with its error instead of a result.
Each rank reports the parameter elements it holds after construction (its shard, when partitioned), the standard deviation of the
word embeddings (gathered) and the loss of the first step, by build; rank 0 prints them.
"""

from __future__ import annotations

import argparse
import math
import sys

from dscourse.scripts import finish, init

BUILDS = ("plain", "from_config", "zero_init")
PAD_TOKEN_ID = 0


def parse_args(argv=None):
    from dscourse.models import SHAPES

    TINY = sorted(s for s in SHAPES if s.endswith("-tiny"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--build", required=True, nargs="+", choices=BUILDS)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES))
    p.add_argument("--padded", default=None, choices=TINY, metavar="SHAPE",
                   help="also build this shape with a padding token, by from_config and under a bare zero.Init")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def one_build(build: str, config, ds_config: dict, shape, args, rank: int) -> dict:
    """Build the model one way, train one step, and say what each rank held and how the step went."""
    import gc

    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from dscourse.models import synthetic_batch

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # GPT2LMHeadModel, LlamaForCausalLM
    torch.manual_seed(args.seed)
    try:
        if build == "plain":
            model = model_class(config)
        elif build == "from_config":
            model = AutoModelForCausalLM.from_config(config)
        else:
            with deepspeed.zero.Init(config_dict_or_path=ds_config):
                model = model_class(config)
    except Exception as e:  # the lesson is the error itself: report it, go on with the next build
        where = e.__traceback__
        while where.tb_next is not None:
            where = where.tb_next
        error = f"{type(e).__name__}: {e} (in {where.tb_frame.f_code.co_name})"
        if rank == 0:
            print(f"{build} ({model_class.__name__}): {error}", flush=True)
        gc.collect()
        return {"error": error, "model_class": model_class.__name__}
    # A partitioned parameter is an empty tensor; its shard of ds_numel / world elements is in ds_tensor.
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())
    full = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    wte = model.get_input_embeddings().weight
    with deepspeed.zero.GatheredParameters([wte], enabled=hasattr(wte, "ds_id")):
        wte_std = wte.float().std().item()

    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
    device = next(engine.module.parameters()).device
    ids = synthetic_batch(shape, args.micro_batch, rank, seed=args.seed, device=device)
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()
    result = {"model_class": model_class.__name__, "held_after_build": held, "full_params": full, "wte_std": wte_std,
              "initializer_range": config.initializer_range, "first_loss": loss.item(),
              "uniform_loss": math.log(shape.vocab)}
    if rank == 0:
        print(f"{build}: held {held:,} of {full:,} elements after construction, "
              f"wte std {wte_std:.3f}, first loss {loss.item():.3f}", flush=True)
    engine.destroy()
    del engine, model
    gc.collect()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers.integrations import HfDeepSpeedConfig

    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model

    rank, world, _ = init(args.seed)
    shape = SHAPES[args.shape]
    ds_config = build_config(3, micro_batch=args.micro_batch, world_size=world)
    config = build_model(shape).config  # the same config every way (built once, unpartitioned)

    keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 - transformers looks it up through a weak reference
    builds = {build: one_build(build, config, ds_config, shape, args, rank) for build in args.build}
    result = {"rank": rank, "builds": builds}
    if args.padded:
        padded_shape = SHAPES[args.padded]
        padded = build_model(padded_shape).config
        padded.pad_token_id = PAD_TOKEN_ID
        result["padded"] = {"shape": args.padded, "pad_token_id": PAD_TOKEN_ID,
                            "builds": {b: one_build(b, padded, ds_config, padded_shape, args, rank)
                                       for b in ("from_config", "zero_init")}}
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
