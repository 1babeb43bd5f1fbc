"""What a ZeRO engine keeps between the micro-steps of an accumulated optimizer step, tensor by tensor.

Run it through a launcher, on one rank (CPU or GPU)::

    torchrun --nproc_per_node 1 -m dscourse.scripts.accum_memory --variants 1 1+oo 2 2+oo 3 --out results/

For each ZeRO variant (stage, ``+oo`` optimizer offload, ``+op`` parameter offload, ``+ov`` overlap_comm on) it
builds an engine (bf16, gradient accumulation ``--grad-accum``), trains one whole optimizer step (Adam's states
appear), then, in the second step, after each micro-batch's backward, walks the engine
(:func:`dscourse.accounting.walk_tensors`: the module's parameters and their ``.grad``, the optimizer's attributes)
and records every storage that was not there when the first step ended, by attribute, deduplicated by storage.
``rank0.json`` holds per variant ``micro_steps``: ``[{attribute: bytes}, ...]`` (the last one is the boundary's)
and ``kept``: bytes by attribute of what stays from one step to the next (``accumulated_grads_in_cpu``).
:func:`dscourse.memory.peak.accumulation_terms` says what the non-boundary ones hold (tests/test_peak_engine.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys

from dscourse.scripts import finish, init


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="gpt2-tiny", choices=sorted(SHAPES), help="model shape (dscourse.models.SHAPES)")
    p.add_argument("--variants", nargs="+", default=["0", "1", "1+oo", "2", "2+oo", "3", "3+oo"],
                   help="e.g. 1 1+oo 2+ov 3+oo+op")
    p.add_argument("--grad-accum", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--zero-json", default="{}", help='extra zero_optimization keys, e.g. \'{"reduce_bucket_size": 1e6}\'')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for rank0.json")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def attribute(path: str) -> str:
    """``module.transformer.h.0.attn.c_attn.weight.grad`` -> ``param.grad``; ``optimizer.ipg_buckets[..]...`` ->
    ``ipg_buckets``: the attribute that holds the storage."""
    if path.startswith("module."):
        return "param.grad" if path.endswith(".grad") else "param"
    return re.split(r"[.\[]", path[len("optimizer."):])[0]


def storages(engine) -> dict:
    """{storage key: (attribute, bytes)} of everything reachable from the engine, the first path's attribute."""
    from dscourse.accounting import _storage_key, walk_tensors

    out = {}
    for path, t in walk_tensors(engine):
        if t.device.type == "meta":
            continue
        key, nbytes = _storage_key(t)
        if nbytes and key[2] and key not in out:
            out[key] = (attribute(path), nbytes)
    return out


def by_attribute(items) -> dict:
    out: dict = {}
    for name, nbytes in items:
        out[name] = out.get(name, 0) + nbytes
    return dict(sorted(out.items()))


def run_variant(text: str, args, device) -> dict:
    import deepspeed
    import torch

    from dscourse.config import build_config
    from dscourse.models import SHAPES, build_model, synthetic_batch

    parts = text.split("+")
    stage, flags = int(parts[0]), set(parts[1:])
    extra = json.loads(args.zero_json)
    if "ov" in flags:
        extra["overlap_comm"] = True
    shape = SHAPES[args.shape]
    torch.manual_seed(args.seed)
    model = build_model(shape)
    params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    gas = args.grad_accum
    cfg = build_config(stage, micro_batch=args.micro_batch, grad_accum=gas,
                       offload_optimizer="cpu" if "oo" in flags else "none",
                       offload_param="cpu" if "op" in flags else "none", torch_adam=False, extra_zero=extra)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)

    def micro(engine, step, m):
        ids = synthetic_batch(shape, args.micro_batch, step * gas + m, seed=args.seed, device=device)
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        del loss

    for m in range(gas):  # one whole step: Adam's states, the host accumulation buffers
        micro(engine, 0, m)
        engine.step()
    gc.collect()
    base = storages(engine)
    micro_steps = []
    for m in range(gas):
        micro(engine, 1, m)
        gc.collect()
        micro_steps.append(by_attribute(v for k, v in storages(engine).items() if k not in base))
        engine.step()
    kept = by_attribute(v for v in base.values() if v[0] == "accumulated_grads_in_cpu")
    result = {"variant": text, "stage": stage, "flags": sorted(flags), "params": params, "grad_accum": gas,
              "zero_config": cfg["zero_optimization"], "optimizer_class": type(engine.optimizer).__name__,
              "micro_steps": micro_steps, "kept": kept}
    if hasattr(engine, "destroy"):  # its hooks and buffers go before the next variant's engine
        engine.destroy()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world, device = init(args.seed)
    if world != 1:
        raise SystemExit("run it on one rank: --nproc_per_node 1")
    results = [run_variant(v, args, device) for v in args.variants]
    for r in results:
        print(r["variant"], json.dumps(r["micro_steps"][0]), flush=True)
    finish({"rank": rank, "shape": args.shape, "micro_batch": args.micro_batch, "variants": results}, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
