"""Does a GPU run repeat bit for bit? The two comparisons of 4.3 that failed on an H100 at first.

    DSCOURSE_SCALE=gpu python tools/gpu_repeatability.py --out repeat.json

1. Resume (``dscourse.integration.resume``) against the uninterrupted run, ZeRO-2 bf16, with
   ``dscourse.scripts.deterministic()``: with the math attention kernels (``DSCOURSE_MATH_ATTENTION=1``)
   and with the fused ones torch picks.
2. ``accelerate launch`` with flags against the same with ``dscourse/configs/accelerate_zero2.yaml``: each
   run's DeepSpeed config and losses, so a difference can be traced to a key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dscourse import package_path, scale  # noqa: E402
from dscourse.integration import losses, max_rel_diff, resume, train_stages  # noqa: E402
from dscourse.launch import run_ranks  # noqa: E402
from dscourse.provenance import environment  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args(argv)
    shape, nproc = scale.train_shape(), scale.ranks()
    work = Path(tempfile.mkdtemp(prefix="dscourse-repeat-"))
    out = Path(args.out)
    report = {"provenance": environment(), "shape": shape, "ranks": nproc, "resume": {}, "accelerate": {}}
    for mode, math in (("math attention", "1"), ("fused attention", "0")):
        os.environ["DSCOURSE_MATH_ATTENTION"] = math
        run = train_stages(work / mode.split()[0], (2,), "bf16", steps=args.steps, shape=shape, nproc=nproc,
                           save_at=(6,))[2]
        again = resume(run["dir"], "step6", args.steps, shape=shape, nproc=nproc)
        a, b = losses(run), losses(again)
        report["resume"][mode] = {"uninterrupted": a, "resumed": b,
                                  "identical": all(a[k] == b[k] for k in b), "max_rel_diff": max_rel_diff(b, a)}
        print(mode, report["resume"][mode]["identical"], report["resume"][mode]["max_rel_diff"], flush=True)
        out.write_text(json.dumps(report, indent=1))
    os.environ.pop("DSCOURSE_MATH_ATTENTION")
    isolated = {"HF_HOME": str(work / "hf_home")}
    flags = ["--use_deepspeed", "--zero_stage", "2", "--mixed_precision", "bf16", f"--num_processes={nproc}"]
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


if __name__ == "__main__":
    sys.exit(main())
