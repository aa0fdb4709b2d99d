"""Labeled points drawn onto a camera image (the overlay the node publishes per camera)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError
from relkd_core.geometry.camera import CameraModel, point_pixel_pairs
from relkd_core.infer.palette import label_colors

__all__ = ['draw_overlay']


def draw_overlay(rgb: NDArray[np.uint8], xyz_lidar: NDArray[np.float32],
                 labels: NDArray[np.uint16], colors: NDArray[np.uint8],
                 T_cam_lidar: NDArray[np.float64], camera: CameraModel, *,
                 radius_px: int = 1, min_depth_m: float = 1.0) -> NDArray[np.uint8]:
    """A copy of ``rgb`` (H×W×3 uint8) with each visible point of the scan drawn as a
    (2 × ``radius_px`` + 1)² square in its label colour, farther points first so that near
    ones stay on top.

    ``xyz_lidar`` (N, 3) metres (non-finite points are skipped), ``labels`` (N,) entry indices,
    ``colors`` (C, 3) entry colours, ``T_cam_lidar`` maps lidar points into the camera's optical
    frame. Raises DataError when the image size differs from the camera model's.
    """
    height, width = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or (width, height) != (camera.width_px,
                                                                    camera.height_px):
        raise DataError(f'overlay: image of shape {rgb.shape} does not match the camera info '
                        f'({camera.width_px}x{camera.height_px})')
    out = rgb.copy()
    finite = np.flatnonzero(np.isfinite(xyz_lidar).all(axis=1))
    if not len(finite):
        return out
    index, uv = point_pixel_pairs(xyz_lidar[finite], T_cam_lidar, camera,
                                  min_depth_m=min_depth_m, occlusion_filter=False)
    if not len(index):
        return out
    points = finite[index]
    xyz_cam = xyz_lidar[points].astype(np.float64) @ T_cam_lidar[:3, :3].T + T_cam_lidar[:3, 3]
    order = np.argsort(-xyz_cam[:, 2], kind='stable')
    pixels = np.rint(uv[order]).astype(np.int64)
    point_rgb = label_colors(labels[points[order]], colors)
    for du in range(-radius_px, radius_px + 1):
        for dv in range(-radius_px, radius_px + 1):
            u = np.clip(pixels[:, 0] + du, 0, width - 1)
            v = np.clip(pixels[:, 1] + dv, 0, height - 1)
            out[v, u] = point_rgb
    return out
