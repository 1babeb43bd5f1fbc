"""Parameter counts and largest layers, computed by dscourse from the shape, against transformers' own models."""

import pytest
import torch

from dscourse.memory import PRESETS, activation_bytes
from dscourse.models import SHAPES, build_model, count_params

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")


@pytest.mark.parametrize("arch", [*PRESETS.values(), *SHAPES.values()], ids=lambda a: a.name)
def test_parameter_count_matches_transformers(arch):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(arch)
    total, largest = count_params(model)
    assert arch.params == total
    assert arch.largest_layer == largest


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_course_shapes_build(name):
    model = build_model(SHAPES[name])
    total, largest = count_params(model)
    assert 0 < largest < total


def test_activations_grow_linearly_with_batch_and_drop_with_checkpointing():
    arch = PRESETS["Llama-2-7B"]
    one, four = activation_bytes(arch, 2048, 1), activation_bytes(arch, 2048, 4)
    assert four == 4 * one
    assert activation_bytes(arch, 2048, 1, checkpointing=True) < one / 5
    assert activation_bytes(arch, 2048, 1, attention="eager") > one
    with pytest.raises(ValueError):
        activation_bytes(arch, 0, 1)
