"""Ray–primitive intersections against closed forms, and windowed casting against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.geometry.projection import pixel_rays
from relkd_core.geometry.se3 import invert_transform
from relkd_core.sim.raycast import (
    BOX,
    CYLINDER,
    ELLIPSOID,
    GROUND_INDEX,
    MISS_INDEX,
    HitBuffer,
    PrimitiveSet,
    cast_ground,
    cast_primitives,
    intersect,
)
from relkd_core.sim.rig import RIGS
from relkd_core.sim.scene import SceneConfig, generate_scene
from relkd_core.sim.sensors import T_odom_base, _CameraWindow, lidar_window


def _one(kind: int, center: tuple, half: tuple, yaw: float = 0.0) -> PrimitiveSet:
    return PrimitiveSet(
        kind=np.array([kind], np.int8), center=np.array([center], float),
        half_size=np.array([half], float), yaw=np.array([yaw]), label=np.array([4], np.uint16),
        instance=np.array([1], np.uint32), color=np.full((1, 3), 0.5),
        reflectivity=np.array([0.5]), texture=np.array([0], np.int8))


def _unit(v: list[list[float]]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.mark.parametrize(('kind', 'half', 'expected_t', 'expected_normal'), [
    (BOX, (1.0, 2.0, 3.0), 9.0, (-1.0, 0.0, 0.0)),
    (CYLINDER, (1.5, 1.5, 3.0), 8.5, (-1.0, 0.0, 0.0)),
    (ELLIPSOID, (2.0, 1.0, 1.0), 8.0, (-1.0, 0.0, 0.0)),
])
def test_intersect_head_on_distance_and_normal(kind: int, half: tuple, expected_t: float,
                                               expected_normal: tuple) -> None:
    prims = _one(kind, (10.0, 0.0, 0.0), half)
    t, normal = intersect(prims, 0, np.zeros(3), _unit([[1, 0, 0]]))
    assert t[0] == pytest.approx(expected_t)
    np.testing.assert_allclose(normal[0], expected_normal, atol=1e-12)


def test_intersect_box_rotated_by_yaw() -> None:
    # A 2 m × 1 m box turned 90°: along x it is now 1 m deep (half 0.5).
    prims = _one(BOX, (10.0, 0.0, 0.0), (1.0, 0.5, 1.0), yaw=np.pi / 2)
    t, _ = intersect(prims, 0, np.zeros(3), _unit([[1, 0, 0], [0, 1, 0]]))
    assert t[0] == pytest.approx(9.5)
    assert np.isinf(t[1])


def test_intersect_cylinder_top_cap_from_above() -> None:
    prims = _one(CYLINDER, (0.0, 0.0, 1.0), (0.5, 0.5, 1.0))
    t, normal = intersect(prims, 0, np.array([0.1, 0.0, 5.0]), _unit([[0, 0, -1]]))
    assert t[0] == pytest.approx(3.0)
    np.testing.assert_allclose(normal[0], (0.0, 0.0, 1.0))


def test_intersect_misses_and_inside_rays() -> None:
    prims = _one(BOX, (10.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    t, _ = intersect(prims, 0, np.zeros(3), _unit([[-1, 0, 0], [1, 1, 0], [0, 0, 1]]))
    assert np.isinf(t).all()
    t_inside, _ = intersect(prims, 0, np.array([10.0, 0.0, 0.0]), _unit([[1, 0, 0]]))
    assert np.isinf(t_inside).all()


def test_cast_ground_distance_and_range_limit() -> None:
    hits = HitBuffer.empty(3)
    dirs = _unit([[1, 0, -1], [1, 0, 1], [100, 0, -1]])
    cast_ground(np.array([0.0, 0.0, 2.0]), dirs, hits, max_range_m=50.0)
    assert hits.t_m[0] == pytest.approx(2.0 * np.sqrt(2))
    assert hits.index.tolist() == [GROUND_INDEX, MISS_INDEX, MISS_INDEX]


def _brute_force(prims: PrimitiveSet, origin: np.ndarray, dirs: np.ndarray, max_range: float,
                 T_sensor_world: np.ndarray) -> HitBuffer:
    hits = HitBuffer.empty(len(dirs))
    everything = np.arange(len(dirs))
    cast_primitives(prims, origin, dirs, hits, max_range, T_sensor_world, lambda c: everything)
    return hits


def test_cast_lidar_window_equals_brute_force() -> None:
    rig = RIGS['nuscenes']
    scene = generate_scene(SceneConfig(), np.random.default_rng(3), 20.0, 8.0)
    prims = scene.primitives_at(0.5)
    T_odom_lidar = T_odom_base(scene, 0.5) @ rig.lidar.mount.T_base_sensor()
    grid = rig.lidar.ray_grid()
    dirs = grid.reshape(-1, 3) @ T_odom_lidar[:3, :3].T
    origin = T_odom_lidar[:3, 3]
    T_lidar_odom = invert_transform(T_odom_lidar)
    windowed = HitBuffer.empty(len(dirs))
    cast_primitives(prims, origin, dirs, windowed, 70.0, T_lidar_odom, lidar_window(rig.lidar))
    brute = _brute_force(prims, origin, dirs, 70.0, T_lidar_odom)
    assert (brute.index >= 0).sum() > 5000
    np.testing.assert_array_equal(windowed.index, brute.index)
    np.testing.assert_array_equal(windowed.t_m, brute.t_m)


def test_cast_camera_window_equals_brute_force() -> None:
    camera = RIGS['nuscenes'].with_image_size(160, 90).cameras[1]
    scene = generate_scene(SceneConfig(), np.random.default_rng(4), 20.0, 8.0)
    prims = scene.primitives_at(0.0)
    T_odom_optical = T_odom_base(scene, 0.0) @ camera.T_base_optical()
    dirs = pixel_rays(camera.K(), 160, 90).reshape(-1, 3) @ T_odom_optical[:3, :3].T
    origin = T_odom_optical[:3, 3]
    T_optical_odom = invert_transform(T_odom_optical)
    windowed = HitBuffer.empty(len(dirs))
    cast_primitives(prims, origin, dirs, windowed, 250.0, T_optical_odom,
                    _CameraWindow(camera.K(), 160, 90))
    brute = _brute_force(prims, origin, dirs, 250.0, T_optical_odom)
    assert (brute.index >= 0).sum() > 1000
    np.testing.assert_array_equal(windowed.index, brute.index)
