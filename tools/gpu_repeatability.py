"""Does a GPU run repeat bit for bit? The two comparisons of 4.3 that failed on an H100 at first.

    DSCOURSE_SCALE=gpu python tools/gpu_repeatability.py --out repeat.json

1. Resume (``dscourse.integration.resume``) against the uninterrupted run, ZeRO-2 bf16, with
   ``dscourse.scripts.deterministic()``: with the math attention kernels (its default) and with the fused
   ones torch picks (``DSCOURSE_FUSED_ATTENTION=1``).
2. ``accelerate launch`` with flags against the same with ``dscourse/configs/accelerate_zero2.yaml``: each
   run's DeepSpeed config and losses, so a difference can be traced to a key.

With ``--repeats K`` (written under ``"repeats"`` of ``--out``, keeping what that file holds) it only runs
the same thing K times, to tell a comparison that differs from a GPU run
that does not repeat: ``accelerate launch`` ZeRO-2 and ZeRO-3 (whose ``overlap_comm`` defaults to on, and
once with it off), each with the fused and the math attention kernels. Each rank's log lines that name
an operation without a deterministic implementation (``use_deterministic_algorithms(warn_only=True)``
lets it run and warns) are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from dscourse import package_path, scale  # noqa: E402
from dscourse.integration import losses, max_rel_diff, resume, train_stages, write_config  # noqa: E402
from dscourse.launch import run_ranks  # noqa: E402
from dscourse.models import learning_rate  # noqa: E402
from dscourse.provenance import environment  # noqa: E402


def accelerate_flags(nproc: int) -> list[str]:
    """``accelerate launch`` flags for ZeRO-2 in bf16, as 4.3 writes them."""
    return ["--use_deepspeed", "--zero_stage", "2", "--mixed_precision", "bf16", f"--num_processes={nproc}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=0, help="run each setting this many times instead")
    args = p.parse_args(argv)
    shape, nproc = scale.train_shape(), scale.ranks()
    work = Path(tempfile.mkdtemp(prefix="dscourse-repeat-"))
    out = Path(args.out)
    if args.repeats:
        return repeats(args.repeats, shape, nproc, work, out)
    report = {"provenance": environment(), "shape": shape, "ranks": nproc, "resume": {}, "accelerate": {}}
    for mode, fused in (("math attention", "0"), ("fused attention", "1")):
        os.environ["DSCOURSE_FUSED_ATTENTION"] = fused
        run = train_stages(work / mode.split()[0], (2,), "bf16", steps=args.steps, shape=shape, nproc=nproc,
                           save_at=(6,))[2]
        again = resume(run["dir"], "step6", args.steps, shape=shape, nproc=nproc)
        a, b = losses(run), losses(again)
        report["resume"][mode] = {"uninterrupted": a, "resumed": b,
                                  "identical": all(a[k] == b[k] for k in b), "max_rel_diff": max_rel_diff(b, a)}
        print(mode, report["resume"][mode]["identical"], report["resume"][mode]["max_rel_diff"], flush=True)
        out.write_text(json.dumps(report, indent=1))
    os.environ.pop("DSCOURSE_FUSED_ATTENTION")
    isolated = {"HF_HOME": str(work / "hf_home")}
    flags = accelerate_flags(nproc)
    yaml = ["--config_file", str(package_path("configs") / "accelerate_zero2.yaml"), f"--num_processes={nproc}"]
    for name, launcher_args in (("flags", flags), ("config file", yaml)):
        r = run_ranks("dscourse.scripts.accelerate_train", ["--shape", shape], nproc=nproc, launcher="accelerate",
                      launcher_args=launcher_args, timeout=600, env=isolated, out_dir=work / name.replace(" ", "-"))
        report["accelerate"][name] = {k: r.ranks[0].get(k) for k in ("losses", "ds_config", "mixed_precision",
                                                                        "model_class", "optimizer_class")}
        out.write_text(json.dumps(report, indent=1))
    acc = report["accelerate"]
    print("accelerate same losses:", acc["flags"]["losses"] == acc["config file"]["losses"],
          "same ds_config:", acc["flags"]["ds_config"] == acc["config file"]["ds_config"])
    return 0


def nondeterminism_warnings(log: str) -> list[str]:
    """The distinct log lines that torch's ``warn_only`` determinism check wrote."""
    return sorted({line.strip()[:300] for line in log.splitlines() if "deterministic" in line})


def repeats(k: int, shape: str, nproc: int, work: Path, out: Path) -> int:
    report = {"provenance": {**environment(), "command": f"DSCOURSE_SCALE=gpu python3 tools/gpu_repeatability.py "
                                                         f"--repeats {k} --out ..."},
              "shape": shape, "ranks": nproc, "repeats": k, "settings": {}}
    kept = json.loads(out.read_text()) if out.exists() else {}
    isolated = {"HF_HOME": str(work / "hf_home")}
    # (name, DSCOURSE_FUSED_ATTENTION, extra zero_optimization keys of a plain ZeRO-3 run; None: accelerate ZeRO-2)
    settings = [("accelerate ZeRO-2, fused attention", "1", None), ("accelerate ZeRO-2, math attention", "0", None),
                ("ZeRO-3, fused attention", "1", {}), ("ZeRO-3, math attention", "0", {}),
                ("ZeRO-3 overlap_comm off, math attention", "0", {"overlap_comm": False})]
    for n, (name, fused, extra_zero) in enumerate(settings):
        curves, warnings = [], set()
        for i in range(k):
            env = {**isolated, "DSCOURSE_FUSED_ATTENTION": fused}
            if extra_zero is None:
                r = run_ranks("dscourse.scripts.accelerate_train", ["--shape", shape], nproc=nproc, launcher="accelerate",
                              launcher_args=accelerate_flags(nproc), timeout=600, env=env, out_dir=work / f"s{n}-{i}")
            else:
                cfg = write_config(work / f"s{n}.json", 3, "bf16", world_size=nproc, lr=learning_rate(shape),
                                   extra_zero=extra_zero)
                r = run_ranks("dscourse.scripts.train_run", ["--config", str(cfg), "--steps", "8", "--shape", shape,
                                                             "--pool", "4"], nproc=nproc, timeout=600, env=env,
                              out_dir=work / f"s{n}-{i}")
            curves.append(losses(r.ranks[0]))
            warnings |= set(nondeterminism_warnings(r.log))
        report["settings"][name] = {
            "losses": curves, "all_identical": all(c == curves[0] for c in curves),
            "max_rel_diff": max(max_rel_diff(c, curves[0]) for c in curves), "warnings": sorted(warnings)}
        print(name, report["settings"][name]["all_identical"], report["settings"][name]["max_rel_diff"],
              len(warnings), flush=True)
        out.write_text(json.dumps({**kept, "repeats": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
