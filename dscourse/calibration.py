"""Formula against reality: the ``allocated`` family beside counted engines and measured GPUs.

Pure Python over the JSON records that ``dscourse.scripts.zero_memory`` writes (one per rank) and
that ``benchmarks/gpu_memory.py`` collects (``dscourse/data/gpu_memory_*.json``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import package_path
from .memory import STATE_CATEGORIES, Setup, estimate, format_bytes

DATA = package_path("data")


def setup_of(rec: dict) -> Setup:
    return Setup(params=rec["params"], gpus=rec["world_size"], stage=rec["stage"],
                 offload_optimizer=rec["offload_optimizer"], offload_param=rec["offload_param"],
                 largest_layer=rec.get("largest_layer"),
                 persistent_params=(rec.get("persistent_params") or 0) if rec["stage"] == 3 else 0)


def parse_variant(text: str) -> tuple[int, str, str]:
    """``"3+oo+op"`` -> ``(3, "cpu", "cpu")``: a ZeRO stage, ``+oo`` optimizer offload, ``+op`` parameter offload."""
    stage, *flags = text.split("+")
    if stage not in ("0", "1", "2", "3") or not set(flags) <= {"oo", "op"} or ("op" in flags and stage != "3"):
        raise ValueError(f"{text!r} is not a ZeRO variant: a stage 0-3, then +oo (optimizer offload) and, "
                         "for stage 3 only, +op (parameter offload), e.g. 2+oo or 3+oo+op")
    return int(stage), "cpu" if "oo" in flags else "none", "cpu" if "op" in flags else "none"


def variant_runs(ranks: list[dict]) -> dict[tuple[int, str, str], list[dict]]:
    """``{(stage, offload_optimizer, offload_param): [rank 0's record, rank 1's, ...]}`` of a ``zero_memory
    --variants`` launch."""
    out: dict = {}
    for rank in sorted(ranks, key=lambda r: r["rank"]):
        for rec in rank["variants"]:
            out.setdefault((rec["stage"], rec["offload_optimizer"], rec["offload_param"]), []).append(rec)
    return out


def variant_name(rec: dict) -> str:
    name = f"ZeRO-{rec['stage']}"
    if rec["offload_optimizer"] != "none":
        name += " +offload opt"
    if rec["offload_param"] != "none":
        name += " +offload param"
    return name


def counted_vs_formula(rec: dict) -> list[list]:
    """Per category, bytes the rank's engine holds (all devices) and the ``allocated`` formula's per-rank bytes."""
    est = estimate(setup_of(rec), "allocated")
    per_node = setup_of(rec).per_node
    held: dict = {}
    for cats in rec["held_after_step"].values():
        for cat, n in cats.items():
            held[cat] = held.get(cat, 0) + n
    rows = []
    for cat in STATE_CATEGORIES:
        if cat == "workspace":  # not a tensor of the engine
            continue
        formula = est.gpu.get(cat, 0) + (est.cpu or {}).get(cat, 0) / per_node
        rows.append([cat, held.get(cat, 0), int(round(formula))])
    return rows


def counted_table(runs: dict) -> tuple[list[str], list[list]]:
    """(headers, rows) of rank 0's counted bytes: one row per (ranks, stage) of ``runs`` (``{(world, stage): ranks}``),
    one column per category any of them holds, and the largest difference from the ``allocated`` formula."""
    counted = {key: counted_vs_formula(ranks[0]) for key, ranks in runs.items()}
    cats = [cat for cat in STATE_CATEGORIES if any(c == cat and (n or f) for rows in counted.values() for c, n, f in rows)]
    rows = []
    for (world, stage), cat_rows in counted.items():
        held = {cat: n for cat, n, _ in cat_rows}
        worst = max((abs(f - n) / n for _, n, f in cat_rows if n), default=0.0)
        rows.append([world, f"ZeRO-{stage}", *(f"{held.get(cat, 0):,}" for cat in cats), f"{100 * worst:.3f}%"])
    return ["ranks", "stage", *cats, "largest difference from the formula"], rows


def load_gpu_runs(paths=None) -> tuple[list[dict], list[dict]]:
    """(provenance of each file, every successful rank-0 record) from the committed GPU measurements."""
    files = [Path(p) for p in paths] if paths else sorted(DATA.glob("gpu_memory_*.json"))
    provenance, records = [], []
    for f in files:
        data = json.loads(f.read_text())
        provenance.append({"file": f.name, **data["provenance"]})
        for run in data["runs"]:
            if run.get("ranks"):
                records.append(run["ranks"][0])
    # one model after another, in the benchmark's order: ZeRO-0..3, then the offload variants
    records.sort(key=lambda r: (r["shape"], r["offload_optimizer"] != "none", r["offload_param"] != "none",
                                r["stage"], r["micro_batch"]))
    return provenance, records


def gpu_vs_formula(rec: dict) -> dict:
    """Measured ``memory_allocated()`` after the step against the formula's GPU bytes (and host bytes)."""
    setup = setup_of(rec)
    est = estimate(setup, "allocated")
    measured = rec["cuda_allocated_after_step"]
    host_counted = sum(rec["held_after_step"].get("cpu", {}).values())
    return {
        "shape": rec["shape"], "variant": variant_name(rec), "params": rec["params"], "gpus": rec["world_size"],
        "measured": measured, "formula": est.gpu_bytes,
        "error": (est.gpu_bytes - measured) / measured,
        "host_counted": host_counted, "host_formula": est.cpu_bytes / setup.per_node,
        "peak": rec["cuda_peak_during_steps"],
    }


def gpu_formula_table(rows: list[dict]) -> tuple[list[str], list[list], float]:
    """(headers, rows, worst host error) of :func:`gpu_vs_formula` results: a row per variant, a column per model,
    each cell the measured GPU bytes with the formula's error; host memory, which the formula gives exactly, is
    summarised by its worst relative error instead of a column per model."""
    models = list(dict.fromkeys(r["shape"] for r in rows))
    cells: dict = {}
    for r in rows:
        cells.setdefault(r["variant"], {})[r["shape"]] = f"{format_bytes(r['measured'])} ({100 * r['error']:+.2f}%)"
    host = max((abs(r["host_formula"] - r["host_counted"]) / r["host_counted"] for r in rows
                if r["host_counted"] > 1e6), default=0.0)  # a few bytes of step counters are not a host footprint
    return (["variant", *models],
            [[variant, *(got.get(m, "") for m in models)] for variant, got in cells.items()], host)


# --- The step's peak: dscourse.memory.peak against benchmarks/gpu_peak.py's H200 grid ---------------------------

PEAK_DATA = "gpu_peak_h200.json"
_PHASE_KEYS = {"forward": "forward", "backward": "backward", "step": "step_phase"}


def load_peak_runs(path=None) -> tuple[dict, list[dict]]:
    """(provenance, every measured point) of the committed peak grid."""
    data = json.loads(Path(path or DATA / PEAK_DATA).read_text())
    return data["provenance"], [p for p in data["points"] if not p.get("error")]


def load_peak_traces(path=None) -> list[dict]:
    """The recorded steps (one ZeRO-2, one ZeRO-3), in stage order."""
    data = json.loads(Path(path or DATA / PEAK_DATA).read_text())
    return sorted(data["traces"], key=lambda t: t["stage"])


def peak_vs_measured(path=None) -> list[dict]:
    """Each run of the grid beside :func:`dscourse.memory.peak_of` on the same model, setting and shape.

    ``held_out``: the larger micro-batch × sequence of each model, which no term or constant was read from.
    Measured figures are the maxima over the run's steps (the first step allocates Adam's states).
    """
    from .memory import peak_of
    from .memory.hf import arch_from_file, hf_presets

    _, points = load_peak_runs(path)
    presets = hf_presets()
    largest = {}
    for p in points:
        largest[p["model"]] = max(largest.get(p["model"], 0), p["micro_batch"] * p["seq"])
    rows = []
    for p in points:
        arch = arch_from_file(presets[p["model"]])
        pk = peak_of(arch, 1, p["stage"], p["micro_batch"], p["seq"], p["checkpointing"], p["offload_optimizer"],
                     p["offload_param"], grad_accum=p.get("grad_accum", 1))
        phases = {ph: max(s[key]["peak"] for s in p["steps"]) for ph, key in _PHASE_KEYS.items()}
        measured = max(phases.values())
        reserved = max(s[key]["reserved_peak"] for s in p["steps"] for key in _PHASE_KEYS.values())
        between = p["steps"][-1]["after"]
        rows.append({
            "model": p["model"], "family": arch.family, "variant": variant_name(p), "stage": p["stage"],
            "offload": p["offload_optimizer"] != "none" or p["offload_param"] != "none",
            "micro_batch": p["micro_batch"], "seq": p["seq"], "checkpointing": p["checkpointing"],
            "held_out": p["micro_batch"] * p["seq"] == largest[p["model"]],
            "measured": measured, "measured_phase": max(phases, key=phases.get), "predicted": pk.peak_bytes,
            "predicted_phase": pk.peak_phase, "error": (pk.peak_bytes - measured) / measured,
            "phase_errors": {ph: (pk.phase_bytes(ph) - v) / v for ph, v in phases.items()},
            "between": between, "between_predicted": pk.gpu_bytes, "between_error": (pk.gpu_bytes - between) / between,
            "reserved": reserved, "fragmentation": (reserved - measured) / measured,
        })
    return rows


def worst_errors(rows: list[dict], key: str = "error") -> dict:
    """The largest |error| by family, stage, checkpointing and offload, over ``rows``: {group: {value: error}}."""
    out: dict = {}
    for group in ("family", "stage", "checkpointing", "offload"):
        for r in rows:
            cur = out.setdefault(group, {}).get(r[group])
            if cur is None or abs(r[key]) > abs(cur):
                out[group][r[group]] = r[key]
    return out


# --- A 24 GB card, and activation checkpointing's time: benchmarks/gpu_ckpt_oom.sh on the H200 -------------------

CKPT_OOM_DATA = "gpu_ckpt_oom_h200.json"
_ALLOCATE = re.compile(r"Tried to allocate ([\d.]+) (GiB|MiB)")


def load_ckpt_oom(path=None) -> dict:
    return json.loads(Path(path or DATA / CKPT_OOM_DATA).read_text())


def _point_peak(p: dict) -> int | None:
    return max((s[k]["peak"] for s in p["steps"] for k in _PHASE_KEYS.values()), default=None)


def oom_walkthrough(path=None) -> list[dict]:
    """The capped runs in the order they were tried (a reader's attempts on a 24 GB card), each beside
    :func:`dscourse.memory.peak_of`: the predicted peak and its phase, whether it fits the cap, and what happened:
    the measured peak, or the phase and step that ran out of memory and the size of the allocation refused."""
    from .memory import peak_of
    from .memory.hf import arch_from_file, hf_presets

    data, presets = load_ckpt_oom(path), hf_presets()
    rows = []
    for p in (p for p in data["points"] if "limit" in p):
        arch = arch_from_file(presets[p["model"]])
        pk = peak_of(arch, 1, p["stage"], p["micro_batch"], p["seq"], p["checkpointing"], p["offload_optimizer"],
                     p["offload_param"], grad_accum=p["grad_accum"])
        asked = _ALLOCATE.search(p.get("oom_message") or "")
        rows.append({"model": p["model"], "variant": variant_name(p), "micro_batch": p["micro_batch"], "seq": p["seq"],
                     "grad_accum": p["grad_accum"], "checkpointing": p["checkpointing"], "limit": p["limit"],
                     "tokens_per_step": p["micro_batch"] * p["seq"] * p["grad_accum"],
                     "predicted": pk.peak_bytes, "predicted_phase": pk.peak_phase,
                     "predicted_fits": pk.peak_bytes <= p["limit"], "measured": _point_peak(p),
                     "oom_phase": {"step_phase": "step"}.get(p.get("oom_phase"), p.get("oom_phase")),
                     "oom_step": len(p["steps"]) + 1 if p.get("error") else None,
                     "oom_asked": float(asked[1]) * (2**30 if asked[2] == "GiB" else 2**20) if asked else None,
                     "oom_message": p.get("oom_message"),
                     "step_seconds": _median_step(p) if not p.get("error") else None})
    return rows


def _median_step(p: dict, phases=("forward", "backward", "step_phase"), skip: int = 2) -> float:
    """Median seconds of a step over the steps after the first ``skip`` (the first ones build kernels and state)."""
    from statistics import median

    return median(sum(s[k]["seconds"] for k in phases) for s in p["steps"][skip:])


def checkpointing_cost(path=None) -> list[dict]:
    """Activation checkpointing off and on in one engine, one worker on the GPU at a time: the peak and the median
    step time (and forward + backward alone) of each, and their ratios."""
    data = load_ckpt_oom(path)
    grid = [p for p in data["points"] if "limit" not in p and not p.get("error")]
    rows = []
    for off in (p for p in grid if not p["checkpointing"]):
        on = next(q for q in grid if q["checkpointing"] and all(
            q[k] == off[k] for k in ("model", "variant", "micro_batch", "seq", "grad_accum")))
        fb = [_median_step(p, ("forward", "backward")) for p in (off, on)]
        step = [_median_step(p) for p in (off, on)]
        rows.append({"model": off["model"], "variant": variant_name(off), "stage": off["stage"],
                     "micro_batch": off["micro_batch"], "seq": off["seq"],
                     "peak_off": _point_peak(off), "peak_on": _point_peak(on),
                     "fwd_bwd_off": fb[0], "fwd_bwd_on": fb[1], "step_off": step[0], "step_on": step[1],
                     "step_ratio": step[1] / step[0], "fwd_bwd_ratio": fb[1] / fb[0]})
    return rows


# --- Host memory when every rank loads the model: benchmarks/load_memory.py on CPU ranks ------------------------

LOAD_DATA = "cpu_load_memory.json"


def load_memory_runs(path=None) -> tuple[dict, list[dict]]:
    """(provenance, one row per launch): per way of loading and world size, rank 0's peak private and mapped memory
    above what it held before, the largest private peak of the other ranks (rank 0's on one rank), and the parameter
    bytes each holds on the host. ``path``: a file of ``benchmarks/load_memory.py`` (default: the CPU ranks')."""
    data = json.loads(Path(path or DATA / LOAD_DATA).read_text())
    rows = []
    for run in data["runs"]:
        r0, others = run["ranks"][0], run["ranks"][1:] or run["ranks"]
        rows.append({"world_size": run["world_size"], "how": run["how"], "load_dtype": run["load_dtype"],
                     "rank0_private": r0["peak_above_before"]["private"], "rank0_mapped": r0["peak_above_before"]["mapped"],
                     "others_private": max(r["peak_above_before"]["private"] for r in others),
                     "others_mapped": max(r["peak_above_before"]["mapped"] for r in others),
                     "held_bytes": r0["held_param_bytes_on_host"], "held_dtype": r0["dtype"]})
    return data["provenance"], rows
