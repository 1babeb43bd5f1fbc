"""ZeRO-Infinity's NVMe offload: the config the course builds for it, what it writes per rank, and the op it needs.

The training itself runs in notebook 07 (the same model offloaded to the CPU and to NVMe on 2 ranks: identical losses,
and every rank's swap files equal to ``swap_bytes``)."""

import pytest

from dscourse.config import build_config, check_config
from dscourse.config.builder import AIO_DEFAULTS
from dscourse.memory.nvme import MIN_AIO_BYTES, swap_bytes
from dscourse.memory.peak import param_tensors
from dscourse.models import SHAPES
from dscourse.nvme_offload import AIO_PACKAGE_HINT, aio_op_report, swap_file_holds, swap_totals


def test_an_nvme_config_names_its_directory_and_spells_out_aio():
    cfg = build_config(3, offload_optimizer="nvme", offload_param="nvme", nvme_path="/local_nvme", world_size=2)
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "nvme", "pin_memory": False, "nvme_path": "/local_nvme"}
    assert zero["offload_param"]["nvme_path"] == "/local_nvme" and cfg["aio"] == AIO_DEFAULTS
    assert [p for p in check_config(cfg, world_size=2) if p.severity == "error"] == []
    assert "aio" not in build_config(3, offload_optimizer="cpu")
    with pytest.raises(ValueError, match="nvme_path"):
        build_config(3, offload_param="nvme")


def test_the_checker_asks_for_the_directory_deepspeed_has_no_default_for():
    cfg = build_config(3, offload_optimizer="nvme", nvme_path="/x", world_size=2)
    del cfg["zero_optimization"]["offload_optimizer"]["nvme_path"]
    errors = [p for p in check_config(cfg, world_size=2) if p.severity == "error"]
    assert [p.path for p in errors] == ["zero_optimization.offload_optimizer.nvme_path"]


def test_swap_bytes_by_deepspeeds_rules():
    # two ranks: a 1 Mi-element table's partition is 1 MiB in bf16 (swapped); 1000 elements stay in RAM
    got = swap_bytes([2 ** 20, 1000], ranks=2)
    assert got == {"params": 2 ** 20, "optim": 12 * (2 ** 19 + 500), "grads": 4 * 2 ** 19}
    assert swap_bytes([1000], ranks=1) == {"params": 0, "optim": 0, "grads": 0}  # nothing reaches MIN_AIO_BYTES
    assert swap_bytes([2 ** 20], ranks=2, offload_param=False) == {"optim": 12 * 2 ** 19, "grads": 4 * 2 ** 19}
    # a larger aio block_size raises the floor with it
    assert swap_bytes([2 ** 20], ranks=2, block_size=4 * MIN_AIO_BYTES)["params"] == 0
    with pytest.raises(ValueError, match="at least one rank"):
        swap_bytes([10], ranks=0)


def test_the_notebooks_model_swaps_only_its_embedding():
    tensors = param_tensors(SHAPES["gpt2-small-cpu"])
    assert swap_bytes(tensors, ranks=2)["params"] == tensors[0]  # vocab × hidden / 2 ranks × 2 bytes
    assert sum(2 * -(-n // 2) >= MIN_AIO_BYTES for n in tensors) == 1


def test_swap_file_names():
    files = {"zero_stage_3/bfloat16params/rank0/0_param.tensor.swp": 8,
             "zero_stage_3/optimizer/rank0/0_51.tensor.swp": 40,
             "zero_stage_3/optimizer/rank0/exp_avg-0_51.tensor.swp": 40,
             "zero_stage_3/optimizer/rank0/exp_avg_sq-0_51.tensor.swp": 40,
             "zero_stage_3/optimizer/rank0/0_51_gradient_0_2.tensor.swp": 8,
             "zero_stage_3/optimizer/rank1/0_51.tensor.swp": 44}
    assert [swap_file_holds(f)[1] for f in files][1:4] == [
        "fp32 master weights (a sub-group)", "Adam's exp_avg (a sub-group)", "Adam's exp_avg_sq (a sub-group)"]
    assert swap_totals(files) == {"params": 8, "optim": 120, "grads": 8}
    assert swap_totals(files, rank=1) == {"optim": 44}


def test_deepspeed_can_build_its_async_io_op_here():
    """The README and .ci/run install libaio's headers; without them notebook 07's cell stops with DeepSpeed's words."""
    report = aio_op_report()
    assert report["compatible"], "\n".join([*report["messages"], AIO_PACKAGE_HINT])


def test_without_libaio_the_report_is_deepspeeds_own_words(monkeypatch):
    """A link that cannot succeed stands in for a machine without libaio: DeepSpeed's probe links with $LDFLAGS."""
    monkeypatch.setenv("LDFLAGS", "-Wl,--dscourse-no-such-linker-option")
    report = aio_op_report()
    assert not report["compatible"]
    assert report["messages"][0].startswith("async_io requires the dev libaio .so object and headers")
    assert not any("\x1b" in line for line in report["messages"])
