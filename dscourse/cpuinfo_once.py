"""py-cpuinfo's answer asked once per test session, not in every rank.

DeepSpeed asks py-cpuinfo for the CPU's architecture and SIMD width each time a process loads one of its CPU ops
(``CPUOpBuilder.cxx_args`` calls ``cpu_arch`` and ``simd_width``, each ``cpuinfo.get_cpu_info()``), and once more
when it builds ``DeepSpeedCPUAdam``. Each call starts a Python process that times the clock for a second while the
caller polls it in a busy loop (py-cpuinfo 9's ``_get_cpu_info_from_cpuid``): about 1.1 s and 1 CPU-second per call,
two or three per rank, more than a rank spends training at the CPU scale.

Where ``DSCOURSE_CPUINFO`` names a file holding the answer (the test session writes it once: ``conftest.py``), the
rank scripts (``dscourse.scripts``) read it instead: the same function's answer on the same machine. Elsewhere, a
reader's run included, nothing changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "DSCOURSE_CPUINFO"


def save(path: str | Path) -> Path:
    """Ask py-cpuinfo once and keep its answer in ``path``."""
    from cpuinfo import get_cpu_info

    path = Path(path)
    path.write_text(json.dumps(get_cpu_info()))
    return path


def use_saved() -> bool:
    """Make ``cpuinfo.get_cpu_info`` return the answer saved in ``$DSCOURSE_CPUINFO``, if that names a file."""
    saved = os.environ.get(ENV)
    if not saved or not os.path.isfile(saved):
        return False
    import cpuinfo

    answer = json.loads(Path(saved).read_text())
    # DeepSpeed imports the function where it calls it (``from cpuinfo import get_cpu_info``): it finds this one
    cpuinfo.get_cpu_info = lambda: dict(answer)
    return True
