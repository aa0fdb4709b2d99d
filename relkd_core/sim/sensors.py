"""Render one lidar scan or one camera image of a scene at a given time.

Both sensors cast rays from a single origin against the ground and the scene's primitives
(:mod:`relkd_core.sim.raycast`); they differ in their ray grid and in the window that maps a
primitive's corners to the candidate rays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from relkd_core.geometry.se3 import invert_transform, make_transform, rotation_z
from relkd_core.sim.raycast import (
    GROUND_INDEX,
    MISS_INDEX,
    HitBuffer,
    PrimitiveSet,
    cast_ground,
    cast_primitives,
)
from relkd_core.sim.rig import CameraConfig, LidarConfig
from relkd_core.sim.scene import LANE_PAINT_REFLECTIVITY, REFLECTIVITY, GroundRegions, Scene
from relkd_core.sim.shading import lane_marking_mask, shade
from relkd_core.taxonomy import IGNORE_LABEL, LABEL_OF

#: Field layout of a simulated scan (little-endian, 28 bytes per point).
POINT_DTYPE = np.dtype([
    ('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4'),
    ('ring', '<u2'), ('label', '<u2'), ('instance', '<u4'), ('_pad', '<u4'),
])

CAMERA_MAX_RANGE_M = 250.0


@dataclass(frozen=True)
class CameraImages:
    """One rendered camera frame: ``rgb`` (H×W×3 uint8), ``semantic`` (H×W uint16 labels,
    0 = sky/ignore) and ``instance`` (H×W uint32, 0 = stuff)."""

    rgb: NDArray[np.uint8]
    semantic: NDArray[np.uint16]
    instance: NDArray[np.uint32]


def T_odom_base(scene: Scene, t_s: float) -> NDArray[np.float64]:
    """Pose of ``base_link`` in ``odom`` at ``t_s`` (4×4)."""
    x, y, yaw = scene.ego_pose(t_s)
    return make_transform(rotation_z(yaw), [x, y, 0.0])


def _labels_of_hits(primitives: PrimitiveSet, ground: GroundRegions, hits: HitBuffer,
                    points_world: NDArray[np.float64]) -> tuple[NDArray[np.uint16],
                                                               NDArray[np.uint32],
                                                               NDArray[np.uint16]]:
    """Per-ray label and instance, plus the ground label of every ray (for shading)."""
    n = len(hits.index)
    labels = np.full(n, IGNORE_LABEL, dtype=np.uint16)
    instances = np.zeros(n, dtype=np.uint32)
    ground_labels = np.zeros(n, dtype=np.uint16)
    on_ground = hits.index == GROUND_INDEX
    ground_labels[on_ground] = ground.labels(points_world[on_ground, :2])
    labels[on_ground] = ground_labels[on_ground]
    on_prim = hits.index >= 0
    labels[on_prim] = primitives.label[hits.index[on_prim]]
    instances[on_prim] = primitives.instance[hits.index[on_prim]]
    return labels, instances, ground_labels


def lidar_window(config: LidarConfig) -> _LidarWindow:
    """Window function for the lidar's (beam × azimuth) ray grid."""
    return _LidarWindow(config.elevations_rad(), config.azimuth_steps)


class _LidarWindow:
    def __init__(self, elevations_rad: NDArray[np.float64], azimuth_steps: int) -> None:
        self.elevations = elevations_rad
        self.columns = azimuth_steps
        self.step = 2 * np.pi / azimuth_steps
        self.all = np.arange(len(elevations_rad) * azimuth_steps)

    def __call__(self, corners: NDArray[np.float64]) -> NDArray[np.int64] | None:
        center = corners.mean(axis=0)
        radius = float(np.linalg.norm(corners - center, axis=1).max())
        r_center = float(np.hypot(center[0], center[1]))
        if r_center <= radius + 1e-3:
            return self.all
        # Outside the bounding sphere: the footprint's azimuth extremes are at its corners;
        # elevation bounds use the nearest/farthest horizontal distance (conservative).
        az_center = np.arctan2(center[1], center[0])
        rel = np.angle(np.exp(1j * (np.arctan2(corners[:, 1], corners[:, 0]) - az_center)))
        c0 = int(np.floor((az_center + rel.min()) / self.step))
        c1 = int(np.ceil((az_center + rel.max()) / self.step))
        d_near, d_far = r_center - radius, r_center + radius
        z_top, z_bottom = float(corners[:, 2].max()), float(corners[:, 2].min())
        el_hi = np.arctan2(z_top, d_near if z_top > 0 else d_far)
        el_lo = np.arctan2(z_bottom, d_near if z_bottom < 0 else d_far)
        r0 = int(np.searchsorted(self.elevations, el_lo - 1e-9, side='left'))
        r1 = int(np.searchsorted(self.elevations, el_hi + 1e-9, side='right'))
        if r1 <= r0:
            return None
        cols = np.arange(c0, c1 + 1) % self.columns
        rows = np.arange(r0, r1)
        return (rows[:, None] * self.columns + cols[None, :]).ravel()


# The 12 edges of a box whose corners are ordered as in PrimitiveSet.corners (bit 2 = x,
# bit 1 = y, bit 0 = z): pairs of corner indices that differ in exactly one bit.
_BOX_EDGES = np.array([(i, i | bit) for bit in (1, 2, 4) for i in range(8) if not i & bit])

_NEAR_M = 0.05


class _CameraWindow:
    def __init__(self, K: NDArray[np.float64], width: int, height: int) -> None:
        self.K = K
        self.width = width
        self.height = height

    def __call__(self, corners: NDArray[np.float64]) -> NDArray[np.int64] | None:
        z = corners[:, 2]
        if (z < _NEAR_M).all():
            return None
        points = corners[z >= _NEAR_M]
        if (z < _NEAR_M).any():
            # Clip the box by the near plane: the visible part's vertices are the corners in
            # front plus the points where edges cross the plane.
            a, b = corners[_BOX_EDGES[:, 0]], corners[_BOX_EDGES[:, 1]]
            crossing = (a[:, 2] < _NEAR_M) != (b[:, 2] < _NEAR_M)
            a, b = a[crossing], b[crossing]
            f = (_NEAR_M - a[:, 2]) / (b[:, 2] - a[:, 2])
            points = np.concatenate([points, a + f[:, None] * (b - a)])
        # A convex body in front of the camera projects inside the hull of its projected
        # vertices, so their pixel bounding box is a tight, exact window.
        u = self.K[0, 0] * points[:, 0] / points[:, 2] + self.K[0, 2]
        v = self.K[1, 1] * points[:, 1] / points[:, 2] + self.K[1, 2]
        u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())), self.width - 1)
        v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())), self.height - 1)
        if u0 > u1 or v0 > v1:
            return None
        rows = np.arange(v0, v1 + 1)[:, None] * self.width
        return (rows + np.arange(u0, u1 + 1)[None, :]).ravel()


def render_lidar(scene: Scene, config: LidarConfig, t_s: float, rng: np.random.Generator,
                 ray_grid: NDArray[np.float64] | None = None) -> NDArray[np.void]:
    """One instantaneous scan at ``t_s``: a structured array of ``POINT_DTYPE`` in the lidar
    frame, ordered by azimuth column then ring, with range noise, dropouts, intensity by
    material and incidence, and a few spurious returns labelled ``ignore``."""
    grid = config.ray_grid() if ray_grid is None else ray_grid
    beams, columns = grid.shape[:2]
    T_odom_lidar = T_odom_base(scene, t_s) @ config.mount.T_base_sensor()
    origin = T_odom_lidar[:3, 3]
    dirs_lidar = grid.transpose(1, 0, 2).reshape(-1, 3)  # column-major: azimuth, then ring
    dirs_world = dirs_lidar @ T_odom_lidar[:3, :3].T
    primitives = scene.primitives_at(t_s)
    hits = HitBuffer.empty(len(dirs_world))
    cast_ground(origin, dirs_world, hits, config.max_range_m)
    # The window indexes the (beam, azimuth) grid; remap to our azimuth-major ray order.
    window = lidar_window(config)
    order = (np.arange(beams)[:, None] + np.arange(columns)[None, :] * beams).ravel()
    cast_primitives(primitives, origin, dirs_world, hits, config.max_range_m,
                    invert_transform(T_odom_lidar), lambda c: _remap(window(c), order))

    points_world = origin + np.where(np.isfinite(hits.t_m), hits.t_m, 0.0)[:, None] * dirs_world
    labels, instances, _ = _labels_of_hits(primitives, scene.ground, hits, points_world)
    reflectivity = np.zeros(len(hits.t_m))
    on_prim = hits.index >= 0
    reflectivity[on_prim] = primitives.reflectivity[hits.index[on_prim]]
    on_ground = hits.index == GROUND_INDEX
    for name in ('driveable_surface', 'other_flat', 'terrain'):
        reflectivity[on_ground & (labels == LABEL_OF[name])] = REFLECTIVITY[name]
    painted = on_ground & lane_marking_mask(scene.ground, points_world[:, :2])
    reflectivity[painted & (labels == LABEL_OF['driveable_surface'])] = LANE_PAINT_REFLECTIVITY

    t = hits.t_m
    cos_incidence = np.abs(np.einsum('ij,ij->i', hits.normal, dirs_world))
    intensity = reflectivity * (0.25 + 0.75 * cos_incidence) * (1 + rng.normal(0, 0.05, len(t)))
    keep = np.isfinite(t) & (t >= config.min_range_m)
    rel_range = np.where(keep, t / config.max_range_m, 1.0)
    p_drop = config.dropout_base + config.dropout_far * rel_range**2 + 0.3 * (intensity < 0.03)
    keep &= rng.random(len(t)) >= p_drop
    t_noisy = t + rng.normal(0.0, config.range_noise_m, len(t))

    ring = np.tile(np.arange(beams, dtype=np.uint16), columns)
    kept = np.flatnonzero(keep)
    num_noise = rng.binomial(len(kept), config.noise_point_fraction) if len(kept) else 0
    noise_rays = rng.integers(0, len(t), num_noise)
    noise_range = rng.uniform(config.min_range_m, 0.3 * config.max_range_m, num_noise)

    out = np.zeros(len(kept) + num_noise, dtype=POINT_DTYPE)
    xyz = np.concatenate([dirs_lidar[kept] * t_noisy[kept, None],
                          dirs_lidar[noise_rays] * noise_range[:, None]])
    out['x'], out['y'], out['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out['intensity'] = np.concatenate([
        np.clip(intensity[kept], 0.0, 1.0), rng.uniform(0.0, 0.05, num_noise)
    ]) * config.intensity_scale
    out['ring'] = np.concatenate([ring[kept], ring[noise_rays]])
    out['label'] = np.concatenate([labels[kept], np.full(num_noise, IGNORE_LABEL, np.uint16)])
    out['instance'] = np.concatenate([instances[kept], np.zeros(num_noise, np.uint32)])
    return out


def _remap(grid_rays: NDArray[np.int64] | None, order: NDArray[np.int64]
           ) -> NDArray[np.int64] | None:
    """Map (beam-major) grid indices to positions in the azimuth-major ray order."""
    if grid_rays is None:
        return None
    return order[grid_rays]


def render_camera(scene: Scene, camera: CameraConfig, t_s: float, rng: np.random.Generator,
                  rays_optical: NDArray[np.float64]) -> CameraImages:
    """Render RGB, semantic and instance images of ``camera`` at ``t_s``.

    ``rays_optical`` is :func:`relkd_core.geometry.projection.pixel_rays` of the camera.
    """
    T_odom_optical = T_odom_base(scene, t_s) @ camera.T_base_optical()
    origin = T_odom_optical[:3, 3]
    dirs_world = rays_optical.reshape(-1, 3) @ T_odom_optical[:3, :3].T
    primitives = scene.primitives_at(t_s)
    hits = HitBuffer.empty(len(dirs_world))
    cast_ground(origin, dirs_world, hits, CAMERA_MAX_RANGE_M)
    window = _CameraWindow(camera.K(), camera.width_px, camera.height_px)
    cast_primitives(primitives, origin, dirs_world, hits, CAMERA_MAX_RANGE_M,
                    invert_transform(T_odom_optical), window)
    points_world = origin + np.where(hits.index != MISS_INDEX, hits.t_m, 0.0)[:, None] * dirs_world
    labels, instances, ground_labels = _labels_of_hits(primitives, scene.ground, hits,
                                                       points_world)
    rgb = shade(primitives, scene.ground, ground_labels, hits, origin, dirs_world, rng)
    h, w = camera.height_px, camera.width_px
    return CameraImages(rgb=rgb.reshape(h, w, 3), semantic=labels.reshape(h, w),
                        instance=instances.reshape(h, w))
