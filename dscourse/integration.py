"""Section 4.3's experiments as functions, so the notebook and the tests run the same code.

* :func:`train_stages` trains one model at several ZeRO stages on the same data (``dscourse.scripts.train_run``);
  :func:`max_rel_diff` compares their loss curves.
* :func:`consolidate`, :func:`run_zero_to_fp32` and :func:`compare_weights` turn a ZeRO checkpoint back into one
  state dict and check it against the weights the engine held.
* :func:`checkpoint_sizes` sorts a checkpoint's files by what they hold.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from .config import build_config
from .launch import run_ranks
from .models import learning_rate

# Relative tolerance for bf16 loss curves: bf16 keeps 8 significant bits, so one rounding of a
# value moves it by up to 2^-8 of itself; two runs that sum in a different order may differ by a few
# such roundings. torch.finfo(torch.bfloat16).eps == 2^-7 (the tests check it).
BF16_RTOL = 2.0 ** -7
FP32_RTOL = 1e-5


def write_config(path: Path, stage: int, precision: str = "bf16", world_size: int = 2, micro_batch: int = 2,
                 top: dict | None = None, **extra) -> Path:
    """A plain-DeepSpeed config file from :func:`dscourse.config.build_config`, with the top-level blocks ``top``
    added (``{"checkpoint": {"load_universal": True}}``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = build_config(stage, micro_batch=micro_batch, world_size=world_size, precision=precision, **extra)
    path.write_text(json.dumps({**cfg, **(top or {})}, indent=1))
    return path


def train_stages(workdir: str | Path, stages=(0, 1, 2, 3), precision: str = "bf16", steps: int = 8,
                 shape: str = "gpt2-tiny", nproc: int = 2, save_at=(), dump_weights: bool = False,
                 pool: int = 4, timeout: float = 600) -> dict[int, dict]:
    """Train the same model on the same batches at each ZeRO stage; rank 0's results by stage.

    With ``save_at`` (steps, or ``{stage: steps}`` where stages save at different steps) each run saves
    checkpoints to ``workdir/<precision>-zero<stage>/ckpt`` (tags ``step<N>``); with ``dump_weights`` rank 0
    leaves the engine's full weights in ``.../out``.
    """
    workdir = Path(workdir)
    results = {}
    for stage in stages:
        run = workdir / f"{precision}-zero{stage}"
        cfg = write_config(run / "ds_config.json", stage, precision, world_size=nproc, lr=learning_rate(shape))
        args = ["--config", str(cfg), "--steps", str(steps), "--shape", shape, "--pool", str(pool)]
        saves = save_at.get(stage, ()) if isinstance(save_at, dict) else save_at
        if saves:
            args += ["--save-at", *map(str, saves), "--save-dir", str(run / "ckpt")]
        if dump_weights:
            args.append("--dump-weights")
        rank0 = run_ranks("dscourse.scripts.train_run", args, nproc=nproc, timeout=timeout, out_dir=run / "out").ranks[0]
        rank0["dir"] = str(run)
        results[stage] = rank0
    return results


def resume(run_dir: str | Path, tag: str, steps: int, shape: str = "gpt2-tiny", nproc: int = 2, pool: int = 4,
           timeout: float = 600) -> dict:
    """Load checkpoint ``tag`` of a :func:`train_stages` run and train on to ``steps``; rank 0's results."""
    run = Path(run_dir)
    args = ["--config", str(run / "ds_config.json"), "--steps", str(steps), "--shape", shape,
            "--pool", str(pool), "--resume-from", str(run / "ckpt"), "--resume-tag", tag]
    return run_ranks("dscourse.scripts.train_run", args, nproc=nproc, timeout=timeout, out_dir=run / "resumed").ranks[0]


def losses(result: dict) -> dict[int, float]:
    """A run's losses by step (JSON turned the step numbers into strings)."""
    return {int(step): loss for step, loss in result["losses"].items()}


def max_rel_diff(a: dict, b: dict) -> float:
    """Largest |a - b| / |b| over the steps both curves have."""
    a, b = {int(k): v for k, v in a.items()}, {int(k): v for k, v in b.items()}
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two loss curves share no step")
    return max(abs(a[s] - b[s]) / abs(b[s]) for s in common)


def consolidate(checkpoint_dir: str | Path, tag: str | None = None) -> dict:
    """The fp32 state dict that DeepSpeed's ``zero_to_fp32`` rebuilds from every rank's shards (quietly:
    it prints its progress, with timings, which a notebook must not show)."""
    import contextlib
    import io

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


class ZeroToFp32Error(RuntimeError):
    """``zero_to_fp32.py`` failed; the message ends with the script's own last error line."""


def run_zero_to_fp32(checkpoint_dir: str | Path, output_dir: str | Path, tag: str | None = None,
                     safe_serialization: bool = False, timeout: float = 300) -> dict[str, int]:
    """Run the ``zero_to_fp32.py`` that DeepSpeed copied into the checkpoint, as a reader would; its files."""
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    cmd = [sys.executable, str(checkpoint_dir / "zero_to_fp32.py"), str(checkpoint_dir), str(output_dir)]
    if tag:
        cmd += ["--tag", tag]
    if safe_serialization:
        cmd.append("--safe_serialization")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        shared = next((ln for ln in lines if "share memory" in ln), None)
        if shared:  # safetensors names the tensors as a Python set: sort them so the message is stable
            names = ", ".join(sorted(set(re.findall(r"'([^']+)'", shared))))
            cause = f"safetensors refuses tensors that share memory ({names}); use the default pytorch_model.bin"
        else:
            cause = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "no output")
        raise ZeroToFp32Error(f"zero_to_fp32.py exited with {done.returncode}: {cause}")
    return {f.name: f.stat().st_size for f in sorted(output_dir.iterdir()) if f.is_file()}


def compare_weights(consolidated: dict, engine_weights: dict) -> dict:
    """How many of the engine's tensors the consolidated state dict holds bit for bit, and the largest gap."""
    import torch

    missing = sorted(set(engine_weights) - set(consolidated))
    equal = sum(torch.equal(consolidated[k].to(v.dtype), v) for k, v in engine_weights.items() if k in consolidated)
    gap = max(((consolidated[k].float() - v.float()).abs().max().item() for k, v in engine_weights.items()
               if k in consolidated), default=0.0)
    return {"tensors": len(engine_weights), "equal": equal, "missing": missing, "max_abs_diff": gap,
            "extra": sorted(set(consolidated) - set(engine_weights))}


def checkpoint_sizes(files: dict[str, int]) -> dict[str, int]:
    """Bytes of a checkpoint by kind: model states (weights + engine state), optimizer shards, the rest."""
    kinds = {"model_states": 0, "optim_states": 0, "other": 0}
    for name, size in files.items():
        kind = "model_states" if "model_states" in name else "optim_states" if "optim_states" in name else "other"
        kinds[kind] += size
    return kinds


def readable_command(cmd: list[str], strip: tuple[str | Path, ...] = ()) -> str:
    """A launch command as a reader types it: ``torchrun``, ``deepspeed``, ``accelerate launch``; no port, no
    ``--out``, paths relative to the repository (or to the folders in ``strip``)."""
    import shlex

    from . import package_path

    names = {"torch.distributed.run": "torchrun", "deepspeed.launcher.runner": "deepspeed",
             "accelerate.commands.launch": "accelerate launch"}
    words = list(cmd)
    program = []
    if words[:2] == [sys.executable, "-m"] and words[2] in names:
        program, words = [names[words[2]]], words[3:]
    roots = [str(p).rstrip("/") + "/" for p in (*strip, package_path().parent)]
    shown, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--out":
            skip = True
            continue
        if word.startswith(("--master_port", "--main_process_port", "--master_addr")):
            continue
        for root in roots:
            word = word.replace(root, "")
        shown.append(word)
    return " ".join(program + [shlex.join(shown)])


def rank_error(log: str, first: str, last: str, rank: int = 0) -> str:
    """The lines of one rank's error message in a launch log, from the line containing ``first`` to the one
    containing ``last``. torchrun prefixes each rank's lines with ``[rankN]: `` and the ranks' lines
    interleave, so only ``rank``'s lines are read (all lines where there are no prefixes)."""
    prefix = f"[rank{rank}]: "
    lines = log.splitlines()
    if any(line.startswith(prefix) for line in lines):
        lines = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    start = next((i for i, line in enumerate(lines) if first in line), None)
    if start is None:
        raise ValueError(f"no line containing {first!r} in the log")
    message = []
    for line in lines[start:]:
        message.append(line.split("Error: ", 1)[-1] if not message else line)
        if last in line:
            break
    return "\n".join(message)
