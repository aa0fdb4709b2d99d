"""Few-shot protocols: deterministic k% scan selection, the linear probe, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relkd_core.errors import ConfigError, DataError
from relkd_core.eval.fewshot import (
    FewShotConfig,
    class_weights,
    distinct_rows,
    finetune,
    labelled_points,
    select_scans,
    train_linear_probe,
)
from relkd_core.models import StudentConfig
from relkd_core.models.distilled import DistilledStudent


def test_select_scans_is_deterministic_and_sized_by_fraction() -> None:
    one = select_scans(1000, 0.01, seed=3)
    assert len(one) == 10 and np.array_equal(one, select_scans(1000, 0.01, seed=3))
    assert not np.array_equal(one, select_scans(1000, 0.01, seed=4))
    assert len(select_scans(1000, 0.05, seed=3)) == 50
    assert np.all(np.diff(one) > 0) and one.max() < 1000


def test_select_scans_keeps_at_least_one_scan() -> None:
    assert len(select_scans(20, 0.01, seed=0)) == 1
    assert np.array_equal(select_scans(3, 1.0, seed=0), [0, 1, 2])


@pytest.mark.parametrize(('args', 'error', 'message'), [
    ((10, 0.0, 0), ConfigError, r'label fraction must be in \(0, 1\]'),
    ((10, 1.5, 0), ConfigError, 'label fraction'),
    ((0, 0.1, 0), DataError, 'no scans'),
])
def test_select_scans_bad_input(args: tuple[int, float, int], error: type[Exception],
                                message: str) -> None:
    with pytest.raises(error, match=message):
        select_scans(*args)


def test_labelled_points_drops_ignore_and_shifts_labels() -> None:
    feats, targets = labelled_points([torch.arange(6.0).reshape(3, 2)],
                                     [np.array([0, 4, 16], dtype=np.uint16)])
    assert torch.equal(targets, torch.tensor([3, 15]))
    assert torch.equal(feats, torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    with pytest.raises(DataError, match='no labelled point'):
        labelled_points([torch.zeros(2, 2)], [np.zeros(2, dtype=np.uint16)])


def test_class_weights_inverse_sqrt_frequency_mean_one() -> None:
    weights = class_weights(torch.tensor([0, 0, 0, 0, 2]), num_classes=3)
    assert weights[1] == 0
    assert weights[2] / weights[0] == pytest.approx(2.0)
    assert float(weights[[0, 2]].mean()) == pytest.approx(1.0)


def test_linear_probe_separates_separable_classes_on_raw_features() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0, 100.0], [-5.0, 0.0, 100.0], [0.0, 5.0, 100.0]])
    targets = rng.integers(0, 3, size=600)
    feats = torch.tensor(centres[targets] + rng.normal(scale=0.5, size=(600, 3)),
                         dtype=torch.float32)
    probe = train_linear_probe(feats, torch.from_numpy(targets), FewShotConfig(), num_classes=3)
    accuracy = (probe(feats).argmax(dim=1).numpy() == targets).mean()
    assert accuracy > 0.97


def _probe_point_by_point(features: torch.Tensor, targets: torch.Tensor,
                          config: FewShotConfig, num_classes: int) -> torch.nn.Linear:
    """The probe written over every row, duplicates included (what merging must equal)."""
    generator = torch.Generator().manual_seed(config.seed)
    probe = torch.nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        probe.weight.uniform_(-features.shape[1] ** -0.5, features.shape[1] ** -0.5,
                              generator=generator)
        probe.bias.zero_()
    mean, std = features.mean(dim=0), features.std(dim=0)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.probe_lr, weight_decay=1e-4)
    for _ in range(config.probe_epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe((features - mean) / std), targets,
                                          weight=class_weights(targets, num_classes)).backward()
        optimizer.step()
    with torch.no_grad():
        probe.weight.div_(std)
        probe.bias.sub_(probe.weight @ mean)
    return probe


def test_linear_probe_on_repeated_rows_equals_the_probe_on_every_row() -> None:
    # Points of one voxel share its features: 40 distinct rows repeated 1-9 times, and one
    # row given two classes (a voxel on a class border).
    rng = np.random.default_rng(1)
    distinct = torch.tensor(rng.normal(size=(40, 5)), dtype=torch.float32)
    classes = torch.tensor(rng.integers(0, 4, size=40))
    repeats = torch.tensor(rng.integers(1, 10, size=40))
    features = torch.cat([distinct.repeat_interleave(repeats, dim=0), distinct[:1]])
    targets = torch.cat([classes.repeat_interleave(repeats), (classes[:1] + 1) % 4])
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    features, targets = features[order], targets[order]
    rows, row_targets, counts = distinct_rows(features, targets)
    assert len(rows) == 41 and float(counts.sum()) == len(targets)
    assert sorted(counts.tolist()) == sorted([*repeats.tolist(), 1])
    config = FewShotConfig(probe_epochs=50)
    merged = train_linear_probe(features, targets, config, num_classes=4)
    reference = _probe_point_by_point(features, targets, config, num_classes=4)
    torch.testing.assert_close(merged.weight, reference.weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged.bias, reference.bias, atol=1e-4, rtol=1e-4)
    # The merge matters: weighting each distinct row once gives another probe.
    unweighted = _probe_point_by_point(rows, row_targets, config, num_classes=4)
    assert not torch.allclose(merged.weight, unweighted.weight, atol=1e-2)


@pytest.mark.slow
def test_finetune_fits_the_labelled_scan() -> None:
    torch.manual_seed(0)
    config = StudentConfig(variant='14', width_multiplier=0.125, out_dim=8, voxel_size_m=0.5,
                           voxelization='cartesian')
    student = DistilledStudent(config, teacher_dim=4)
    rng = np.random.default_rng(0)
    scan = np.zeros((400, 4), dtype=np.float32)
    scan[:, :3] = rng.uniform(-10, 10, size=(400, 3))
    scan[:, 3] = rng.uniform(0, 1, size=400)
    labels = np.where(scan[:, 3] > 0.5, 4, 11).astype(np.uint16)  # bright: car, dark: road
    losses: list[float] = []
    predict = finetune(student, [scan], [labels], FewShotConfig(finetune_steps=60,
                                                                finetune_lr=0.01),
                       on_step=lambda _, loss: losses.append(loss))
    assert len(losses) == 60 and losses[-1] < 0.5 * losses[0]
    assert (predict(scan) == labels).mean() > 0.9
