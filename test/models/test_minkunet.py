"""Tests for the MinkUNet student: per-point outputs, variants, edge cases, bad input, parity."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from relkd_core.config import load_config
from relkd_core.errors import ModelError
from relkd_core.models import (
    MinkUNet14,
    MinkUNet34,
    StudentConfig,
    build_student,
    voxelize_batch,
)

ROOT = Path(__file__).resolve().parents[2]
ConfigFactory = Callable[..., StudentConfig]
ScanFactory = Callable[..., torch.Tensor]


def test_minkunet_output_is_per_point_normalised_and_shared_within_a_voxel(
    make_config: ConfigFactory, make_scan: ScanFactory
) -> None:
    config = make_config()
    model = build_student(config).eval()
    scan = make_scan(400)
    batch = voxelize_batch([scan], config)
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (400, config.out_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(400))
    # Points of one voxel get that voxel's features.
    voxel_out = model.forward_voxels(batch).detach()
    torch.testing.assert_close(out, voxel_out[batch.point_to_voxel])


def test_minkunet_unnormalised_output_when_configured(make_config: ConfigFactory,
                                                      make_scan: ScanFactory) -> None:
    config = make_config(normalize_output=False)
    with torch.no_grad():
        out = build_student(config).eval()(voxelize_batch([make_scan(300)], config))
    assert not torch.allclose(out.norm(dim=1), torch.ones(300))


def test_minkunet_is_equivariant_to_point_order(make_config: ConfigFactory,
                                                make_scan: ScanFactory) -> None:
    config = make_config()
    model = build_student(config).eval()
    scan = make_scan(300)
    permutation = torch.randperm(300)
    with torch.no_grad():
        out = model(voxelize_batch([scan], config))
        out_permuted = model(voxelize_batch([scan[permutation]], config))
    torch.testing.assert_close(out_permuted, out[permutation], atol=1e-5, rtol=1e-5)


def test_minkunet_scans_of_a_batch_do_not_interact(make_config: ConfigFactory,
                                                   make_scan: ScanFactory) -> None:
    config = make_config()
    model = build_student(config).eval()  # eval: batch statistics would couple the scans
    first, second = make_scan(300, seed=1), make_scan(200, seed=2)
    with torch.no_grad():
        batch = voxelize_batch([first, second], config)
        together = batch.split_points(model(batch))
        alone = model(voxelize_batch([first], config))
    assert [len(part) for part in together] == [300, 200]
    torch.testing.assert_close(together[0], alone, atol=1e-5, rtol=1e-5)


def test_minkunet_is_invariant_to_translation_by_whole_coarse_cells(
    make_config: ConfigFactory, make_scan: ScanFactory
) -> None:
    config = make_config()
    model = build_student(config).eval()
    scan = make_scan(300)
    shifted = scan.clone()
    shifted[:, :3] += 16 * config.voxel_size_m * torch.tensor([1.0, -2.0, 3.0])  # 16 = 2^4
    with torch.no_grad():
        torch.testing.assert_close(model(voxelize_batch([shifted], config)),
                                   model(voxelize_batch([scan], config)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_minkunet_empty_and_single_point_scans(make_config: ConfigFactory,
                                               make_scan: ScanFactory, training: bool) -> None:
    config = make_config()
    model = build_student(config).train(training)
    empty, single = torch.zeros((0, 4)), torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    out_empty = model(voxelize_batch([empty], config))
    assert out_empty.shape == (0, config.out_dim)
    out_single = model(voxelize_batch([single], config))
    assert out_single.shape == (1, config.out_dim)
    assert torch.isfinite(out_single).all()
    mixed = voxelize_batch([empty, make_scan(100), single], config)
    parts = mixed.split_points(model(mixed))
    assert [tuple(part.shape) for part in parts] == [(0, 8), (100, 8), (1, 8)]


def test_minkunet_training_step_reaches_every_parameter(make_config: ConfigFactory,
                                                        make_scan: ScanFactory) -> None:
    config = make_config(input_features="xyzi")
    model = build_student(config).train()
    out = model(voxelize_batch([make_scan(300), make_scan(200, seed=1)], config))
    (out[:, 0] * torch.linspace(-1.0, 1.0, len(out))).sum().backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize(("variant", "blocks"), [("14", 8), ("18", 16), ("34", 23)])
def test_build_student_variants_have_their_block_counts(variant: str, blocks: int) -> None:
    model = build_student(StudentConfig(variant=variant, width_multiplier=0.125))  # type: ignore[arg-type]
    names = {name for name, _ in model.named_modules()
             if name.count(".") == 1 and name.startswith("block")}  # block<stage>.<index>
    assert len(names) == blocks


def test_build_student_default_is_slidr_res16unet34c() -> None:
    model = build_student(StudentConfig())
    assert isinstance(model, MinkUNet34)
    assert model.conv0p1s1.weight.shape == (27, 1, 32)
    assert model.block4[0].conv1.weight.shape == (27, 128, 256)
    assert model.convtr7p2s2.weight.shape == (8, 96, 96)
    assert model.final.weight.shape == (1, 96, 64)


def test_build_student_width_multiplier_scales_every_stage() -> None:
    model = build_student(StudentConfig(variant="14", width_multiplier=0.5, out_dim=16))
    assert isinstance(model, MinkUNet14)
    assert model.conv0p1s1.weight.shape == (27, 1, 16)
    assert model.block4[0].conv1.weight.shape == (27, 64, 128)
    assert model.final.weight.shape == (1, 48, 16)


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "student").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_student_config_files_load(path: Path) -> None:
    config = load_config(StudentConfig, path)
    assert build_student(config).config == config


def test_minkunet_backend_parity(other_backend: str, make_config: ConfigFactory,
                                 make_scan: ScanFactory) -> None:
    config = make_config(width_multiplier=0.25)
    native = build_student(config)
    other = build_student(make_config(width_multiplier=0.25, backend=other_backend))
    other.load_state_dict(native.state_dict())
    scans = [make_scan(400, seed=3), make_scan(250, seed=4)]
    for training in (True, False):  # batch statistics, then running statistics
        native.train(training)
        other.train(training)
        out_native = native(voxelize_batch(scans, config))
        out_other = other(voxelize_batch(scans, config))
        torch.testing.assert_close(out_other, out_native, atol=1e-4, rtol=1e-4)
    loss_native = out_native[:, 0].sum()
    loss_other = out_other[:, 0].sum()
    grads = torch.autograd.grad(loss_native, list(native.parameters()))
    other_grads = torch.autograd.grad(loss_other, list(other.parameters()))
    for grad, other_grad in zip(grads, other_grads, strict=True):
        torch.testing.assert_close(other_grad, grad, atol=1e-4, rtol=1e-3)


BAD_SCANS = [
    (torch.tensor([[0.0, float("nan"), 1.0, 0.5]]), r"scans\[0\]: 1 point\(s\) hold NaN"),
    (torch.tensor([[0.0, float("inf"), 1.0, 0.5]]), r"scans\[0\]: 1 point\(s\) hold NaN or inf"),
    (torch.tensor([[float("inf"), 0.0, 1.0, 0.5], [float("-inf"), 0.0, 1.0, 0.5]]),
     r"scans\[0\]: 2 point\(s\) hold NaN or inf"),
    (torch.zeros((4, 4), dtype=torch.float64), r"scans\[0\]: expected dtype torch.float32"),
    (torch.zeros((4, 3)), r"scans\[0\]: expected shape \(N, 4\)"),
    (torch.zeros(4), r"scans\[0\]: expected shape \(N, 4\)"),
    ([[0.0, 0.0, 0.0, 1.0]], r"scans\[0\]: expected a torch.Tensor"),
]


@pytest.mark.parametrize(("scan", "message"), BAD_SCANS,
                         ids=["nan", "inf", "inf-minus-inf", "float64", "three-columns",
                              "flat", "list"])
def test_voxelize_batch_rejects_bad_scans(make_config: ConfigFactory, scan: object,
                                          message: str) -> None:
    with pytest.raises(ModelError, match=message):
        voxelize_batch([scan], make_config())  # type: ignore[list-item]


def test_voxelize_batch_takes_finite_values_whose_sum_overflows(
        make_config: ConfigFactory) -> None:
    # The finiteness check sums a scan first; a sum that overflows float32 must not be
    # mistaken for a non-finite value.
    scan = torch.tensor([[3e38, 3e38, 0.0, 1.0], [3e38, 3e38, 0.0, 1.0]])
    assert not torch.isfinite(scan.sum())
    batch = voxelize_batch([scan], make_config(voxel_size_m=1e37))
    assert batch.num_voxels == 1


def test_voxelize_batch_rejects_a_bare_tensor(make_config: ConfigFactory) -> None:
    with pytest.raises(ModelError, match="wrap a single scan in a list"):
        voxelize_batch(torch.zeros((3, 4)), make_config())


def test_minkunet_rejects_batch_of_another_config(make_config: ConfigFactory,
                                                  make_scan: ScanFactory) -> None:
    model = build_student(make_config())
    batch = voxelize_batch([make_scan(50)], make_config(input_features="xyzi"))
    with pytest.raises(ModelError, match=r"expected \(V, 1\) for input_features='intensity'"):
        model(batch)
    with pytest.raises(ModelError, match="expects a VoxelBatch"):
        model(torch.zeros((5, 4)))  # type: ignore[arg-type]


def test_voxelize_batch_features_and_offsets(make_config: ConfigFactory) -> None:
    config = make_config(input_features="xyzi")
    scan = torch.tensor([[0.1, 0.1, 0.1, 1.0], [0.3, 0.2, 0.1, 3.0], [5.0, 5.0, 5.0, 7.0]])
    batch = voxelize_batch([scan, scan[:1]], config)
    torch.testing.assert_close(batch.point_offsets, torch.tensor([0, 3, 4]))
    torch.testing.assert_close(batch.voxel_offsets, torch.tensor([0, 2, 3]))
    torch.testing.assert_close(batch.coords, torch.tensor([[0, 0, 0, 0], [0, 10, 10, 10],
                                                           [1, 0, 0, 0]]))
    torch.testing.assert_close(batch.features[0], torch.tensor([0.2, 0.15, 0.1, 2.0]))
    torch.testing.assert_close(batch.point_to_voxel, torch.tensor([0, 0, 1, 2]))
