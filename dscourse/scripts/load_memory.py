"""Peak host memory of each rank while it loads a saved model with ``from_pretrained``, with and without ZeRO-3.

    python -m dscourse.scripts.load_memory --save DIR --shape llama-load-cpu      # once: a random model, saved
    torchrun --nproc_per_node 2 -m dscourse.scripts.load_memory --model DIR --how every_rank --out results/
    torchrun --nproc_per_node 2 -m dscourse.scripts.load_memory --model DIR --how zero3 --out results/

``--how``:
  ``every_rank``  ``AutoModelForCausalLM.from_pretrained(DIR)`` on every rank, as a script that calls
                  ``deepspeed.initialize`` only afterwards does: each rank has the whole model; in the file's dtype
                  (``--load-dtype auto``) its parameters are views of the memory-mapped file, converting
                  (``--load-dtype float32``) makes each rank a private copy.
  ``zero3``       ``HfDeepSpeedConfig`` with a ZeRO-3 config first (``TrainingArguments(deepspeed=...)`` does this
                  for you): transformers builds the model inside ``deepspeed.zero.Init``, partitioned as it is built,
                  and only rank 0 reads the checkpoint's values (the other ranks map it to the meta device); each
                  module's values are then copied into its partitions.
Run each way in its own launch: a process's memory high-water mark cannot be reset. While ``from_pretrained`` runs,
each rank samples its own ``/proc/self/status`` every millisecond or so: ``RssAnon`` (its private memory) and
``RssFile`` (pages of mapped files, such as the memory-mapped safetensors file, which the kernel shares between the
ranks and can drop). It reports the peaks above what it held before the load (a tiny model of the same family,
saved in DIR/warmup by ``--save``, is loaded first, so one-time imports and set-up are not counted), and the
parameter bytes it holds after. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from dscourse.scripts import finish, init

HOWS = ("every_rank", "zero3")
STATUS = Path("/proc/self/status")


def parse_args(argv=None):
    from dscourse.models import SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--model", required=True, help="a folder with config.json and model.safetensors (--save writes one)")
    p.add_argument("--how", choices=HOWS, help="how every rank loads it (required unless --save)")
    p.add_argument("--save", action="store_true", help="only build a random model of --shape and save it to --model")
    p.add_argument("--shape", default="llama-load-cpu", choices=sorted(SHAPES))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="the dtype --save writes")
    p.add_argument("--load-dtype", default="auto", choices=["auto", "float32"],
                   help="from_pretrained's dtype: auto keeps the file's (bfloat16); float32 converts as it loads")
    p.add_argument("--out", help="folder for rank<N>.json (required unless --save)")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.save and (not args.how or not args.out):
        p.error("--how and --out are required to load (or give --save to write the model first)")
    if not args.save and not (Path(args.model) / "config.json").exists():
        p.error(f"--model {args.model}: no config.json there; write one first with --save --model {args.model}")
    if not STATUS.exists():
        p.error("this measurement reads /proc/self/status, which only Linux has")
    return args


def rss() -> dict:
    """This process's resident memory now, in bytes: private (RssAnon) and of mapped files (RssFile)."""
    got = {}
    for line in STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            got[key] = int(value.split()[0]) * 1024  # reported in kB
    return {"private": got["RssAnon"], "mapped": got["RssFile"]}


class Sampler:
    """The largest :func:`rss` seen while the ``with`` block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, rss(), threading.Event()

    def _run(self):
        while not self._stop.is_set():
            now = rss()
            self.peak = {k: max(self.peak[k], now[k]) for k in now}
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        now = rss()
        self.peak = {k: max(self.peak[k], now[k]) for k in now}
        return False


WARMUP = "warmup"  # a tiny model of the same family in MODEL/warmup, loaded first so one-time costs are not counted


def save(args) -> int:
    import torch

    from dscourse.models import SHAPES, build_model

    shape = SHAPES[args.shape]
    for folder, which in ((Path(args.model), shape), (Path(args.model) / WARMUP, SHAPES[f"{shape.family}-tiny"])):
        torch.manual_seed(0)
        model = build_model(which).to(getattr(torch, args.dtype))
        model.save_pretrained(folder)  # config.json and model.safetensors
    n = sum(p.numel() for p in build_model(shape).parameters())
    print(f"saved {args.shape}: {n:,} parameters in {args.dtype} to {args.model}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.save:
        return save(args)
    import gc

    import torch.distributed as dist
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from dscourse.config import build_config

    rank, world, _ = init(0)
    keep_alive = None
    if args.how == "zero3":
        keep_alive = HfDeepSpeedConfig(build_config(3, micro_batch=1, world_size=world))  # noqa: F841 (a weak ref)
    # The same path once on a tiny model first: the modules it imports on first use and the buffers it sets up once
    # (about 100 MB per rank under ZeRO-3, seen with memray) belong to any load, not to this model's size.
    warm = AutoModelForCausalLM.from_pretrained(Path(args.model) / WARMUP,
                                                dtype="auto" if args.load_dtype == "auto" else args.load_dtype)
    del warm
    gc.collect()
    dist.barrier()  # every rank starts loading at once, as in a real launch
    before = rss()
    t0 = time.perf_counter()
    import torch

    dtype = "auto" if args.load_dtype == "auto" else getattr(torch, args.load_dtype)
    with Sampler() as sampled:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    seconds = time.perf_counter() - t0
    params = list(model.parameters())
    # a partitioned parameter is an empty tensor; this rank's shard of it is ds_tensor
    held = [p.ds_tensor if hasattr(p, "ds_tensor") else p for p in params]
    result = {"rank": rank, "world_size": world, "how": args.how, "load_dtype": args.load_dtype,
              "seconds": round(seconds, 3),
              "before": before, "peak": sampled.peak, "after": rss(),
              "peak_above_before": {k: sampled.peak[k] - before[k] for k in before},
              "full_params": sum(getattr(p, "ds_numel", p.numel()) for p in params),
              "held_params": sum(t.numel() for t in held),
              "held_param_bytes_on_host": sum(t.numel() * t.element_size() for t in held if t.device.type == "cpu"),
              "dtype": str(params[0].dtype).removeprefix("torch."),
              "file_bytes": sum(f.stat().st_size for f in Path(args.model).glob("*.safetensors"))}
    if rank == 0:
        print(f"{args.how}: rank 0 private +{result['peak_above_before']['private'] / 1e6:.0f} MB, "
              f"mapped +{result['peak_above_before']['mapped'] / 1e6:.0f} MB at the peak", flush=True)
    finish(result, args.out, rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
