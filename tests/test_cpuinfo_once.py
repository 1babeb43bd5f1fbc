"""The session's saved py-cpuinfo answer gives DeepSpeed the same compiler flags as asking py-cpuinfo does."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine  # imports DeepSpeed: not in the fast loop

FLAGS = """
import json
import cpuinfo.cpuinfo as impl
asked = []  # py-cpuinfo's own questions: each starts a process that times the clock for a second
real = impl.get_cpu_info_json
impl.get_cpu_info_json = lambda: asked.append(1) or real()
import dscourse.scripts  # what every rank script imports first
from deepspeed.accelerator import get_accelerator
flags = {name: get_accelerator().create_op_builder(name).cxx_args() for name in ("CPUAdamBuilder", "FusedAdamBuilder")}
print(json.dumps({"flags": flags, "asked": len(asked)}))
"""


def _flags(env_value: str) -> dict:
    import os

    env = {**os.environ, "DSCOURSE_CPUINFO": env_value}
    done = subprocess.run([sys.executable, "-c", FLAGS], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_saved_answer_gives_the_same_op_flags_without_asking_again(tmp_path):
    from dscourse.cpuinfo_once import save

    asked = _flags("")  # py-cpuinfo asked, as in a reader's run
    saved = _flags(str(save(tmp_path / "cpuinfo.json")))
    assert saved["flags"] == asked["flags"]
    assert any(flag.startswith("-D__") for flag in saved["flags"]["CPUAdamBuilder"])  # the SIMD width is in there
    assert asked["asked"] == 4 and saved["asked"] == 0  # two questions per op builder (cpu_arch, simd_width), or none


def test_no_saved_answer_changes_nothing(tmp_path, monkeypatch):
    import cpuinfo

    from dscourse.cpuinfo_once import use_saved

    monkeypatch.setenv("DSCOURSE_CPUINFO", str(tmp_path / "missing.json"))
    original = cpuinfo.get_cpu_info
    assert use_saved() is False and cpuinfo.get_cpu_info is original
