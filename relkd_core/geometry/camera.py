"""Camera models as described by a ROS ``sensor_msgs/CameraInfo``: raw images with lens
distortion (``k`` + ``d``) or rectified images (``r`` + ``p``).

Conventions as in :mod:`relkd_core.geometry.projection`: points are in the camera's optical
frame (z forward, x right, y down), pixel ``(u, v)`` = (column, row), pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from relkd_core.errors import CalibrationError
from relkd_core.geometry.projection import unoccluded_mask
from relkd_core.geometry.se3 import transform_points

__all__ = ['DISTORTION_MODELS', 'CameraModel', 'distort_normalized', 'point_pixel_pairs']

IntrinsicsSource = Literal['raw', 'rectified']
# ROS names (sensor_msgs/distortion_models.h) and how many coefficients each reads.
DISTORTION_MODELS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}


def distort_normalized(xy: NDArray[np.float64], model: str, D: NDArray[np.float64]
                       ) -> NDArray[np.float64]:
    """Apply lens distortion to N×2 normalised image coordinates ``(X/Z, Y/Z)``.

    ``plumb_bob`` and ``rational_polynomial`` are the OpenCV/ROS Brown–Conrady models with
    coefficients ``k1 k2 p1 p2 k3 [k4 k5 k6]``; ``equidistant`` is the fisheye model with
    ``k1 k2 k3 k4``. Missing trailing coefficients count as zero.
    """
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    if model == 'equidistant':
        k = np.zeros(4)
        k[:min(4, len(D))] = D[:4]
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return xy * scale[:, None]
    k = np.zeros(8)
    k[:min(8, len(D))] = D[:8]
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=1)


def _monotonic_radius(model: str, D: NDArray[np.float64]) -> float:
    """Largest normalised radius up to which the radial distortion keeps growing.

    Beyond it a polynomial lens model folds back and maps points far outside the field of
    view into the image, so such points are never projected.
    """
    r = np.linspace(0.0, 4.0, 4001)
    rd = np.linalg.norm(distort_normalized(np.stack([r, np.zeros_like(r)], 1), model, D), axis=1)
    falling = np.nonzero(np.diff(rd) <= 0)[0]
    return float(r[falling[0]]) if len(falling) else float(r[-1])


@dataclass(frozen=True)
class CameraModel:
    """A pinhole camera with optional distortion, for one image stream.

    ``K`` (3×3), ``D`` (n), ``R`` (3×3 rectification) and ``P`` (3×4) follow CameraInfo.
    ``source='raw'`` projects with ``K`` and ``D`` (the image is distorted);
    ``source='rectified'`` projects with ``P`` after rotating by ``R`` (the image is rectified).
    """

    width_px: int
    height_px: int
    K: NDArray[np.float64]
    D: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = 'plumb_bob'
    R: NDArray[np.float64] = field(default_factory=lambda: np.eye(3))
    P: NDArray[np.float64] | None = None
    source: IntrinsicsSource = 'raw'

    def __post_init__(self) -> None:
        if self.width_px <= 0 or self.height_px <= 0:
            raise CalibrationError(
                f'camera image size must be positive, got {self.width_px}x{self.height_px}')
        matrix = self.P[:, :3] if self.source == 'rectified' and self.P is not None else self.K
        if self.source == 'rectified' and self.P is None:
            raise CalibrationError('rectified projection needs a 3x4 P matrix')
        if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-9:
            name = 'P' if self.source == 'rectified' else 'K'
            raise CalibrationError(f'camera matrix {name} is singular or not finite: '
                                   f'{np.round(matrix, 3).tolist()}')
        if self.source == 'raw' and np.any(self.D != 0) and \
                self.distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(
                f'unsupported distortion model {self.distortion_model!r}; expected one of '
                f'{sorted(DISTORTION_MODELS)} (or all-zero d)')

    @classmethod
    def from_camera_info(cls, info: Any, source: IntrinsicsSource = 'raw') -> CameraModel:
        """Build from a ``sensor_msgs/CameraInfo`` (rosbags or rclpy message; ROS 1 messages
        spell the matrices ``K``, ``D``, ``R``, ``P``)."""

        def matrix(name: str) -> NDArray[np.float64]:
            value = getattr(info, name, None)
            return np.asarray(getattr(info, name.upper()) if value is None else value,
                              dtype=np.float64)

        K = matrix('k').reshape(3, 3)
        P = matrix('p').reshape(3, 4)
        R = matrix('r').reshape(3, 3)
        if not np.any(R):
            R = np.eye(3)  # an unset r means "no rectification"
        return cls(width_px=int(info.width), height_px=int(info.height), K=K,
                   D=matrix('d').reshape(-1),
                   distortion_model=str(info.distortion_model or 'plumb_bob'), R=R,
                   P=P if np.any(P) else None, source=source)

    @property
    def has_distortion(self) -> bool:
        return self.source == 'raw' and bool(np.any(self.D != 0))

    def project(self, xyz_cam: ArrayLike, min_depth_m: float = 0.1
                ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Project N×3 optical-frame points (metres) to pixels.

        Returns ``uv_px`` (N×2 float64, NaN where not projectable) and ``visible`` (N bool):
        depth above ``min_depth_m``, inside the lens model's valid radius, and the nearest pixel
        centre inside the image.
        """
        xyz = np.asarray(xyz_cam, dtype=np.float64).reshape(-1, 3)
        uv = np.full((len(xyz), 2), np.nan)
        if self.source == 'rectified':
            assert self.P is not None  # checked in __post_init__
            xyz = xyz @ self.R.T
        ok = xyz[:, 2] > min_depth_m
        pts = xyz[ok]
        if self.source == 'rectified':
            assert self.P is not None
            hom = pts @ self.P[:, :3].T + self.P[:, 3]
            uv[ok] = hom[:, :2] / hom[:, 2:3]
        else:
            xy = pts[:, :2] / pts[:, 2:3]
            if self.has_distortion:
                limit = _monotonic_radius(self.distortion_model, self.D)
                inside = np.einsum('ij,ij->i', xy, xy) < limit * limit
                idx = np.nonzero(ok)[0]
                ok[idx[~inside]] = False
                xy = distort_normalized(xy[inside], self.distortion_model, self.D)
            hom = np.column_stack([xy, np.ones(len(xy))]) @ self.K.T
            uv[ok] = hom[:, :2]
        with np.errstate(invalid='ignore'):
            visible = (ok & (uv[:, 0] >= -0.5) & (uv[:, 0] < self.width_px - 0.5)
                       & (uv[:, 1] >= -0.5) & (uv[:, 1] < self.height_px - 0.5))
        return uv, visible


def point_pixel_pairs(xyz_lidar: NDArray[np.floating], T_cam_lidar: NDArray[np.float64],
                      model: CameraModel, *, min_depth_m: float = 1.0,
                      occlusion_filter: bool = True
                      ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The points of a scan seen by one camera, with their pixels.

    ``xyz_lidar`` is N×3 (metres, lidar frame); returns ``point_index`` (M int64, ascending
    indices into the scan) and ``uv_px`` (M×2 float32). A point pairs when its depth exceeds
    ``min_depth_m``, it lands inside the image, and (with ``occlusion_filter``) no nearer
    point of the same scan hides it from the camera.
    """
    xyz_cam = transform_points(T_cam_lidar, np.asarray(xyz_lidar, dtype=np.float64))
    uv, visible = model.project(xyz_cam, min_depth_m=min_depth_m)
    index = np.flatnonzero(visible)
    if occlusion_filter and len(index):
        front = unoccluded_mask(uv[index], xyz_cam[index, 2], model.width_px, model.height_px)
        index = index[front]
    return index.astype(np.int64), uv[index].astype(np.float32)
