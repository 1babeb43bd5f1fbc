"""Run every notebook top to bottom at full scale on a GPU machine and report each cell.

    DSCOURSE_SCALE=gpu python tools/run_notebooks_gpu.py --out report.json            # every notebooks/*.ipynb
    python tools/run_notebooks_gpu.py --notebooks notebooks/01_memory_accounting.ipynb --out r.json

Each notebook runs in a fresh kernel (nbclient) in its own folder, with ``DSCOURSE_SCALE=gpu`` (unless set)
and NVLink multicast off (``NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1``).
A failing cell is recorded and the run goes on with the next cell (later failures may follow from it). The
notebook files are never written: the executed copies can be saved elsewhere with ``--save-dir``.

The report (JSON, rewritten after every cell so a time-out keeps what finished) has, per notebook and per
cell: ran / failed / not run, seconds, the error (name, value, the end of the traceback), the end of the
cell's text output, the peak GPU memory in use during the cell and the disk space left free after it.
GPU memory is sampled by a thread of this process through NVML (``nvidia-ml-py``, else ``nvidia-smi``)
every ``--poll`` seconds over every visible GPU: it counts every process, the kernel and the ranks it launches, so it is device memory in use
(what ``nvidia-smi`` shows), not ``torch.cuda.max_memory_allocated`` of one process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from dscourse.gpu_results import notebook_status  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class GpuMemoryPoller:
    """Samples device memory in use (bytes, summed over visible GPUs) in a thread; ``window()`` gives the peak."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak, self.samples = interval, 0, 0
        self._stop = threading.Event()
        self._read = self._nvml_reader() or self._smi_reader()
        self.available = self._read is not None
        self.baseline = self._read() if self.available else None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _nvml_reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if not handles:
                return None
            return lambda: sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles)
        except Exception:  # noqa: BLE001 - no NVML: try nvidia-smi
            return None

    @staticmethod
    def _smi_reader():
        def read():
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return sum(int(x) for x in out.split()) * 2**20
        try:
            read()
            return read
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, self._read())
                self.samples += 1
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                pass

    def start(self):
        if self.available:
            self._thread.start()
        return self

    def window(self) -> int | None:
        """The peak since the last call (then reset to the current reading)."""
        if not self.available:
            return None
        try:
            now = self._read()
        except Exception:  # noqa: BLE001
            now = 0
        peak, self.peak = max(self.peak, now), now
        return peak

    def stop(self):
        self._stop.set()


def environment() -> dict:
    env = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "python": platform.python_version(), "scale": os.environ.get("DSCOURSE_SCALE", "")}
    try:
        env["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        env["gpu"] = "no GPU (nvidia-smi not found)"
    for mod in ("torch", "deepspeed", "transformers", "accelerate", "nbclient", "ipykernel", "plotly", "ipywidgets"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - report what is missing
            env[mod] = None
    return env


def _text_of(outputs) -> str:
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(k.startswith("application/papermill") for k in data):
                parts.append(str(data["text/plain"]))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def parse_cells(spec: str) -> set[int]:
    """``"7-21,40"`` -> {7, ..., 21, 40}; ``"23-"`` runs to the end (cell indices as the report numbers them)."""
    cells = set()
    for part in filter(None, (x.strip() for x in spec.split(","))):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"--skip: {part!r} is not a cell index or a range like 7-21 or 23-")
        cells.update(range(int(first), (int(last) if last else 10_000) + 1) if dash else {int(first)})
    return cells


def run_notebook(path: Path, report: dict, write, timeout: float, poller: GpuMemoryPoller,
                 save_dir: Path | None, kernel: str, skip: set[int] = frozenset()) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    entry = {"notebook": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path), "status": "running",
             "cells": []}
    report["notebooks"].append(entry)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    t_nb = time.time()
    poller.window()
    peak_nb = 0
    with client.setup_kernel(env={**os.environ}):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            rec = {"index": index, "first_line": cell.source.strip().splitlines()[0][:120] if cell.source.strip() else ""}
            if index in skip:
                entry["cells"].append({**rec, "status": "skipped", "seconds": 0})
                continue
            t0 = time.time()
            try:
                client.execute_cell(cell, index)
                rec["status"] = "ran"
            except (CellExecutionError, CellTimeoutError) as e:
                rec["status"] = "failed"
                err = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
                rec["error"] = ({"ename": err.get("ename"), "evalue": str(err.get("evalue"))[:2000],
                                 "traceback_tail": ANSI.sub("", "\n".join(err.get("traceback", [])))[-3000:]}
                                if err else {"ename": type(e).__name__, "evalue": str(e)[-2000:]})
            except DeadKernelError as e:
                rec["status"], rec["error"] = "failed", {"ename": "DeadKernelError", "evalue": str(e)[-2000:]}
                rec["seconds"] = round(time.time() - t0, 2)
                entry["cells"].append(rec)
                break
            rec["seconds"] = round(time.time() - t0, 2)
            peak = poller.window()
            rec["gpu_memory_peak_bytes"] = peak
            # checkpoints of a full-scale model fill a disk quickly: what the cell left free
            rec["disk_free_bytes"] = shutil.disk_usage(tempfile.gettempdir()).free
            peak_nb = max(peak_nb, peak or 0)
            rec["output_tail"] = _text_of(cell.get("outputs", []))[-1500:]
            entry["cells"].append(rec)
            entry["seconds"] = round(time.time() - t_nb, 1)
            write()
            print(f"  cell {index:3d} {rec['status']:6s} {rec['seconds']:7.1f} s  "
                  f"{(peak or 0) / 2**30:6.1f} GiB  {rec['first_line'][:60]}"
                  + (f"  {rec['error']['ename']}: {rec['error']['evalue'][:200]}" if "error" in rec else ""), flush=True)
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    entry.update({"code_cells": code_cells, "seconds": round(time.time() - t_nb, 1),
                  "gpu_memory_peak_bytes": peak_nb if poller.available else None})
    entry.update(notebook_status(entry))
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_dir / path.name)
    write()
    return entry


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", nargs="*", default=None, help="default: every notebooks/*.ipynb, in name order")
    p.add_argument("--out", required=True, help="the JSON report")
    p.add_argument("--timeout", type=float, default=900, help="seconds per cell")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between GPU memory samples")
    p.add_argument("--save-dir", default=None, help="also write the executed notebooks here (never in place)")
    p.add_argument("--kernel", default="python3")
    p.add_argument("--skip", default="", help="cells not to run, e.g. 7-21 or 23- (a notebook too long for one "
                   "10-minute call runs in two, each with its setup cells; recorded as skipped)")
    args = p.parse_args(argv)
    try:
        skip = parse_cells(args.skip)
    except ValueError as error:
        p.error(str(error))

    os.environ.setdefault("DSCOURSE_SCALE", "gpu")
    os.environ.update(MULTICAST_OFF)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [Path(n).resolve() for n in args.notebooks] if args.notebooks else sorted((REPO / "notebooks").glob("*.ipynb"))
    save_dir = Path(args.save_dir).resolve() if args.save_dir else None
    if save_dir and any(save_dir == q.parent for q in paths):
        p.error("--save-dir must not be the notebooks' own folder: the notebooks are never written in place")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    poller = GpuMemoryPoller(args.poll).start()
    report = {"environment": environment(), "gpu_memory_sampling": (
        f"NVML/nvidia-smi device memory in use, summed over GPUs, every {args.poll} s (all processes)"
        if poller.available else "no GPU: not sampled"),
              "gpu_memory_baseline_bytes": poller.baseline, "notebooks": []}

    def write():
        out.write_text(json.dumps(report, indent=1))

    t0 = time.time()
    for path in paths:
        print(f"{path.name}:", flush=True)
        try:
            entry = run_notebook(path, report, write, args.timeout, poller, save_dir, args.kernel, skip)
        except Exception as e:  # noqa: BLE001 - a kernel that does not start is a result too
            entry = report["notebooks"][-1] if report["notebooks"] and report["notebooks"][-1]["status"] == "running" \
                else {"notebook": path.name, "cells": []}
            if entry not in report["notebooks"]:
                report["notebooks"].append(entry)
            entry.update({"status": "failed", "error": f"{type(e).__name__}: {str(e)[-2000:]}"})
            write()
        print(f"{path.name}: {entry['status']} in {entry.get('seconds', 0)} s, "
              f"{entry.get('cells_ran', 0)}/{entry.get('code_cells', '?')} cells ran", flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    poller.stop()
    write()
    failed = [e["notebook"] for e in report["notebooks"] if e["status"] not in ("ok", "partial")]
    print(f"{len(paths) - len(failed)}/{len(paths)} notebooks ran without a failing cell" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
