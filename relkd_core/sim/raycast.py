"""Ray casting against yaw-oriented boxes, vertical cylinders and ellipsoids, plus the ground.

A frame's geometry is a :class:`PrimitiveSet` (structure of arrays). A sensor casts a grid of
rays that share one origin; to stay fast in NumPy every primitive is tested only against the
rays of its *window* (the block of the ray grid its bounding box can cover), which the sensor
computes from the box corners. The cost is then close to the covered pixels, as in a
rasteriser, instead of rays × primitives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BOX: int = 0
CYLINDER: int = 1  # vertical axis, radius = half_size[0]; half_size[1] is ignored
ELLIPSOID: int = 2

GROUND_INDEX: int = -2
MISS_INDEX: int = -1

_EPS = 1e-6

#: Maps a primitive's 8 bounding corners in the sensor frame (8×3) to the flat indices of the
#: rays that may hit it, or None when none can.
WindowFn = Callable[[NDArray[np.float64]], 'NDArray[np.int64] | None']


@dataclass(frozen=True)
class PrimitiveSet:
    """P primitives of a frame, in world coordinates (metres, radians).

    ``kind`` (P int8: BOX, CYLINDER, ELLIPSOID), ``center`` (P×3), ``half_size`` (P×3 half
    extents in the primitive's own axes), ``yaw`` (P, about +z), ``label`` (P uint16),
    ``instance`` (P uint32, 0 for stuff), ``color`` (P×3 float RGB in 0..1), ``reflectivity``
    (P float 0..1), ``texture`` (P int8, see ``sim.shading``).
    """

    kind: NDArray[np.int8]
    center: NDArray[np.float64]
    half_size: NDArray[np.float64]
    yaw: NDArray[np.float64]
    label: NDArray[np.uint16]
    instance: NDArray[np.uint32]
    color: NDArray[np.float64]
    reflectivity: NDArray[np.float64]
    texture: NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.kind)

    def corners(self) -> NDArray[np.float64]:
        """World coordinates of each primitive's oriented bounding-box corners, P×8×3."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        half = self.half_size.copy()
        is_cylinder = self.kind == CYLINDER
        half[is_cylinder, 1] = half[is_cylinder, 0]
        local = signs[None, :, :] * half[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]


@dataclass
class HitBuffer:
    """Nearest hit per ray: distance ``t_m`` (inf = miss), primitive index (``MISS_INDEX``,
    ``GROUND_INDEX`` or 0..P-1) and the unit surface normal (world frame)."""

    t_m: NDArray[np.float64]
    index: NDArray[np.int64]
    normal: NDArray[np.float64]

    @classmethod
    def empty(cls, num_rays: int) -> HitBuffer:
        return cls(
            t_m=np.full(num_rays, np.inf),
            index=np.full(num_rays, MISS_INDEX, dtype=np.int64),
            normal=np.zeros((num_rays, 3)),
        )


def _intersect_box(o: NDArray[np.float64], d: NDArray[np.float64], half: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Slab test in the box frame; rays starting inside the box do not hit it."""
    # Replace zero components by a tiny value so the slabs stay finite (no NaN handling in the
    # hot loop); such a ray is parallel to the slab and the huge |t| keeps the test right.
    d_safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / d_safe
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
    t_far = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
    hit = (t_far >= t_near) & (t_near > _EPS)
    t = np.where(hit, t_near, np.inf)
    axis = np.where(near[:, 0] == t_near, 0, np.where(near[:, 1] == t_near, 1, 2))
    normal = np.zeros_like(d)
    rows = np.arange(len(d))
    normal[rows, axis] = -np.sign(d_safe[rows, axis])
    return t, normal


def _intersect_cylinder(o: NDArray[np.float64], d: NDArray[np.float64],
                        radius: float, half_height: float
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vertical cylinder (side and top cap) centred at the origin of its frame."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - radius**2
    disc = b * b - 4 * a * c
    a_safe = np.maximum(a, 1e-12)
    dz_safe = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a_safe)
    z_side = o[2] + t_side * d[:, 2]
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(z_side) <= half_height)
    t_cap = (half_height - o[2]) / dz_safe
    px = o[0] + t_cap * d[:, 0]
    py = o[1] + t_cap * d[:, 1]
    cap_ok = (t_cap > _EPS) & (px * px + py * py <= radius**2) & (o[2] > half_height)
    t = np.full(len(d), np.inf)
    t[side_ok] = t_side[side_ok]
    use_cap = cap_ok & (t_cap < t)
    t[use_cap] = t_cap[use_cap]
    normal = np.zeros_like(d)
    t_finite = np.where(np.isfinite(t), t, 0.0)
    hx = o[0] + t_finite * d[:, 0]
    hy = o[1] + t_finite * d[:, 1]
    side = np.isfinite(t) & ~use_cap
    normal[side, 0] = hx[side] / radius
    normal[side, 1] = hy[side] / radius
    normal[use_cap, 2] = 1.0
    return t, normal


def _intersect_ellipsoid(o: NDArray[np.float64], d: NDArray[np.float64], half: NDArray[np.float64]
                         ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Axis-aligned ellipsoid (in its frame) by scaling to the unit sphere."""
    os_ = o / half
    ds = d / half
    a = np.einsum('ij,ij->i', ds, ds)
    b = 2.0 * ds @ os_
    c = float(os_ @ os_) - 1.0
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    ok = (disc >= 0) & (t > _EPS) & (c > 0)
    t = np.where(ok, t, np.inf)
    p = o[None, :] + np.where(ok, t, 0.0)[:, None] * d
    normal = p / half**2
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return t, normal


def intersect(primitives: PrimitiveSet, i: int, origin: NDArray[np.float64],
              directions: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distance along each unit ray to primitive ``i`` (inf = miss) and the world normal."""
    yaw = float(primitives.yaw[i])
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    o_local = (origin - primitives.center[i]) @ R
    d_local = directions @ R
    kind = int(primitives.kind[i])
    half = primitives.half_size[i]
    if kind == BOX:
        t, n_local = _intersect_box(o_local, d_local, half)
    elif kind == CYLINDER:
        t, n_local = _intersect_cylinder(o_local, d_local, float(half[0]), float(half[2]))
    else:
        t, n_local = _intersect_ellipsoid(o_local, d_local, half)
    return t, n_local @ R.T


def cast_ground(origin: NDArray[np.float64], directions: NDArray[np.float64], hits: HitBuffer,
                max_range_m: float) -> None:
    """Intersect every ray with the ground plane z = 0 (world) and record closer hits."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -origin[2] / directions[:, 2]
    ok = (directions[:, 2] < -1e-9) & (t < hits.t_m) & (t <= max_range_m)
    hits.t_m[ok] = t[ok]
    hits.index[ok] = GROUND_INDEX
    hits.normal[ok] = (0.0, 0.0, 1.0)


def cast_primitives(primitives: PrimitiveSet, origin: NDArray[np.float64],
                    directions: NDArray[np.float64], hits: HitBuffer, max_range_m: float,
                    T_sensor_world: NDArray[np.float64], window: WindowFn) -> None:
    """Intersect the rays with every primitive within range, keeping the nearest hit per ray.

    ``directions`` are the flat (M×3) unit rays in world coordinates; ``window`` receives the
    corners in the sensor frame (via ``T_sensor_world``) and returns candidate ray indices.
    """
    if len(primitives) == 0:
        return
    corners = primitives.corners()
    radius = np.linalg.norm(corners - primitives.center[:, None, :], axis=2).max(axis=1)
    distance = np.linalg.norm(primitives.center - origin, axis=1)
    candidates = np.flatnonzero(distance - radius <= max_range_m)
    corners_sensor = corners[candidates] @ T_sensor_world[:3, :3].T + T_sensor_world[:3, 3]
    for k, i in enumerate(candidates):
        rays = window(corners_sensor[k])
        if rays is None or len(rays) == 0:
            continue
        t, normal = intersect(primitives, int(i), origin, directions[rays])
        closer = (t < hits.t_m[rays]) & (t <= max_range_m)
        if not closer.any():
            continue
        sel = rays[closer]
        hits.t_m[sel] = t[closer]
        hits.index[sel] = i
        hits.normal[sel] = normal[closer]
