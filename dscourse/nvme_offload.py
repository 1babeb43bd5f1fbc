"""ZeRO-Infinity's NVMe offload on real ranks: the async I/O op it needs, and the same training offloaded to the CPU
and to a swap directory (4.7).

``"device": "nvme"`` keeps the offloaded states in files under ``nvme_path`` instead of host RAM and moves them with
DeepSpeed's ``async_io`` op (Linux AIO, so libaio: ``apt-get install libaio-dev``), a C++ op compiled on first use.
:func:`aio_op_report` asks DeepSpeed whether it can build that op here and returns DeepSpeed's own words when it
cannot; :func:`nvme_vs_cpu` trains one ZeRO-3 model twice, with its parameters and optimizer state offloaded to the
CPU and to NVMe, and records the swap files each rank holds after its last step.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

from .config import build_config
from .launch import run_ranks

AIO_PACKAGE_HINT = "DeepSpeed's async_io op needs libaio: install it with `apt-get install libaio-dev`"


def aio_op_report() -> dict:
    """Whether DeepSpeed 0.19.8 can build its ``async_io`` op on this machine (``AsyncIOBuilder.is_compatible``,
    which compiles and links a test program calling ``io_submit``), with the warnings it printed if not."""
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("AsyncIOBuilder")
    printed = io.StringIO()
    # DeepSpeed's probe silences the compiler by redirecting sys.stderr's file descriptor, and answers False when it
    # has none: a Jupyter kernel's stderr is a stream without one, so the probe gets the process's own stderr
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(sys.__stderr__ or sys.stderr):
        compatible = bool(builder.is_compatible(verbose=True))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue())  # DeepSpeed colours its [WARNING] tag
    lines = [line.split("] ", 1)[-1].strip() for line in plain.splitlines() if line.strip()]
    return {"compatible": compatible, "messages": lines}


def swap_config(path: Path, device: str, swap_dir: Path, world_size: int, largest_param: int) -> Path:
    """A ZeRO-3 config offloading the parameters and the optimizer state to ``device`` (``cpu`` or ``nvme``).

    For NVMe the parameter swapper's buffers are sized to the model (``buffer_size`` must hold the largest parameter;
    DeepSpeed's default of 1e8 elements × 5 buffers pins 1 GB per rank, more than a small model needs) and
    ``max_in_cpu`` is 0 so that every offloaded parameter really goes to disk."""
    cfg = build_config(3, micro_batch=2, world_size=world_size, offload_optimizer=device, offload_param=device,
                       nvme_path=str(swap_dir) if device == "nvme" else None,
                       extra_zero={"stage3_param_persistence_threshold": 0})  # partition (and so swap) every parameter
    if device == "nvme":
        # a buffer per parameter: the params fetched for a forward or backward must fit in the pool at once
        cfg["zero_optimization"]["offload_param"].update(buffer_count=64, buffer_size=largest_param, max_in_cpu=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=1))
    return path


def nvme_vs_cpu(workdir: str | Path, shape: str = "gpt2-small-cpu", ranks: int = 2, steps: int = 4, pool: int = 2,
                timeout: float = 900) -> dict:
    """Train ``shape`` with ZeRO-3 on ``ranks`` ranks, offloaded to the CPU and then to NVMe; rank 0's results of each
    (``losses``, ``step_seconds``; for NVMe ``swap_files``, every rank's files under the swap directory) and the
    config each ran with."""
    from .memory.peak import param_tensors
    from .models import SHAPES

    workdir = Path(workdir)
    largest = max(param_tensors(SHAPES[shape]))
    out = {}
    for device in ("cpu", "nvme"):
        run = workdir / f"offload-{device}"
        swap = run / "swap"
        swap.mkdir(parents=True, exist_ok=True)
        cfg = swap_config(run / "ds_config.json", device, swap, ranks, largest)
        args = ["--config", str(cfg), "--shape", shape, "--steps", str(steps), "--pool", str(pool)]
        if device == "nvme":
            args += ["--swap-dir", str(swap)]
        result = run_ranks("dscourse.scripts.train_run", args, nproc=ranks, timeout=timeout, out_dir=run / "out")
        out[device] = {**result.ranks[0], "config": str(cfg)}
    return out


def swap_file_holds(name: str) -> tuple[str, str]:
    """(kind, what) of a swap file under ``nvme_path``, from the name DeepSpeed gives it; kind is ``params`` (a
    parameter's 16-bit partition), ``grads`` (a parameter's fp32 gradient partition) or ``optim`` (a sub-group's fp32
    master weights, ``exp_avg`` or ``exp_avg_sq``)."""
    base = name.rsplit("/", 1)[-1]
    if base.endswith("_param.tensor.swp"):
        return "params", "a parameter's bf16 partition"
    if "_gradient_" in base:
        return "grads", "a parameter's fp32 gradient partition"
    for state in ("exp_avg_sq", "exp_avg"):
        if base.startswith(state + "-"):
            return "optim", f"Adam's {state} (a sub-group)"
    return "optim", "fp32 master weights (a sub-group)"


def swap_totals(files: dict[str, int], rank: int = 0) -> dict[str, int]:
    """Bytes of ``rank``'s swap files by the kind :func:`swap_file_holds` gives (``files``: path relative to
    ``nvme_path`` -> bytes)."""
    out: dict[str, int] = {}
    for name, size in files.items():
        if f"/rank{rank}/" in f"/{name}":
            kind = swap_file_holds(name)[0]
            out[kind] = out.get(kind, 0) + size
    return out
