"""What the ``zero_optimization`` knobs of the seed's configs do to the per-GPU peak of a step.

Each knob changed alone from DeepSpeed 0.19.8's default, everything else fixed, and the peak recomputed by the
one peak function (:func:`.peak.peak_of`): the reader sees which knob is worth touching for memory. Knobs that
change communication or speed but no byte on the GPU (``stage3_prefetch_bucket_size``, ``stage3_max_reuse_distance``,
``allgather_bucket_size`` at ZeRO-3) show a difference of zero here; 4.5 counts their communication.
Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import replace

from .peak import DEFAULT_ZERO, PHASES, Peak, Zero, peak_of
from .shapes import Arch

# (knob as the reader writes it in ds_config.json, the value tried, the Zero field it sets, the stages it acts at)
VARIANTS = (
    ("reduce_bucket_size", 200_000_000, "reduce_bucket_size", (2, 3)),  # the seed's ZeRO-2 value
    ("reduce_bucket_size", 10_000_000, "reduce_bucket_size", (2, 3)),  # the seed's ZeRO-3 value
    ("overlap_comm", True, "overlap_comm", (2,)),  # the seed sets it; the default is on at stage 3 only
    ("overlap_comm", False, "overlap_comm", (3,)),
    ("stage3_max_live_parameters", 100_000_000, "max_live_parameters", (3,)),
    ("sub_group_size", 100_000_000, "sub_group_size", (3,)),
    ("stage3_prefetch_bucket_size", 10_000_000, "prefetch_bucket_size", (3,)),
)


def knob_effects(arch: Arch, gpus: int, stage: int, micro_batch: int = 1, seq: int | None = None,
                 checkpointing: bool = False) -> tuple[Peak, list[dict]]:
    """(the step at DeepSpeed's defaults, one row per knob that acts at this stage: knob, value, peak, change)."""
    def peak(zero: Zero):
        return peak_of(arch, gpus, stage, micro_batch, seq, checkpointing, zero=zero)

    base = peak(DEFAULT_ZERO)
    rows = []
    for knob, value, field_name, stages in VARIANTS:
        if stage not in stages:
            continue
        got = peak(replace(DEFAULT_ZERO, **{field_name: value}))
        rows.append({"knob": knob, "value": value, "peak_bytes": got.peak_bytes, "peak_phase": got.peak_phase,
                     "change_bytes": got.peak_bytes - base.peak_bytes,
                     "phases": {p: got.phase_bytes(p) for p in PHASES}})
    return base, rows


def value_text(value) -> str:
    """A knob's value as the reader writes it in ds_config.json: ``true``, ``2e8``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
