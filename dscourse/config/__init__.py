"""DeepSpeed configs: a builder for every config the course runs, and a checker stricter than DeepSpeed.

    python -m dscourse.config check ds_config.json --for hf --world-size 8
"""

from .builder import OFFLOAD_DEVICES, build_config
from .check import (
    ConfigReadError,
    Problem,
    check_config,
    check_text,
    deepspeed_verdict,
    implied_world_size,
    read_config,
    to_strict_json,
)

__all__ = ["OFFLOAD_DEVICES", "ConfigReadError", "Problem", "build_config", "check_config", "check_text",
           "deepspeed_verdict", "implied_world_size", "read_config", "to_strict_json"]
