"""Scan augmentations that keep point-pixel pairs valid.

Pairs refer to points by index and carry the teacher's feature of their pixel, which was
sampled when the dataset was prepared. Moving points (rotation, flips, scaling) therefore
leaves every pair correct; dropping points removes their pairs and renumbers the others.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from relkd_core.train.config import AugmentConfig

__all__ = ['augment_scan']


def augment_scan(points: NDArray[np.float32], pair_point: NDArray[np.int64],
                 config: AugmentConfig, rng: np.random.Generator
                 ) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.bool_]]:
    """Augment one scan and follow its pairs.

    Args:
        points: (N, 4) float32 x, y, z (m, lidar frame), intensity.
        pair_point: (M,) int64 point index of each pair.
        config: which augmentations, how strong.
        rng: the only source of randomness.

    Returns:
        ``(points, pair_point, kept)``: the (N', 4) augmented points (N' <= N), the renumbered
        point index of each kept pair, and the (M,) mask of pairs kept.
    """
    xyz = points[:, :3].astype(np.float64)
    angle = math.radians(rng.uniform(-config.rotate_z_deg, config.rotate_z_deg))
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    if config.flip_x and rng.random() < 0.5:
        rotation = rotation @ np.diag([-1.0, 1.0, 1.0])
    if config.flip_y and rng.random() < 0.5:
        rotation = rotation @ np.diag([1.0, -1.0, 1.0])
    scale = rng.uniform(*config.scale_range)
    out = points.copy()
    out[:, :3] = (xyz @ (scale * rotation).T).astype(np.float32)
    if config.point_dropout <= 0.0 or len(points) == 0:
        return out, pair_point.copy(), np.ones(len(pair_point), dtype=bool)
    keep = rng.random(len(points)) >= config.point_dropout
    new_index = np.cumsum(keep) - 1
    kept_pairs = keep[pair_point]
    return out[keep], new_index[pair_point[kept_pairs]].astype(np.int64), kept_pairs
