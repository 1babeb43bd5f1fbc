"""Peak GPU memory of a DeepSpeed training step, phase by phase, over a grid of models and settings.

One worker process per (model, ZeRO variant, allocator setting) builds the model from a shipped
``config.json`` (random weights), wraps it with ``deepspeed.initialize`` (bf16, DeepSpeed's default
``{"type": "AdamW"}``: FusedAdam, DeepSpeedCPUAdam with offload; ``gradient_clipping`` 1.0) and then, for
each (micro-batch, sequence, activation checkpointing) point, trains two steps and records per step and
phase (forward, backward, optimizer step) ``torch.cuda.max_memory_allocated()`` (peak statistics reset
between phases), ``max_memory_reserved()``, and ``memory_allocated()`` between steps. Optionally one step
is recorded with ``torch.cuda.memory._record_memory_history`` and reduced to a compact timeline.
Every result is one JSON line appended to ``--out`` as soon as it exists (a time-out keeps what finished).

    python3 benchmarks/gpu_peak.py --out peak.jsonl --deadline 480
    python3 benchmarks/gpu_peak.py --dry-run --out /tmp/peak.jsonl     # tiny models on CPU ranks
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

VARIANTS = ["0", "1", "2", "3", "2+oo", "3+oo", "3+oo+op"]  # stage, +oo optimizer offload, +op parameter offload
# (model preset, [(micro_batch, seq), ...]): GPT-2's learned positions stop at 1024
GRID = [
    ("Llama-3.2-1B", [(1, 2048), (2, 4096)]),
    ("Qwen2.5-0.5B", [(1, 2048), (2, 4096)]),
    ("Qwen3-0.6B", [(1, 2048), (2, 4096)]),
    ("gpt2-large", [(2, 1024), (8, 1024)]),
]
TRACE_VARIANTS = {"2", "3"}  # a memory timeline of one step, for the first model's workers
EXPANDABLE = ["0", "2", "3", "3+oo"]  # rerun with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (first model)


def parse_variant(text: str) -> tuple[int, str, str]:
    """``3+oo+op``: the stage, then optimizer (oo) and parameter (op) offload to the CPU, or to NVMe (no, np)."""
    parts = text.split("+")
    if not parts[0].isdigit() or int(parts[0]) not in (0, 1, 2, 3) or set(parts[1:]) - {"oo", "op", "no", "np"}:
        raise ValueError(f"not a variant: {text!r} (write e.g. 2, 3+oo, 3+oo+op, 3+no+np)")
    return (int(parts[0]), "cpu" if "oo" in parts else "nvme" if "no" in parts else "none",
            "cpu" if "op" in parts else "nvme" if "np" in parts else "none")


def append(out: Path, record: dict) -> None:
    """One JSON line, appended under a lock (workers run side by side)."""
    with open(out, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


def tiny(arch):
    """The dry run's stand-in for a preset: the same family and options, a few thousand parameters."""
    from dataclasses import replace

    kv = 2 if (arch.kv_heads or arch.heads) < arch.heads else 4
    return replace(arch, layers=2, hidden=64, heads=4, kv_heads=kv, vocab=512, intermediate=96,
                   head_dim=32 if arch.head_dim and arch.head_dim != arch.hidden // arch.heads else None,
                   positions=min(arch.positions, 128))


# ---------------------------------------------------------------- the worker: one engine, several points

def category(frames) -> str:
    """Where an allocation comes from: the innermost frame in DeepSpeed, transformers or this script."""
    for f in frames:
        name = f.get("filename", "")
        for key in ("deepspeed/", "transformers/", "torch/utils/checkpoint", "torch/nn/functional"):
            if key in name:
                return f"{name[name.index(key):]}:{f.get('line')}"
    return (f"{frames[0].get('filename', '?').rsplit('/', 1)[-1]}:{frames[0].get('line')}" if frames
            else "c++ (autograd engine)")


def timeline(snapshot: dict, start_bytes: int, marks: dict, points: int = 400) -> dict:
    """Replay one recorded step: allocated bytes over the events, and what is live at each phase's peak."""
    events = snapshot["device_traces"][0] if snapshot.get("device_traces") else []
    live, by_cat, total = {}, {"before the step": start_bytes}, start_bytes
    curve, peaks = [], {}
    phase_of = sorted((i, name) for name, i in marks.items())
    phase = "forward"
    for i, e in enumerate(events):
        for j, name in phase_of:
            if i >= j:
                phase = name
        action, size = e.get("action"), e.get("size", 0)
        if action == "alloc":
            cat = category(e.get("frames", []))
            live[e["addr"]] = (size, cat)
            by_cat[cat] = by_cat.get(cat, 0) + size
            total += size
        elif action == "free_completed" and e.get("addr") in live:
            size, cat = live.pop(e["addr"])
            by_cat[cat] -= size
            total -= size
        else:
            continue
        curve.append((i, total))
        if total > peaks.get(phase, {}).get("bytes", -1):
            peaks[phase] = {"bytes": total, "event": i,
                            "top": sorted(((c, b) for c, b in by_cat.items() if b > 0), key=lambda x: -x[1])[:14]}
    step = max(1, len(curve) // points)
    return {"events": len(events), "marks": marks, "curve": curve[::step] + curve[-1:], "peaks": peaks}


def worker(spec: dict) -> int:
    import torch

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(spec["port"]))
    for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(k, v)
    import deepspeed
    from transformers import AutoConfig, AutoModelForCausalLM

    from dscourse.config import build_config
    from dscourse.memory.hf import arch_from_file, hf_config_of, hf_presets

    cuda = torch.cuda.is_available()
    out = Path(spec["out"])
    stage, oo, op = parse_variant(spec["variant"])
    arch = arch_from_file(hf_presets()[spec["model"]])
    if spec["dry_run"]:
        arch = tiny(arch)
    base = {"model": spec["model"], "family": arch.family, "params": arch.params, "variant": spec["variant"],
            "stage": stage, "offload_optimizer": oo, "offload_param": op, "alloc_conf": spec["alloc_conf"],
            **({"lora": spec["lora"]} if spec.get("lora") else {})}
    if cuda:  # a "limit" stands in for a smaller card: the allocator refuses what a card of that size would
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, spec["limit"] / total) if "limit" in spec
                                                   else spec["memory_fraction"])
    torch.manual_seed(0)
    config = AutoConfig.for_model(**hf_config_of(arch))
    config._attn_implementation = "eager" if arch.family == "gemma2" else "sdpa"
    device = torch.device("cuda" if cuda else "cpu")
    with device:  # random weights initialised where they will live, in fp32 as a user's script has them
        model = AutoModelForCausalLM.from_config(config)
    if spec.get("lora"):  # PEFT's LoRA on the attention's q and v projections; the base frozen
        from peft import LoraConfig, get_peft_model

        from dscourse.memory.lora import peft_targets

        model = get_peft_model(model, LoraConfig(r=spec["lora"], lora_alpha=2 * spec["lora"], lora_dropout=0.0,
                                                 target_modules=peft_targets(arch.family)))
        base["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gas = spec.get("grad_accum", 1)
    swap = Path(spec["swap_dir"]) if "nvme" in (oo, op) else None
    cfg = build_config(stage, micro_batch=spec["sizes"][0][0], grad_accum=gas, offload_optimizer=oo,
                       offload_param=op, lr=1e-5, torch_adam=not cuda,  # CPU ranks: torch's AdamW (no C++ op)
                       nvme_path=str(swap) if swap else None)
    t0 = time.perf_counter()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    engine.train()
    base.update(optimizer=type(engine.optimizer).__name__,
                basic_optimizer=type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__,
                init_seconds=round(time.perf_counter() - t0, 2), zero_config=cfg["zero_optimization"])

    def alloc():
        return torch.cuda.memory_allocated() if cuda else None

    current = {"phase": None}  # which phase an out-of-memory error came from

    def phase(name, fn, *fn_args, **fn_kwargs):
        current["phase"] = name
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = alloc()
        t = time.perf_counter()
        value = fn(*fn_args, **fn_kwargs)
        if cuda:
            torch.cuda.synchronize()
        rec = {"start": start, "end": alloc(), "seconds": round(time.perf_counter() - t, 4),
               "peak": torch.cuda.max_memory_allocated() if cuda else None,
               "reserved_peak": torch.cuda.max_memory_reserved() if cuda else None}
        return value, rec

    g = torch.Generator().manual_seed(1)
    steps_done = 0
    for mb, seq in spec["sizes"]:
        seq = min(seq, arch.positions)
        for ckpt in spec.get("checkpointing", (False, True)):
            point = {**base, "micro_batch": mb, "seq": seq, "checkpointing": ckpt, "grad_accum": gas,
                     **{k: spec[k] for k in ("budget", "limit") if k in spec}}
            if ckpt:
                engine.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                engine.module.gradient_checkpointing_disable()
            if cuda:
                torch.cuda.empty_cache()
            steps = []
            try:
                for _ in range(spec["steps"]):
                    between, micro = alloc(), []
                    for _ in range(gas):  # engine.step() updates only at the accumulation boundary
                        ids = torch.randint(0, arch.vocab, (mb, seq), generator=g).to(device)
                        out_, fwd = phase("forward", engine, input_ids=ids, labels=ids)
                        loss = out_.loss
                        del out_  # the logits go with it, as in a training loop that keeps only the loss
                        _, bwd = phase("backward", engine.backward, loss)
                        del loss
                        _, stp = phase("step_phase", engine.step)
                        micro.append({"forward": fwd, "backward": bwd, "step_phase": stp})
                    top = {k: max((m[k] for m in micro), key=lambda r: r["peak"] or 0)
                           for k in ("forward", "backward", "step_phase")}
                    steps.append({"step": steps_done, "between": between, **top, "after": alloc(),
                                  **({"micro_peaks": [[m[k]["peak"] for k in ("forward", "backward", "step_phase")]
                                                      for m in micro]} if gas > 1 else {})})
                    steps_done += 1
                point["steps"] = steps
                if swap:  # ZeRO-Infinity's swap files while the engine holds them
                    from dscourse.scripts import dir_bytes

                    files = dir_bytes(swap)
                    point["swap_bytes"], point["swap_files"] = sum(files.values()), len(files)
                if cuda:
                    stats = torch.cuda.memory_stats()
                    point["alloc_retries"], point["ooms"] = stats.get("num_alloc_retries"), stats.get("num_ooms")
                    point["reserved_now"] = torch.cuda.memory_reserved()
            except torch.OutOfMemoryError as e:
                point.update(steps=steps, error=f"out of memory: {str(e)[:300]}", oom_phase=current["phase"],
                             oom_message=str(e)[:1200], oom_allocated=alloc(),
                             oom_reserved=torch.cuda.memory_reserved() if cuda else None)
                engine.optimizer.zero_grad() if hasattr(engine.optimizer, "zero_grad") else None
            append(out, {"kind": "point", **point})
            print(f"{spec['model']} {spec['variant']} mb={mb} seq={seq} ckpt={ckpt}: "
                  + (point.get("error") or " ".join(f"{s['forward']['peak']}/{s['backward']['peak']}/"
                                                   f"{s['step_phase']['peak']}" for s in steps)), flush=True)
    if spec["trace"] and cuda:
        mb, seq = spec["sizes"][0]
        engine.module.gradient_checkpointing_disable()
        ids = torch.randint(0, arch.vocab, (mb, min(seq, arch.positions)), generator=g).to(device)
        torch.cuda.synchronize()
        start = alloc()
        torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")

        def events():
            return len(torch.cuda.memory._snapshot()["device_traces"][0])

        loss = engine(input_ids=ids, labels=ids).loss
        torch.cuda.synchronize()
        marks = {"forward": 0, "backward": events()}
        engine.backward(loss)
        del loss
        torch.cuda.synchronize()
        marks["step"] = events()
        engine.step()
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        append(out, {"kind": "trace", **base, "micro_batch": mb, "seq": seq, "checkpointing": False,
                     "start": start, "after": alloc(), **timeline(snapshot, start, marks)})
    return 0


# ---------------------------------------------------------------- the driver

OPS = {"fused_adam": "FusedAdamBuilder", "cpu_adam": "CPUAdamBuilder", "async_io": "AsyncIOBuilder"}


def build_ops(timeout: float, names=("fused_adam", "cpu_adam")) -> dict:
    """Compile FusedAdam and DeepSpeedCPUAdam (and async_io for the NVMe variants) side by side once, before the
    workers need them."""
    code = "from deepspeed.ops.op_builder import {0}; {0}().load()"
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", code.format(OPS[b])], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for b in names]
    result = {}
    for b, p in zip(names, procs):
        try:
            log, _ = p.communicate(timeout=timeout)
            result[b] = {"rc": p.returncode, "tail": log[-500:] if p.returncode else ""}
        except subprocess.TimeoutExpired:
            p.kill()
            result[b] = {"rc": None, "tail": "timed out"}
    result["seconds"] = round(time.time() - t0, 1)
    return result


def jobs(args) -> list[dict]:
    out = []
    for c in json.loads(args.checks) if args.checks else []:  # a planner's picks, measured before the grid
        out.append({"model": c["model"], "variant": c["variant"], "sizes": [(c["micro_batch"], c["seq"])],
                    "checkpointing": [c["checkpointing"]], "grad_accum": c["grad_accum"], "alloc_conf": "",
                    "trace": False, **{k: c[k] for k in ("budget", "limit", "lora") if k in c}})
    if args.no_grid:
        return out + jobs_expandable(args)
    first = args.models[0]
    grid = [(m, s) for m, s in GRID if m in args.models] if not args.dry_run else \
        [(m, [(1, 32), (2, 64)]) for m in args.models]
    for model, sizes in grid:
        for v in args.variants:
            out.append({"model": model, "variant": v, "sizes": sizes, "alloc_conf": "",
                        "trace": model == first and v in TRACE_VARIANTS, **({"lora": args.lora} if args.lora else {})})
    return out + jobs_expandable(args)


def jobs_expandable(args) -> list[dict]:
    if not args.expandable:
        return []
    first = args.models[0]
    sizes = dict(GRID).get(first, [(1, 32), (2, 64)]) if not args.dry_run else [(1, 32), (2, 64)]
    return [{"model": first, "variant": v, "sizes": sizes, "alloc_conf": "expandable_segments:True", "trace": False}
            for v in EXPANDABLE if v in args.variants]


def fold(jsonl: Path, out: Path, note: str) -> None:
    """The JSON lines of a run as one committed object: ``provenance`` (with ``note``), ``ops_build``, ``points``,
    ``traces``, ``workers`` and ``skipped``, in the order they were written."""
    lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    kinds = {"points": "point", "traces": "trace", "workers": "worker"}
    data = {"provenance": {**next(r for r in lines if r["kind"] == "provenance"), "note": note}}
    data["provenance"].pop("kind")
    build = [r for r in lines if r["kind"] == "ops_build"]
    if build:
        data["ops_build"] = {k: v for k, v in build[0].items() if k != "kind"}
    for key, kind in kinds.items():
        data[key] = [{k: v for k, v in r.items() if k != "kind"} for r in lines if r["kind"] == kind]
    skipped = [r for r in lines if r["kind"] == "skipped"]
    if skipped:
        data["skipped"] = skipped[0]["jobs"]
    out.write_text(json.dumps(data, indent=1) + "\n")


def provenance(args) -> dict:
    from dscourse.provenance import environment

    return {"kind": "provenance", **environment(), "cpu_count": os.cpu_count(), "precision": "bf16",
            "optimizer": "DeepSpeed default {'type': 'AdamW'} (FusedAdam; DeepSpeedCPUAdam with offload)"
            if not args.dry_run else "torch AdamW (dry run on CPU)", "gradient_clipping": 1.0,
            "buckets": "DeepSpeed defaults", "attention": "sdpa (gemma2: eager)", "steps_per_point": args.steps,
            "script": "benchmarks/gpu_peak.py", "dry_run": args.dry_run, "argv": sys.argv[1:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="JSON-lines file to append to (required)")
    p.add_argument("--models", nargs="+", default=[m for m, _ in GRID])
    p.add_argument("--variants", nargs="+", default=VARIANTS, help="e.g. 0 2 3+oo 3+oo+op")
    p.add_argument("--steps", type=int, default=2, help="steps per point")
    p.add_argument("--parallel", type=int, default=2, help="workers side by side (allocator stats are per process)")
    p.add_argument("--deadline", type=float, default=540, help="seconds after which no worker starts")
    p.add_argument("--worker-timeout", type=float, default=150)
    p.add_argument("--no-expandable", dest="expandable", action="store_false")
    p.add_argument("--checks", help="JSON list of points to measure first: {model, variant, micro_batch, seq, "
                   "checkpointing, grad_accum[, budget][, limit][, lora]}; a planner's pick carries the budget it was picked for; "
                   "a limit (bytes) caps the process's GPU memory as a card of that size would; lora: PEFT LoRA's r")
    p.add_argument("--no-grid", action="store_true", help="only the --checks and the expandable_segments reruns")
    p.add_argument("--lora", type=int, default=0, help="the grid's models with PEFT LoRA of this r on q_proj, v_proj")
    p.add_argument("--swap-dir", default="/tmp/dscourse-swap", help="nvme_path of the NVMe variants (a folder per worker)")
    p.add_argument("--dry-run", action="store_true", help="tiny stand-ins of the models on the CPU")
    p.add_argument("--fold", nargs=3, metavar=("JSONL", "JSON", "NOTE"),
                   help="only write the JSON lines of a run as one object, as committed in dscourse/data")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.fold:
        fold(Path(args.fold[0]), Path(args.fold[1]), args.fold[2])
        return 0
    if not args.out:
        p.error("--out is required")
    for v in args.variants:
        parse_variant(v)
    t0, out = time.time(), Path(args.out)
    append(out, provenance(args))
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if cuda:
        nvme = any("nvme" in parse_variant(j["variant"])[1:] for j in jobs(args))
        append(out, {"kind": "ops_build", **build_ops(240, tuple(OPS) if nvme else ("fused_adam", "cpu_adam"))})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, args.parallel)))}  # DeepSpeedCPUAdam
    if not cuda:
        env.update(CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu")
    todo, running, port = jobs(args), [], 29600
    while todo or running:
        while todo and len(running) < max(1, args.parallel) and time.time() - t0 < args.deadline:
            job = todo.pop(0)
            port += 1
            spec = {**job, "out": str(out), "port": port, "steps": args.steps, "dry_run": args.dry_run,
                    "memory_fraction": 0.95 / max(1, args.parallel), "swap_dir": str(Path(args.swap_dir) / str(port))}
            wenv = {**env, "PYTORCH_CUDA_ALLOC_CONF": job["alloc_conf"]} if job["alloc_conf"] else env
            timeout = min(args.worker_timeout, max(30.0, args.deadline + 60 - (time.time() - t0)))
            proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=wenv,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((proc, job, time.time(), timeout))
        if todo and not running:  # past the deadline with nothing left running
            break
        time.sleep(0.2)
        for item in list(running):
            proc, job, started, timeout = item
            if proc.poll() is None and time.time() - started < timeout:
                continue
            if proc.poll() is None:
                proc.kill()
            log = proc.communicate()[0]
            running.remove(item)
            rec = {"kind": "worker", "model": job["model"], "variant": job["variant"], "alloc_conf": job["alloc_conf"],
                   "rc": proc.returncode, "seconds": round(time.time() - started, 1)}
            if proc.returncode:
                rec["tail"] = log[-1500:]
            append(out, rec)
            print(f"[{time.time() - t0:.0f}s] {job['model']} {job['variant']} {job['alloc_conf']} rc={proc.returncode}"
                  f" ({rec['seconds']} s)\n{log[-600:] if proc.returncode else ''}", flush=True)
    if todo:
        append(out, {"kind": "skipped", "jobs": [(j["model"], j["variant"], j["alloc_conf"]) for j in todo]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
