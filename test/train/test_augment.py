"""Augmentations move or drop points and keep every surviving pair on its point."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.config import load_config
from relkd_core.errors import ConfigError
from relkd_core.train.augment import augment_scan
from relkd_core.train.config import AugmentConfig


def _scan(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    points = rng.uniform(-20, 20, (n, 4)).astype(np.float32)
    points[:, 3] = rng.uniform(0, 1, n)
    return points, rng.choice(n, 80, replace=False).astype(np.int64)


def test_augment_scan_rotation_and_flips_keep_ranges_and_heights() -> None:
    points, pairs = _scan()
    config = AugmentConfig(scale_range=(1.0, 1.0))
    out, out_pairs, kept = augment_scan(points, pairs, config, np.random.default_rng(3))
    assert np.allclose(np.linalg.norm(out[:, :2], axis=1), np.linalg.norm(points[:, :2], axis=1),
                       atol=1e-4)
    assert np.array_equal(out[:, 2:], points[:, 2:])
    assert kept.all() and np.array_equal(out_pairs, pairs)
    assert not np.allclose(out[:, :2], points[:, :2])


def test_augment_scan_scales_within_range() -> None:
    points, pairs = _scan()
    config = AugmentConfig(rotate_z_deg=0.0, flip_x=False, flip_y=False, scale_range=(1.5, 2.0))
    out, _, _ = augment_scan(points, pairs, config, np.random.default_rng(1))
    ratio = np.linalg.norm(out[:, :3], axis=1) / np.linalg.norm(points[:, :3], axis=1)
    assert np.allclose(ratio, ratio[0], rtol=1e-5)
    assert 1.5 <= ratio[0] <= 2.0


def test_augment_scan_dropout_keeps_pairs_on_their_points() -> None:
    points, pairs = _scan(500)
    config = AugmentConfig(rotate_z_deg=0.0, flip_x=False, flip_y=False,
                           scale_range=(1.0, 1.0), point_dropout=0.5)
    out, out_pairs, kept = augment_scan(points, pairs, config, np.random.default_rng(2))
    assert 150 < len(out) < 350  # about half the points survive
    assert 0 < kept.sum() < len(pairs)
    assert np.array_equal(out[out_pairs], points[pairs[kept]])


def test_augment_scan_same_generator_same_result() -> None:
    points, pairs = _scan()
    config = AugmentConfig(point_dropout=0.2)
    a = augment_scan(points, pairs, config, np.random.default_rng(5))
    b = augment_scan(points, pairs, config, np.random.default_rng(5))
    c = augment_scan(points, pairs, config, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][:10], c[0][:10])


def test_augment_scan_empty_scan() -> None:
    out, out_pairs, kept = augment_scan(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                        AugmentConfig(point_dropout=0.5),
                                        np.random.default_rng(0))
    assert out.shape == (0, 4) and out_pairs.shape == (0,) and kept.shape == (0,)


def test_augment_config_rejects_reversed_scale_range() -> None:
    with pytest.raises(ConfigError, match='scale_range'):
        load_config(AugmentConfig, None, ['scale_range=[1.2, 0.8]'])
