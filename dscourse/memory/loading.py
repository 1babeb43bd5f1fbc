"""Host memory of one node while each of its ranks calls ``from_pretrained`` on a safetensors checkpoint.

transformers 5 (``modeling_utils.py``): the default ``dtype`` is ``"auto"`` (the checkpoint's own; transformers 4
loaded float32 unless told otherwise), ``low_cpu_mem_usage`` is accepted and ignored (every load builds the model on
the meta device first), and ``load_state_dict`` opens the file with safetensors' ``safe_open``, a memory map. So:

- ``every_rank``, loading in the file's dtype: the parameters are views of the mapped file. A rank's private memory
  does not grow; the file's pages sit once in the node's page cache, shared by every rank and reclaimable.
- ``every_rank``, converting (``dtype=torch.float32`` on a bf16 file, or transformers 4's default): every rank makes
  a private copy in the new dtype.
- ``zero3`` (``HfDeepSpeedConfig`` / ``TrainingArguments(deepspeed=...)`` with ZeRO-3 before ``from_pretrained``):
  only rank 0 maps the file (the others map it to the meta device) and the partitions are made on each rank's
  accelerator; on a GPU node the host holds the page cache and the passing buffers only.

Measured per rank on CPU ranks by ``benchmarks/load_memory.py`` (``dscourse/data/cpu_load_memory.json``), where the
accelerator is the host itself.
"""

from __future__ import annotations

from dataclasses import dataclass

HOWS = ("every_rank", "every_rank_converting", "zero3")


@dataclass(frozen=True)
class HostLoad:
    """Bytes on one node's host while its ranks load: private to each rank, and the file in the page cache."""

    private_per_rank: float
    page_cache: float
    ranks: int

    @property
    def private_per_node(self) -> float:
        return self.private_per_rank * self.ranks


def host_when_loading(params: float, ranks: int, how: str, file_bytes_per_param: int = 2,
                      load_bytes_per_param: int = 4) -> HostLoad:
    """What a node's host holds once each of ``ranks`` processes has loaded a ``params``-parameter checkpoint
    ``how`` (one of :data:`HOWS`), the ranks training on GPUs. ``load_bytes_per_param`` is the converted dtype's."""
    if how not in HOWS:
        raise ValueError(f"how must be one of {', '.join(HOWS)}, not {how!r}")
    if ranks < 1 or params <= 0:
        raise ValueError(f"ranks must be at least 1 and params positive, not {ranks} and {params}")
    private = params * load_bytes_per_param if how == "every_rank_converting" else 0.0
    return HostLoad(private_per_rank=private, page_cache=params * file_bytes_per_param, ranks=ranks)
