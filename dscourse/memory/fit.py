"""Does it fit? The step's GPU peak and the host's RAM for a model shape, and the fewest GPUs that hold it.

Used to answer claims like "13B on a 24 GB card" with both numbers that decide it: the GPU's peak
during a training step (:func:`dscourse.memory.peak.peak`, the one peak function) and the host's RAM
(what offload puts there).
"""

from __future__ import annotations

from dataclasses import dataclass

from .formulas import Estimate, Setup
from .peak import DEFAULT_ZERO, Peak, Zero, peak_of
from .shapes import Arch


@dataclass
class Fit:
    peak: Peak

    @property
    def setup(self) -> Setup:
        return self.peak.setup

    @property
    def states(self) -> Estimate:
        return self.peak.states

    @property
    def gpu_peak(self) -> int:
        return self.peak.peak_bytes

    @property
    def host_per_node(self) -> int:
        return self.peak.cpu_bytes


def plan(arch: Arch, gpus: int, stage: int, seq: int, micro_batch: int = 1, checkpointing: bool = True,
         offload_optimizer: str = "none", offload_param: str = "none", gpus_per_node: int | None = None,
         zero: Zero = DEFAULT_ZERO, grad_accum: int = 1) -> Fit:
    return Fit(peak_of(arch, gpus, stage, micro_batch, seq, checkpointing, offload_optimizer, offload_param,
                       gpus_per_node, zero, grad_accum))


def fewest_gpus(arch: Arch, gpu_bytes: float, stage: int, seq: int, micro_batch: int = 1,
                checkpointing: bool = True, max_gpus: int = 4096, **offload) -> Fit | None:
    """The smallest GPU count whose per-GPU peak fits in ``gpu_bytes`` (None if even ``max_gpus`` do not)."""
    def at(n):
        return plan(arch, n, stage, seq, micro_batch, checkpointing, **offload)

    if at(1).gpu_peak <= gpu_bytes:
        return at(1)
    # from two GPUs on (ZeRO-3 gathers parameters there) the peak only falls: if the most do not fit, none do
    if at(max_gpus).gpu_peak > gpu_bytes:
        return None
    for n in range(2, max_gpus + 1):
        fit = at(n)
        if fit.gpu_peak <= gpu_bytes:
            return fit
    return None
