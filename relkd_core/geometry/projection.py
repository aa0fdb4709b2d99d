"""Pinhole projection between camera optical frames and pixels.

Conventions (as ROS ``CameraInfo``): the optical frame has z forward, x right, y down
(REP 103 ``*_optical`` frames); pixel ``(u, v)`` = (column, row) and the centre of the
top-left pixel is ``(0, 0)``, so a point at ``u = 10.3`` falls in column ``round(10.3) = 10``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Rotation taking optical-frame vectors (z fwd, x right, y down) into a REP 103 body frame
# (x fwd, y left, z up): T_body_optical[:3, :3].
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def intrinsics_matrix(fx_px: float, fy_px: float, cx_px: float, cy_px: float
                      ) -> NDArray[np.float64]:
    """3×3 camera matrix ``K``."""
    return np.array([[fx_px, 0.0, cx_px], [0.0, fy_px, cy_px], [0.0, 0.0, 1.0]])


def pixel_rays(K: ArrayLike, width: int, height: int) -> NDArray[np.float64]:
    """Unit ray directions (optical frame) through every pixel centre, shape (H, W, 3)."""
    K_inv = np.linalg.inv(np.asarray(K, dtype=np.float64).reshape(3, 3))
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    uv1 = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays = uv1 @ K_inv.T
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def project_points(
    xyz_cam: ArrayLike,
    K: ArrayLike,
    width: int,
    height: int,
    min_depth_m: float = 0.1,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Project N×3 optical-frame points (metres) to pixels.

    Returns ``uv_px`` (N×2 float64, NaN where depth <= ``min_depth_m``) and ``visible``
    (N bool): depth above ``min_depth_m`` and the nearest pixel centre inside the image.
    """
    xyz = np.asarray(xyz_cam, dtype=np.float64).reshape(-1, 3)
    K3 = np.asarray(K, dtype=np.float64).reshape(3, 3)
    depth = xyz[:, 2]
    in_front = depth > min_depth_m
    uv = np.full((len(xyz), 2), np.nan)
    z = depth[in_front]
    uv[in_front, 0] = K3[0, 0] * xyz[in_front, 0] / z + K3[0, 1] * xyz[in_front, 1] / z + K3[0, 2]
    uv[in_front, 1] = K3[1, 1] * xyz[in_front, 1] / z + K3[1, 2]
    with np.errstate(invalid='ignore'):
        visible = (
            in_front
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] < width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < height - 0.5)
        )
    return uv, visible


def pixel_indices(uv_px: NDArray[np.float64]) -> NDArray[np.int64]:
    """Nearest integer pixel ``(column, row)`` of each projected point (N×2 int64)."""
    return np.rint(uv_px).astype(np.int64)


def unoccluded_mask(uv_px: NDArray[np.float64], depth_m: NDArray[np.float64], width: int,
                    height: int, cell_px: int = 3, relative_margin: float = 0.2,
                    absolute_margin_m: float = 0.3) -> NDArray[np.bool_]:
    """Which projected points are not hidden behind other points of the same cloud.

    A lidar and a camera see the scene from different places, so some points the lidar hits
    lie behind a nearer object in the image and would be paired with that object's pixels.
    A sparse depth buffer of the cloud itself catches most of them: the image is cut into
    ``cell_px`` cells, each keeps its nearest depth, and a point is occluded when it lies
    beyond the nearest depth of its cell and the cells left and right of it by more than
    ``relative_margin × depth + absolute_margin_m``.

    ``uv_px`` (N×2) and ``depth_m`` (N) are for points already known to be in the image.
    """
    if len(depth_m) == 0:
        return np.zeros(0, dtype=bool)
    cols = -(-width // cell_px)
    rows = -(-height // cell_px)
    cu = np.clip((np.rint(uv_px[:, 0]) // cell_px).astype(np.int64), 0, cols - 1)
    cv = np.clip((np.rint(uv_px[:, 1]) // cell_px).astype(np.int64), 0, rows - 1)
    nearest = np.full((rows + 2, cols + 2), np.inf)
    np.minimum.at(nearest, (cv + 1, cu + 1), depth_m)
    # Minimum over the cell and its left/right neighbours: lidar points are dense along a
    # ring (horizontally) and sparse across rings, and a vertical neighbourhood would compare
    # ground points with the nearer ground of the ring below.
    neighbourhood = np.minimum(np.minimum(nearest[1:-1, :-2], nearest[1:-1, 1:-1]),
                               nearest[1:-1, 2:])
    front = neighbourhood[cv, cu]
    return depth_m <= front * (1.0 + relative_margin) + absolute_margin_m
