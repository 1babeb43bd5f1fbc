"""What DeepSpeed 0.19.8's own config parser (``DeepSpeedConfig``) says about a config, in one line."""

from __future__ import annotations

import copy
import logging
import os
import warnings

from ..logcapture import Collect
from .deepspeed_reads import quiet, tables


def deepspeed_verdict(cfg: dict | str | os.PathLike, world_size: int = 1) -> str:
    """What ``deepspeed.runtime.config.DeepSpeedConfig`` does with ``cfg``, in one line.

    ``cfg`` is a dict (what the HF Trainer and Accelerate hand DeepSpeed after their own ``json.load``) or the path
    of a config file, which DeepSpeedConfig then reads itself: hjson, with ``dict_raise_error_on_duplicate_keys``
    (``deepspeed/runtime/config.py``), so a key given twice raises there and only there.

    "accepted silently (...)", "accepted with a warning (...): ..." or "raises <Exception>: ...".
    DeepSpeedConfig asks torch.distributed for the world size; it is given ``world_size`` (rank 0)
    instead, so no process group is needed.
    """
    if tables() is None:
        return "DeepSpeed cannot be imported here"
    from unittest import mock

    with quiet():
        from deepspeed.runtime import config as ds_config
    ds_logger, collect = logging.getLogger("DeepSpeed"), Collect(logging.WARNING)
    saved = ds_logger.handlers[:]
    ds_logger.handlers[:] = [collect]
    try:
        with warnings.catch_warnings(), mock.patch.object(ds_config.dist, "get_rank", return_value=0), \
                mock.patch.object(ds_config.dist, "get_world_size", return_value=world_size):
            warnings.simplefilter("ignore")
            source = os.fspath(cfg) if isinstance(cfg, (str, os.PathLike)) else copy.deepcopy(cfg)
            parsed = ds_config.DeepSpeedConfig(source)
    except Exception as e:  # noqa: BLE001 - the exception is the verdict
        first = " ".join(str(e).split())[:150]
        return f"raises {type(e).__name__}: {first}" if first else f"raises {type(e).__name__}"
    finally:
        ds_logger.handlers[:] = saved
    state = (f"ZeRO stage {int(parsed.zero_optimization_stage)}, fp16 {parsed.float16_config.enabled}, "
             f"bf16 {parsed.bfloat16_config.enabled}")
    if collect.messages:
        return f"accepted with a warning ({state}): {' '.join(collect.messages[0].split())[:150]}"
    return f"accepted silently ({state})"
