"""Scene content: every class present, realistic imbalance, variety across seeds."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS
from relkd_core.sim.scene import SceneConfig, generate_scene
from relkd_core.taxonomy import LABEL_OF, NUM_CLASSES


@pytest.fixture(scope='module')
def histogram() -> np.ndarray:
    """Lidar points per label over a 20-frame scene set (4 streets × 5 frames)."""
    counts = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for seed in range(4):
        drive = SyntheticDrive(RIGS['nuscenes'], 5, seed=seed, cameras=False)
        for frame in drive.frames():
            counts += np.bincount(frame.points['label'], minlength=NUM_CLASSES + 1)
    return counts


def test_scene_every_class_in_lidar(histogram: np.ndarray) -> None:
    missing = [name for name, label in LABEL_OF.items() if histogram[label] == 0]
    assert missing == []


def test_scene_class_imbalance_like_driving_data(histogram: np.ndarray) -> None:
    share = histogram / histogram.sum()
    dominant = share[[LABEL_OF[c] for c in ('driveable_surface', 'manmade', 'vegetation')]]
    rare = share[[LABEL_OF[c] for c in ('pedestrian', 'bicycle', 'traffic_cone')]]
    assert dominant.sum() > 0.5
    assert rare.max() < 0.02
    assert share[LABEL_OF['driveable_surface']] > 50 * share[LABEL_OF['bicycle']]


def test_scene_differs_by_seed_and_repeats_by_seed() -> None:
    config = SceneConfig()
    a = generate_scene(config, np.random.default_rng(1), 30.0, 8.0)
    b = generate_scene(config, np.random.default_rng(1), 30.0, 8.0)
    c = generate_scene(config, np.random.default_rng(2), 30.0, 8.0)
    np.testing.assert_array_equal(a.primitives.center, b.primitives.center)
    assert len(a.primitives) != len(c.primitives) or not np.array_equal(
        a.primitives.center, c.primitives.center)


def test_scene_moving_objects_advance_with_time() -> None:
    scene = generate_scene(SceneConfig(), np.random.default_rng(0), 30.0, 8.0)
    moving = np.linalg.norm(scene.velocity_mps, axis=1) > 0
    assert moving.any() and not moving.all()
    later = scene.primitives_at(2.0)
    np.testing.assert_allclose(later.center[moving] - scene.primitives.center[moving],
                               2.0 * scene.velocity_mps[moving])
    np.testing.assert_array_equal(later.center[~moving], scene.primitives.center[~moving])


def test_scene_ego_follows_its_lane() -> None:
    scene = generate_scene(SceneConfig(), np.random.default_rng(0), 30.0, 8.0)
    x0, _, _ = scene.ego_pose(0.0)
    x1, y1, _ = scene.ego_pose(2.5)
    assert x1 - x0 == pytest.approx(20.0)
    assert abs(y1 - scene.ego_lane_y_m) < 0.3
