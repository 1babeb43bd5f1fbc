"""What the GPU benchmarks (``benchmarks/*_gpu.py``, ``gpu_memory.py``) share: CPU threads per rank, and one
measured launch recorded into a data file that is rewritten after every run (a time-out keeps what finished)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .launch import LaunchError, run_ranks


def threads_per_rank(gpus: int) -> int:
    """CPU threads per rank: the machine's cores shared by the ranks (DeepSpeedCPUAdam and the host copies
    use them; run_ranks' default of 1 would make every offloaded optimizer step single-threaded)."""
    return max(1, (os.cpu_count() or 1) // max(1, gpus))


def record_run(data: dict, out: Path, run: dict, module: str, args: list[str], gpus: int, timeout: float,
               threads: int | None = None) -> dict:
    """Launch ``module`` on ``gpus`` ranks; put its ranks' results (or the error) and the wall time into
    ``run``, append it to ``data["runs"]`` and rewrite ``out``. Returns ``run``."""
    t0 = time.time()
    try:
        run["ranks"] = run_ranks(module, args, nproc=gpus, timeout=timeout,
                                 env={"OMP_NUM_THREADS": str(threads or threads_per_rank(gpus))}).ranks
    except LaunchError as e:
        run["error"] = str(e)[-3000:]
    run["wall_seconds"] = round(time.time() - t0, 1)
    data["runs"].append(run)
    out.write_text(json.dumps(data, indent=1))
    return run
