"""Resuming a ZeRO checkpoint on a different number of ranks, with DeepSpeed's universal checkpoint (4.7).

A ZeRO checkpoint stores each rank's partition of the optimizer state (``*_optim_states.pt``, one per rank), so it
can be loaded only by as many ranks as wrote it. ``deepspeed.checkpoint.ds_to_universal`` rewrites it as one folder
per parameter (``zero/<name>/fp32.pt``, ``exp_avg.pt``, ``exp_avg_sq.pt``), which any number of ranks can load with
``"checkpoint": {"load_universal": true}`` in the config. :func:`universal_resume` does the whole round trip on real
ranks: train and save on ``save_ranks``, convert, resume on ``resume_ranks``; and tries the unconverted checkpoint too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .integration import rank_error, write_config
from .launch import LaunchError, run_ranks


def to_universal(checkpoint: Path, output: Path, timeout: float = 600) -> list[str]:
    """Run ``python -m deepspeed.checkpoint.ds_to_universal`` on one checkpoint folder (``.../step<N>``); the
    files it wrote, relative to ``output``."""
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(checkpoint),
           "--output_folder", str(output)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"ds_to_universal did not finish in {timeout:.0f} s on {checkpoint}") from None
    if done.returncode:
        raise LaunchError(f"ds_to_universal failed on {checkpoint}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}",
                          done.stdout + done.stderr)
    return sorted(str(f.relative_to(output)) for f in output.rglob("*") if f.is_file())


def universal_resume(workdir: str | Path, stage: int = 2, save_ranks: int = 4, resume_ranks: int = 2,
                     steps: int = 8, save_at: int = 4, shape: str = "gpt2-tiny", pool: int = 2,
                     timeout: float = 600) -> dict:
    """Train ``steps`` steps on ``save_ranks`` ranks saving at ``save_at``; convert that checkpoint to a universal one;
    resume it on ``resume_ranks`` ranks; and try to resume the unconverted checkpoint there as well.

    Returns rank 0's losses of the uninterrupted run (``full``) and of the resumed one (``resumed``), the universal
    folder's files, and DeepSpeed's refusal of the unconverted checkpoint (``unconverted_error``). Rank 0 trains on
    the same batch at every step whatever the world size (``dscourse.scripts.train_run``), so the first resumed step's
    loss is the uninterrupted run's if and only if the weights came back exactly."""
    run = Path(workdir) / f"universal-zero{stage}-{save_ranks}to{resume_ranks}"
    common = ["--steps", str(steps), "--shape", shape, "--pool", str(pool)]
    saved = write_config(run / "save.json", stage, world_size=save_ranks)
    full = run_ranks("dscourse.scripts.train_run",
                     ["--config", str(saved), *common, "--save-at", str(save_at), "--save-dir", str(run / "ckpt"),
                      "--universal-info"], nproc=save_ranks, timeout=timeout, out_dir=run / "full").ranks[0]
    tag = f"step{save_at}"
    files = to_universal(run / "ckpt" / tag, run / "ckpt" / f"{tag}_universal", timeout)
    loads = write_config(run / "resume.json", stage, world_size=resume_ranks, top={"checkpoint": {"load_universal": True}})
    resumed = run_ranks("dscourse.scripts.train_run",
                        ["--config", str(loads), *common, "--resume-from", str(run / "ckpt"),
                         "--resume-tag", f"{tag}_universal"], nproc=resume_ranks, timeout=timeout,
                        out_dir=run / "resumed").ranks[0]
    plain = write_config(run / "resume_plain.json", stage, world_size=resume_ranks)
    try:
        run_ranks("dscourse.scripts.train_run", ["--config", str(plain), *common, "--resume-from", str(run / "ckpt"),
                                                 "--resume-tag", tag], nproc=resume_ranks, timeout=timeout,
                  out_dir=run / "unconverted")
        refusal = None
    except LaunchError as e:
        refusal = rank_error(e.log, "ZeRORuntimeException: ", "not currently supported").split("ZeRORuntimeException: ")[-1]
    return {"stage": stage, "save_ranks": save_ranks, "resume_ranks": resume_ranks, "save_at": save_at,
            "full": {int(k): v for k, v in full["losses"].items()},
            "resumed": {int(k): v for k, v in resumed["losses"].items()},
            "checkpoint_files": sorted(full.get("checkpoint_files", {})), "universal_files": files,
            "unconverted_error": refusal}
