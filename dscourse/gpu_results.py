"""The GPU measurements in ``dscourse/data`` as tables, key figures and plotly figures for the notebooks.

Each ``load_*`` reads one data file (``path`` overrides the committed one); each ``*_rows`` returns plain dicts;
each ``*_table`` a deterministic text table; each ``*_figure`` a plotly figure (show it with
:func:`dscourse.plots.show`). Pure Python except the figures (plotly, imported when called).

Files: ``gpu_throughput_gpt2-350m.json`` (``benchmarks/throughput_gpu.py``), ``gpu_checkpoint_gpt2-1.3b.json``
(``benchmarks/checkpoint_gpu.py``), ``gpu_notebooks.json`` (``tools/run_notebooks_gpu.py``), ``gpu_nccl_*.json``
(``benchmarks/nccl_gpu.py``, on several GPUs). ``dscourse/data/README.md`` lists each with its command.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

from . import package_path
from .tables import text_table

DATA = package_path("data")
CHECKPOINT = "gpu_checkpoint_gpt2-1.3b.json"
NOTEBOOKS = "gpu_notebooks.json"
CLAIM = (0.30, 0.50)  # the source chapter: "offload costs 30-50% of training speed"
VARIANT_ORDER = ["ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3", "ZeRO-2 +offload opt", "ZeRO-3 +offload opt",
                 "ZeRO-3 +offload opt +offload param"]
BASELINE = {"ZeRO-2 +offload opt": "ZeRO-2", "ZeRO-3 +offload opt": "ZeRO-3",
            "ZeRO-3 +offload opt +offload param": "ZeRO-3"}


def _load(name: str, path=None) -> dict:
    return json.loads((Path(path) if path else DATA / name).read_text())


def variant(run: dict) -> str:
    name = f"ZeRO-{run['stage']}"
    if run.get("offload_optimizer", "none") != "none":
        name += " +offload opt"
    if run.get("offload_param", "none") != "none":
        name += " +offload param"
    return name


# --- throughput ------------------------------------------------------------------------------------------------

def load_throughput(path=None, shape: str = "gpt2-350m") -> dict:
    """``{"provenance": ..., "runs": [...]}`` of ``benchmarks/throughput_gpu.py`` (``gpu_throughput_<shape>.json``:
    gpt2-350m holds the full grid, gpt2-1.3b ZeRO-2 with and without pinned optimizer offload)."""
    return _load(f"gpu_throughput_{shape}.json", path)


def throughput_rows(data: dict | None = None) -> list[dict]:
    """One dict per (variant, pinned or not, micro-batch, accumulation) that ran: tokens/s, step time, peak memory."""
    data = data or load_throughput()
    rows = []
    for run in data["runs"]:
        if not run.get("ranks"):
            continue
        for q in run["ranks"][0]["points"]:
            if "tokens_per_second" not in q:
                continue
            steps = q["step_seconds"][-q["timed_steps"]:]
            rows.append({"variant": variant(run), "pinned": bool(run.get("pin_memory")) and "offload" in variant(run),
                         "lease": run.get("lease", 1), "gpus": run.get("gpus", 1),
                         "spread": (max(steps) - min(steps)) / q["median_step_seconds"],
                         "micro_batch": q["micro_batch"], "grad_accum": q["grad_accum"],
                         "tokens_per_step": q["tokens_per_step"], "tokens_per_second": q["tokens_per_second"],
                         "step_seconds": q["median_step_seconds"], "optimizer_step_seconds": q.get("optimizer_step_seconds"),
                         "phases": q.get("phase_median_seconds", {}), "peak_bytes": q.get("cuda_peak"),
                         "tflops_per_gpu": q.get("model_tflops_per_gpu")})
    rows.sort(key=lambda r: (r["lease"], VARIANT_ORDER.index(r["variant"]) if r["variant"] in VARIANT_ORDER else 99,
                             r["tokens_per_step"]))
    return rows


def row_label(r: dict) -> str:
    return f"{r['micro_batch']}x{r['grad_accum']}" if r["grad_accum"] > 1 else str(r["micro_batch"])


def per_variant(rows: list[dict], value) -> tuple[list[str], dict]:
    """Columns (micro-batch labels in order) and ``{(variant, pinned): {label: [value(row), ...]}}``: every machine's
    measurement of one point together, so a table or figure shows one row or line per variant, not per machine."""
    labels = list(dict.fromkeys(row_label(r) for r in sorted(rows, key=lambda r: (r["micro_batch"], r["grad_accum"]))))
    out: dict = {}
    for r in sorted(rows, key=lambda r: VARIANT_ORDER.index(r["variant"]) if r["variant"] in VARIANT_ORDER else 99):
        out.setdefault((r["variant"], r["pinned"]), {}).setdefault(row_label(r), []).append(value(r))
    return labels, out


def _pinned_cell(variant_name: str, pinned: bool) -> str:
    return ("true" if pinned else "false") if "offload" in variant_name else ""


def throughput_table(data: dict | None = None) -> str:
    """Tokens/s: a row per variant (offload variants unpinned and pinned), a column per micro-batch (``16x4``:
    micro-batch 16 with 4 accumulation steps); where several machines measured a point, their median."""
    rows = throughput_rows(data)
    labels, cells = per_variant(rows, lambda r: r["tokens_per_second"])
    machines = {key: len({r["lease"] for r in rows if (r["variant"], r["pinned"]) == key}) for key in cells}
    return text_table(["variant", "pin_memory", "machines", *(f"mb {label}" for label in labels)],
                      [[v, _pinned_cell(v, pinned), str(machines[(v, pinned)]),
                        *(f"{median(got[label]):,.0f}" if label in got else "" for label in labels)]
                       for (v, pinned), got in cells.items()], align_right_from=2)


def offload_slowdown(data: dict | None = None) -> list[dict]:
    """Each offload point against its stage without offload at the same micro-batch and accumulation:
    ``slowdown = 1 − tokens/s(offload) / tokens/s(no offload)`` (0.4: 40% slower), and whether it lies in 30–50%."""
    rows = throughput_rows(data)
    base: dict = {}
    for r in rows:  # the first lease that measured a baseline point is the fallback
        if "offload" not in r["variant"]:
            base.setdefault((r["variant"], r["micro_batch"], r["grad_accum"]), {})[r["lease"]] = r
    out = []
    for r in rows:
        refs = base.get((BASELINE.get(r["variant"]), r["micro_batch"], r["grad_accum"]))
        if not refs:
            continue
        ref = refs.get(r["lease"]) or next(iter(refs.values()))
        s = 1 - r["tokens_per_second"] / ref["tokens_per_second"]
        out.append({"variant": r["variant"], "baseline": ref["variant"], "pinned": r["pinned"], "lease": r["lease"],
                    "same_lease": ref["lease"] == r["lease"],
                    "micro_batch": r["micro_batch"], "grad_accum": r["grad_accum"],
                    "tokens_per_step": r["tokens_per_step"], "tokens_per_second": r["tokens_per_second"],
                    "baseline_tokens_per_second": ref["tokens_per_second"], "slowdown": s,
                    "in_claim": CLAIM[0] <= s <= CLAIM[1]})
    return out


def offload_slowdown_table(data: dict | None = None) -> str:
    """How much slower each offload variant trains than the same stage without offload, one row per variant and a
    column per micro-batch, from comparisons made on one machine (an offload run and its baseline in the same
    lease; where several machines made one, their median); ``*`` marks the points in the source's 30–50%."""
    labels, cells = per_variant([r for r in offload_slowdown(data) if r["same_lease"]], lambda r: r["slowdown"])

    def cell(values):
        s = median(values)
        return f"{100 * s:.0f}%{'*' if CLAIM[0] <= s <= CLAIM[1] else ''}"

    return text_table(["offload variant", "pin_memory", *(f"mb {label}" for label in labels)],
                      [[v, str(pinned).lower(), *(cell(got[label]) if label in got else "" for label in labels)]
                       for (v, pinned), got in cells.items()], align_right_from=2)


def offload_claim(data: dict | None = None, same_lease_only: bool = False) -> dict:
    """The key figures on "offload costs 30–50% of training speed": the slowdown range per (variant, pinned),
    and the points where the claim holds (``same_lease_only``: only offload runs whose baseline ran on the same
    machine in the same lease)."""
    rows = [r for r in offload_slowdown(data) if r["same_lease"] or not same_lease_only]
    ranges = {}
    for r in rows:
        key = f"{r['variant']} ({'pinned' if r['pinned'] else 'unpinned'})"
        lo, hi = ranges.get(key, (1.0, -1.0))
        ranges[key] = (min(lo, r["slowdown"]), max(hi, r["slowdown"]))
    holds = [f"{r['variant']} ({'pinned' if r['pinned'] else 'unpinned'}) mb {row_label(r)}: {100 * r['slowdown']:.0f}%"
             for r in rows if r["in_claim"]]
    zero2 = [r for r in rows if r["variant"] == "ZeRO-2 +offload opt"]
    return {"by_point": {f"{r['variant']} ({'pinned' if r['pinned'] else 'unpinned'}, lease {r['lease']}) mb {row_label(r)}":
                         round(r["slowdown"], 3) for r in rows},"ranges": ranges, "holds_at": holds, "points": len(rows), "points_in_claim": len(holds),
            "zero2_offload_min": min((r["slowdown"] for r in zero2), default=None),
            "zero2_offload_max": max((r["slowdown"] for r in zero2), default=None)}


def stage_comparison(data: dict | None = None) -> dict:
    """Tokens/s of ZeRO-0/1/2/3 at the largest tokens per step measured, and each relative to ZeRO-2."""
    rows = [r for r in throughput_rows(data) if "offload" not in r["variant"]]
    biggest = max(r["tokens_per_step"] for r in rows)
    best: dict = {}
    for r in rows:  # the first lease that measured the stage (the grid of leases 1-2)
        if r["tokens_per_step"] == biggest:
            best.setdefault(r["variant"], r["tokens_per_second"])
    return {"tokens_per_step": biggest, "tokens_per_second": best,
            "relative_to_zero2": {k: v / best["ZeRO-2"] for k, v in best.items()} if "ZeRO-2" in best else {}}


# --- checkpoints -----------------------------------------------------------------------------------------------

def load_checkpoint(path=None) -> dict:
    return _load(CHECKPOINT, path)


def checkpoint_rows(data: dict | None = None) -> list[dict]:
    """One dict per save: stage, what was saved, seconds (and the ``os.sync()`` after it), bytes, files."""
    data = data or load_checkpoint()
    rows = []
    for run in data["runs"]:
        if not run.get("ranks"):
            continue
        r0 = run["ranks"][0]
        for s in r0["saves"]:
            rows.append({"stage": run["stage"], "gpus": r0["world_size"], "params": r0["params"], "what": s["name"],
                         "seconds": s["seconds"], "sync_seconds": s["sync_seconds"], "bytes": s["bytes"],
                         "files": s["layout"]["files"], "largest": s["layout"]["largest"], "returned": s.get("returned")})
    return rows


def checkpoint_table(data: dict | None = None) -> str:
    return text_table(["stage", "call", "seconds", "+ os.sync()", "GB on disk", "files"],
                      [[f"ZeRO-{r['stage']}", r["what"].replace("#0", ""), f"{r['seconds']:.1f}",
                        f"{r['sync_seconds']:.1f}", f"{r['bytes'] / 1e9:.2f}", r["files"]]
                       for r in checkpoint_rows(data)], align_right_from=2)


def checkpoint_summary(data: dict | None = None) -> dict:
    """Key figures: save_checkpoint seconds and GB per stage, save_16bit_model per stage and gather flag."""
    out: dict = {"save_checkpoint": {}, "save_16bit_model": {}}
    for r in checkpoint_rows(data):
        key = f"ZeRO-{r['stage']}"
        if r["what"].startswith("save_checkpoint"):
            out["save_checkpoint"][key] = {"seconds": r["seconds"], "sync_seconds": r["sync_seconds"],
                                           "GB": r["bytes"] / 1e9}
        else:
            flag = "gather=true" if "=true" in r["what"] else "gather=false" if "=false" in r["what"] else ""
            out["save_16bit_model"][f"{key} {flag}".strip()] = {"seconds": r["seconds"], "GB": r["bytes"] / 1e9,
                                                               "saved": bool(r["bytes"])}
    return out


# --- the notebooks at GPU scale --------------------------------------------------------------------------------

def load_notebook_runs(path=None) -> dict:
    return _load(NOTEBOOKS, path)


def notebook_status(entry: dict) -> dict:
    """A notebook's status from its cells: ok (every code cell ran), partial (the others were skipped: they
    ran in another call), failed; and how many cells ran, failed, were skipped, were not reached."""
    count = {s: sum(1 for c in entry["cells"] if c["status"] == s) for s in ("ran", "failed", "skipped")}
    status = "ok" if count["ran"] == entry["code_cells"] else \
        "partial" if count["ran"] + count["skipped"] == entry["code_cells"] else "failed"
    return {"status": status, "cells_ran": count["ran"], "cells_failed": count["failed"],
            "cells_skipped": count["skipped"], "cells_not_run": entry["code_cells"] - len(entry["cells"])}


def merge_notebook_runs(merged: dict, report: dict) -> dict:
    """Fold one ``tools/run_notebooks_gpu.py`` report into ``gpu_notebooks.json``'s content (a new dict).

    One device call runs at most 10 minutes, so the notebooks run in several calls, and a notebook too long
    for one call in two (``--skip``). A cell's newest record that is not "skipped" wins; a notebook's
    seconds are then the sum of its cells' (setup cells counted once). ``runs`` lists each call (its
    environment and notebooks); the top-level ``environment`` is the newest call's.
    """
    entries = {nb["notebook"]: nb for nb in merged.get("notebooks", [])}
    for new in report["notebooks"]:
        old = entries.get(new["notebook"])
        if old and new.get("cells_skipped"):
            cells = {c["index"]: c for c in old["cells"]}
            cells.update({c["index"]: c for c in new["cells"] if c["status"] != "skipped"})
            peaks = [c.get("gpu_memory_peak_bytes") or 0 for c in cells.values()]
            new = {**new, "cells": [cells[i] for i in sorted(cells)], "gpu_memory_peak_bytes": max(peaks),
                   "seconds": round(sum(c.get("seconds", 0) for c in cells.values()), 1)}
            new.update(notebook_status(new))
        entries[new["notebook"]] = new
    run = {"date": report["environment"]["date"], "environment": report["environment"],
           "notebooks": sorted(nb["notebook"] for nb in report["notebooks"])}
    notebooks = sorted(entries.values(), key=lambda nb: Path(nb["notebook"]).name)
    return {**merged, "environment": report["environment"], "runs": [*merged.get("runs", []), run],
            "notebooks": notebooks, "seconds": round(sum(nb.get("seconds", 0) for nb in notebooks), 1)}


def notebooks_table(data: dict | None = None) -> str:
    """Per notebook: status, cells that ran, seconds, peak GPU memory in use (all processes, sampled)."""
    data = data or load_notebook_runs()
    rows = []
    for nb in data["notebooks"]:
        peak = nb.get("gpu_memory_peak_bytes")
        slowest = max(nb["cells"], key=lambda c: c.get("seconds", 0), default=None)
        rows.append([Path(nb["notebook"]).name, nb["status"], f"{nb.get('cells_ran', 0)}/{nb.get('code_cells', '?')}",
                     f"{nb.get('seconds', 0):.0f}", f"{peak / 2**30:.1f}" if peak else "",
                     f"{slowest['seconds']:.0f} s (cell {slowest['index']})" if slowest else ""])
    return text_table(["notebook", "status", "cells ran", "seconds", "peak GPU GiB", "slowest cell"], rows,
                      align_right_from=2)


# --- collectives (several GPUs) --------------------------------------------------------------------------------

def nccl_files() -> list[Path]:
    return sorted(DATA.glob("gpu_nccl_*.json"))


def load_nccl(path=None) -> dict:
    """A ``benchmarks/nccl_gpu.py`` file (default: the first committed ``gpu_nccl_*.json``)."""
    if path is None:
        files = nccl_files()
        if not files:
            raise FileNotFoundError("no gpu_nccl_*.json in dscourse/data yet: it needs a machine of 2+ GPUs "
                                    "(benchmarks/nccl_gpu.py --gpus 2)")
        path = files[0]
    return json.loads(Path(path).read_text())


def nccl_peaks(data: dict | None = None) -> dict:
    """Per collective: the peak bus bandwidth (GB/s) and the message size it was reached at."""
    data = data or load_nccl()
    out = {}
    for r in data["results"]:
        if r["op"] not in out or r["busbw_GBps"] > out[r["op"]]["busbw_GBps"]:
            out[r["op"]] = {"busbw_GBps": r["busbw_GBps"], "algbw_GBps": r["algbw_GBps"], "bytes": r["bytes"]}
    return out


def nccl_table(data: dict | None = None) -> str:
    data = data or load_nccl()
    ops = list(dict.fromkeys(r["op"] for r in data["results"]))
    sizes = sorted({r["bytes"] for r in data["results"]})
    got = {(r["op"], r["bytes"]): r for r in data["results"]}
    return text_table(["bytes", *[f"{op} busbw GB/s" for op in ops]],
                      [[f"{s:,}", *[f"{got[(op, s)]['busbw_GBps']:.1f}" if (op, s) in got else "" for op in ops]]
                       for s in sizes])


def nccl_vs_comm_model(params: float, stage: int, data: dict | None = None, grad_accum: int = 1) -> dict:
    """Communication seconds per step that :mod:`dscourse.comm` predicts for ``params`` at ``stage`` when its
    bus bandwidth is the peak measured here (all-reduce's for ZeRO-0, the slower of reduce-scatter and all-gather
    otherwise)."""
    from . import comm

    data = data or load_nccl()
    peaks = nccl_peaks(data)
    bw = peaks["all_reduce"]["busbw_GBps"] if stage == 0 else min(
        peaks["reduce_scatter"]["busbw_GBps"], peaks["all_gather"]["busbw_GBps"])
    world = data["world_size"]
    return {"bus_bw_GBps": bw, "world_size": world,
            "volume_bytes": comm.step_volume_bytes(params, stage, world, grad_accum=grad_accum),
            "seconds": comm.step_time(params, stage, world, bw * 1e9, grad_accum=grad_accum)}


def key_figures() -> dict:
    """The numbers the prose quotes, formatted (for ``dscourse.book.glue``): offload slowdown ranges (same-lease
    comparisons), ZeRO-3 against ZeRO-2, checkpoint seconds and sizes, notebook run times."""
    claim = offload_claim(same_lease_only=True)
    r2 = claim["ranges"].get("ZeRO-2 +offload opt (pinned)", (0, 0))
    r2u = claim["ranges"].get("ZeRO-2 +offload opt (unpinned)", (0, 0))
    r3 = claim["ranges"].get("ZeRO-3 +offload opt (pinned)", (0, 0))
    st = stage_comparison()["relative_to_zero2"]
    ck = checkpoint_summary()
    nbs = load_notebook_runs()["notebooks"]
    big = load_throughput(shape="gpt2-1.3b")
    r13 = [r["slowdown"] for r in offload_slowdown(big)]
    return {
        "offload_zero2_pinned_range": f"{100 * r2[0]:.0f}–{100 * r2[1]:.0f}%",
        "offload_zero2_unpinned_range": f"{100 * r2u[0]:.0f}–{100 * r2u[1]:.0f}%",
        "offload_zero3_pinned_range": f"{100 * r3[0]:.0f}–{100 * r3[1]:.0f}%",
        "offload_zero2_1_3b_pinned_range": f"{100 * min(r13):.0f}–{100 * max(r13):.0f}%" if r13 else "",
        "zero3_vs_zero2_throughput": f"{100 * st.get('ZeRO-3', 0):.0f}%",
        "ckpt_zero2_seconds": f"{ck['save_checkpoint']['ZeRO-2']['seconds']:.0f}",
        "ckpt_zero3_seconds": f"{ck['save_checkpoint']['ZeRO-3']['seconds']:.0f}",
        "ckpt_zero2_gb": f"{ck['save_checkpoint']['ZeRO-2']['GB']:.1f}",
        "ckpt_zero3_gb": f"{ck['save_checkpoint']['ZeRO-3']['GB']:.1f}",
        "model16_zero2_seconds": f"{ck['save_16bit_model']['ZeRO-2']['seconds']:.1f}",
        "model16_zero3_gather_seconds": f"{ck['save_16bit_model']['ZeRO-3 gather=true']['seconds']:.1f}",
        "notebooks_gpu_seconds": f"{sum(nb['seconds'] for nb in nbs):.0f}",
    }
