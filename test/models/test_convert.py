"""Tests for MinkowskiEngine/SLidR state-dict import and export."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from relkd_core.errors import CheckpointError
from relkd_core.models import (
    StudentConfig,
    build_student,
    load_minkowski_state_dict,
    voxelize_batch,
)
from relkd_core.models.convert import from_minkowski_state_dict, to_minkowski_state_dict

ConfigFactory = Callable[..., StudentConfig]
ScanFactory = Callable[..., torch.Tensor]


def test_to_minkowski_state_dict_uses_slidr_names_and_shapes() -> None:
    state = to_minkowski_state_dict(build_student(StudentConfig()))
    expected = {
        "conv0p1s1.kernel": (27, 1, 32),
        "bn0.bn.running_mean": (32,),
        "conv1p1s2.kernel": (8, 32, 32),
        "block1.0.conv1.kernel": (27, 32, 32),
        "block1.0.norm2.bn.weight": (32,),
        "block2.0.downsample.0.kernel": (32, 64),
        "block2.0.downsample.1.bn.running_var": (64,),
        "convtr4p16s2.kernel": (8, 256, 256),
        "bntr7.bn.bias": (96,),
        "block8.0.downsample.0.kernel": (128, 96),
        "final.kernel": (96, 64),
        "final.bias": (1, 64),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "bn0.bn.num_batches_tracked" in state
    assert not any(key.endswith(".weight") and ".bn." not in key for key in state)


def test_load_minkowski_state_dict_round_trip_gives_same_outputs(
    make_config: ConfigFactory, make_scan: ScanFactory
) -> None:
    config = make_config()
    source, target = build_student(config).eval(), build_student(config).eval()
    with torch.no_grad():  # non-trivial running statistics, so batch norm is checked too
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    load_minkowski_state_dict(target, to_minkowski_state_dict(source))
    batch = voxelize_batch([make_scan(300)], config)
    with torch.no_grad():
        torch.testing.assert_close(target(batch), source(batch))


@pytest.mark.parametrize("wrap", ["model_points", "state_dict", "module.", "model."])
def test_load_minkowski_state_dict_accepts_slidr_wrappings(make_config: ConfigFactory,
                                                           wrap: str) -> None:
    source, target = build_student(make_config()), build_student(make_config())
    state = to_minkowski_state_dict(source)
    wrapped = {wrap: state} if not wrap.endswith(".") else {wrap + k: v for k, v in state.items()}
    load_minkowski_state_dict(target, wrapped)
    torch.testing.assert_close(target.block8[0].conv2.weight, source.block8[0].conv2.weight)


def test_from_minkowski_state_dict_reshapes_kernels_and_biases() -> None:
    converted = from_minkowski_state_dict({
        "final.kernel": torch.ones(4, 2),
        "final.bias": torch.ones(1, 2),
        "bn0.bn.weight": torch.ones(3),
        "conv0p1s1.kernel": torch.ones(27, 1, 3),
    })
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        "final.weight": (1, 4, 2), "final.bias": (2,), "bn0.weight": (3,),
        "conv0p1s1.weight": (27, 1, 3),
    }


def test_load_minkowski_state_dict_unexpected_key_names_it(make_config: ConfigFactory) -> None:
    model = build_student(make_config())
    state = to_minkowski_state_dict(model)
    state["block9.0.conv1.kernel"] = torch.zeros(27, 1, 1)
    with pytest.raises(CheckpointError, match=r"checkpoint key 'block9\.0\.conv1\.weight' has no "
                                              "counterpart in MinkUNet14"):
        load_minkowski_state_dict(model, state)


def test_load_minkowski_state_dict_missing_key_names_it(make_config: ConfigFactory) -> None:
    model = build_student(make_config())
    state = to_minkowski_state_dict(model)
    del state["bntr5.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"checkpoint lacks 'bntr5\.running_var'"):
        load_minkowski_state_dict(model, state)


def test_load_minkowski_state_dict_shape_mismatch_names_it(make_config: ConfigFactory) -> None:
    model = build_student(make_config())
    state = to_minkowski_state_dict(build_student(make_config(out_dim=20)))
    with pytest.raises(CheckpointError, match=r"final.weight: checkpoint shape \(1, 12, 20\) "
                                              r"!= model shape \(1, 12, 8\)"):
        load_minkowski_state_dict(model, state)
    before = model.final.weight.detach().clone()
    load_minkowski_state_dict(model, state, exclude=("final.",))  # keep our own head
    torch.testing.assert_close(model.final.weight, before)


def test_load_minkowski_state_dict_rejects_non_tensors(make_config: ConfigFactory) -> None:
    with pytest.raises(CheckpointError, match=r"conv0p1s1\.kernel: expected a tensor, got list"):
        load_minkowski_state_dict(build_student(make_config()), {"conv0p1s1.kernel": [1.0]})
