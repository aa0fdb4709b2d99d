"""Training samples and batches from a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from relkd_core.data.prepared import PreparedDataset
from relkd_core.errors import DataError
from relkd_core.train.batch import DistillFrames, collate
from relkd_core.train.config import AugmentConfig


def _frames(root: Path, **kwargs: object) -> DistillFrames:
    options: dict[str, object] = {'augment': AugmentConfig(point_dropout=0.1),
                                  'pairs_per_batch': 600, 'batch_size': 2, 'seed': 0,
                                  'superpixels': True}
    options.update(kwargs)
    return DistillFrames(str(root), **options)  # type: ignore[arg-type]


def test_distill_frames_split_pairs_over_the_batch(tiny_prepared: Path) -> None:
    frames = _frames(tiny_prepared)
    sample = frames[0]
    assert 250 <= len(sample.pair_point) <= 300  # 300 drawn, ~10 % dropped with their points
    assert sample.pair_features.shape == (len(sample.pair_point), 384)
    assert torch.allclose(sample.pair_features.norm(dim=1), torch.ones(len(sample.pair_point)),
                          atol=1e-3)


def test_distill_frames_deterministic_per_epoch(tiny_prepared: Path) -> None:
    frames = _frames(tiny_prepared)
    a, b = frames[1], _frames(tiny_prepared)[1]
    assert torch.equal(a.points, b.points) and torch.equal(a.pair_point, b.pair_point)
    frames.set_epoch(1)
    c = frames[1]
    assert not torch.equal(a.points[:5], c.points[:5])


def test_distill_frames_pair_labels_match_point_labels(tiny_prepared: Path) -> None:
    frames = _frames(tiny_prepared, augment=AugmentConfig(point_dropout=0.0))
    raw = PreparedDataset(tiny_prepared, pairs_per_frame=300, seed=0)[2]
    sample = frames[2]
    assert raw.labels is not None and sample.pair_label is not None
    assert np.array_equal(sample.pair_label.numpy(), raw.labels[raw.pair_point])
    # The synthetic world's pixels and points agree on the class of most pairs.
    assert raw.pair_pixel_label is not None
    agree = (raw.pair_pixel_label == raw.labels[raw.pair_point]).mean()
    assert agree > 0.9


def test_collate_offsets_pairs_and_superpixels(tiny_prepared: Path) -> None:
    frames = _frames(tiny_prepared)
    samples = [frames[0], frames[1]]
    batch = collate(samples)
    points = torch.cat(batch.scans)
    expected = torch.cat([s.points[s.pair_point] for s in samples])
    assert torch.equal(points[batch.pair_points], expected)
    assert batch.pair_segments is not None
    first = samples[0].pair_segment
    assert first is not None
    n0 = len(samples[0].pair_point)
    # Superpixels of the second scan never share an id with the first scan's.
    assert int(batch.pair_segments[n0:].min()) > int(first.max())
    assert batch.indices == [0, 1]
    assert batch.num_pairs == len(expected)


def test_distill_frames_reject_datasets_without_what_the_loss_needs(
        tiny_bags: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    from relkd_core.data.prepare import prepare_dataset
    from relkd_core.data.preset import load_preset

    bare = tmp_path / 'bare'
    prepare_dataset([tiny_bags[('nuscenes', 'mcap')]], load_preset('synth-nuscenes'), bare)
    with pytest.raises(DataError, match='without a teacher'):
        _frames(bare)


def test_distill_frames_superpixels_required_when_pooling(tiny_prepared: Path,
                                                          tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / 'nosp'
    shutil.copytree(tiny_prepared, copy)
    manifest = copy / 'manifest.json'
    manifest.write_text(manifest.read_text().replace('"superpixels": 40', '"superpixels": null'))
    with pytest.raises(DataError, match='--superpixels'):
        _frames(copy)
