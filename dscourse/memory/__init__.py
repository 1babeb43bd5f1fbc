"""Memory accounting for ZeRO training: formula families, model shapes, the step's peak, and the command line.

    python -m dscourse.memory --params 7.5e9 --gpus 64 --stage 3 --formula paper --json
    python -m dscourse.memory --model-config config.json --gpus 8 --stage 3 --micro-batch 1 --seq 4096 --json
"""

from .formulas import (
                       CATEGORIES,
                       CATEGORY_LABELS,
                       FORMULAS,
                       STATE_CATEGORIES,
                       Estimate,
                       FormulaError,
                       Setup,
                       estimate,
                       estimate_all,
)
from .hf import MODEL_TYPES, arch_from_file, arch_from_hf, hf_presets
from .peak import PHASES, Peak, Zero, activation_bytes, arch_setup, peak, peak_of
from .shapes import PRESETS, Arch, param_count
from .sizes import format_bytes, parse_count

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "FORMULAS", "STATE_CATEGORIES", "Estimate", "FormulaError", "Setup",
           "estimate", "estimate_all", "MODEL_TYPES", "arch_from_file", "arch_from_hf", "hf_presets", "PHASES", "Peak",
           "Zero", "arch_setup", "peak", "peak_of", "PRESETS", "Arch", "activation_bytes", "param_count",
           "format_bytes", "parse_count"]
