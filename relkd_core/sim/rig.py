"""Sensor rigs of the synthetic world: a spinning lidar and pinhole cameras on a car.

Two presets mirror the public datasets: ``nuscenes`` (32-beam lidar at 20 Hz, six surround
cameras) and ``kitti`` (64-beam lidar at 10 Hz, two front cameras). A custom rig is a YAML
file with the same keys (see :func:`load_rig`). Mount poses are given in ``base_link``
(REP 103: x forward, y left, z up; origin on the ground below the rear axle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from relkd_core.config import bounded, load_config
from relkd_core.errors import ConfigError
from relkd_core.geometry.projection import R_BODY_OPTICAL, intrinsics_matrix
from relkd_core.geometry.se3 import make_transform, rotation_rpy


@dataclass(frozen=True, kw_only=True)
class MountConfig:
    """Pose of a sensor body frame in ``base_link`` (metres, degrees)."""

    x_m: float = 0.0
    y_m: float = 0.0
    z_m: float = 1.8
    roll_deg: float = 0.0
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0

    def T_base_sensor(self) -> NDArray[np.float64]:
        """Transform from the sensor body frame to ``base_link``."""
        R = rotation_rpy(*np.deg2rad([self.roll_deg, self.pitch_deg, self.yaw_deg]))
        return make_transform(R, [self.x_m, self.y_m, self.z_m])


@dataclass(frozen=True, kw_only=True)
class LidarConfig:
    """A spinning multi-beam lidar, ray cast on a (beam × azimuth) grid."""

    frame_id: str = 'LIDAR_TOP'
    topic: str = '/LIDAR_TOP'
    num_beams: int = bounded(32, min=1, max=256)
    elevation_max_deg: float = bounded(10.67, min=-90.0, max=90.0)
    elevation_min_deg: float = bounded(-30.67, min=-90.0, max=90.0)
    azimuth_steps: int = bounded(1300, min=8, max=20000)
    max_range_m: float = bounded(70.0, min=1.0)
    min_range_m: float = bounded(1.0, min=0.0)
    range_noise_m: float = bounded(0.02, min=0.0)
    dropout_base: float = bounded(0.02, min=0.0, max=1.0)
    dropout_far: float = bounded(0.15, min=0.0, max=1.0)
    intensity_scale: float = bounded(255.0, min=0.0)
    noise_point_fraction: float = bounded(0.001, min=0.0, max=0.5)
    mount: MountConfig = field(default_factory=lambda: MountConfig(x_m=0.94, z_m=1.84))

    def validate(self) -> None:
        if self.elevation_min_deg >= self.elevation_max_deg:
            raise ValueError(
                f'elevation_min_deg ({self.elevation_min_deg}) must be below '
                f'elevation_max_deg ({self.elevation_max_deg})'
            )
        if self.min_range_m >= self.max_range_m:
            raise ValueError('min_range_m must be below max_range_m')

    def elevations_rad(self) -> NDArray[np.float64]:
        """Beam elevations, ascending (ring 0 = lowest beam, as Velodyne numbers rings)."""
        return np.deg2rad(np.linspace(self.elevation_min_deg, self.elevation_max_deg,
                                      self.num_beams))

    def azimuths_rad(self) -> NDArray[np.float64]:
        """Column azimuths in [0, 2π), counter-clockwise from +x."""
        return 2.0 * np.pi * np.arange(self.azimuth_steps) / self.azimuth_steps

    def ray_grid(self) -> NDArray[np.float64]:
        """Unit ray directions in the lidar frame, shape (num_beams, azimuth_steps, 3)."""
        el = self.elevations_rad()[:, None]
        az = self.azimuths_rad()[None, :]
        return np.stack(
            [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)],
            axis=-1,
        )


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """A pinhole camera; images are rendered undistorted (``d`` = 0, ``p`` = [K|0])."""

    name: str
    width_px: int = bounded(400, min=8, max=4096)
    height_px: int = bounded(224, min=8, max=4096)
    hfov_deg: float = bounded(70.0, min=5.0, max=170.0)
    time_offset_ns: int = bounded(0, min=0, max=1_000_000_000)
    mount: MountConfig = field(default_factory=MountConfig)

    @property
    def frame_id(self) -> str:
        """Body frame (x forward); the image header uses :attr:`optical_frame_id`."""
        return self.name

    @property
    def optical_frame_id(self) -> str:
        return f'{self.name}_optical'

    def K(self) -> NDArray[np.float64]:
        """3×3 intrinsics: square pixels, principal point at the image centre."""
        f = 0.5 * self.width_px / np.tan(np.deg2rad(self.hfov_deg) / 2)
        return intrinsics_matrix(f, f, (self.width_px - 1) / 2, (self.height_px - 1) / 2)

    def T_base_optical(self) -> NDArray[np.float64]:
        """Transform from the optical frame (z fwd, x right, y down) to ``base_link``."""
        return self.mount.T_base_sensor() @ make_transform(R_BODY_OPTICAL, [0.0, 0.0, 0.0])


@dataclass(frozen=True, kw_only=True)
class RigConfig:
    """A car with one lidar and its cameras, driving at ``ego_speed_mps``."""

    name: str
    frame_rate_hz: float = bounded(20.0, min=0.1, max=100.0)
    ego_speed_mps: float = bounded(8.0, min=0.0, max=40.0)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    cameras: tuple[CameraConfig, ...] = ()

    def validate(self) -> None:
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f'camera names must be unique, got {names}')

    def with_image_size(self, width_px: int, height_px: int) -> RigConfig:
        """The same rig with every camera resized (field of view kept)."""
        cams = tuple(replace(c, width_px=width_px, height_px=height_px) for c in self.cameras)
        return replace(self, cameras=cams)


def _nuscenes_camera(name: str, x: float, y: float, yaw_deg: float, hfov_deg: float = 70.0
                     ) -> CameraConfig:
    # The lidar sweeps clockwise from the front; each camera fires as the sweep crosses it.
    sweep_ns = int(((-yaw_deg) % 360.0) / 360.0 * 50_000_000)
    return CameraConfig(name=name, hfov_deg=hfov_deg, time_offset_ns=sweep_ns,
                        mount=MountConfig(x_m=x, y_m=y, z_m=1.51, yaw_deg=yaw_deg))


NUSCENES_RIG = RigConfig(
    name='nuscenes',
    frame_rate_hz=20.0,
    ego_speed_mps=8.0,
    lidar=LidarConfig(),
    cameras=(
        _nuscenes_camera('CAM_FRONT', 1.70, 0.0, 0.0),
        _nuscenes_camera('CAM_FRONT_RIGHT', 1.55, -0.49, -55.0),
        _nuscenes_camera('CAM_BACK_RIGHT', 1.04, -0.48, -110.0),
        _nuscenes_camera('CAM_BACK', 0.03, 0.0, 180.0, hfov_deg=110.0),
        _nuscenes_camera('CAM_BACK_LEFT', 1.04, 0.48, 110.0),
        _nuscenes_camera('CAM_FRONT_LEFT', 1.52, 0.49, 55.0),
    ),
)

KITTI_RIG = RigConfig(
    name='kitti',
    frame_rate_hz=10.0,
    ego_speed_mps=9.0,
    lidar=LidarConfig(
        frame_id='velo_link',
        topic='/velodyne_points',
        num_beams=64,
        elevation_max_deg=2.0,
        elevation_min_deg=-24.8,
        azimuth_steps=2000,
        max_range_m=120.0,
        range_noise_m=0.015,
        intensity_scale=1.0,
        mount=MountConfig(x_m=0.81, z_m=1.73),
    ),
    cameras=(
        CameraConfig(name='camera_color_left', width_px=416, height_px=128, hfov_deg=81.0,
                     mount=MountConfig(x_m=1.08, y_m=0.06, z_m=1.65)),
        CameraConfig(name='camera_color_right', width_px=416, height_px=128, hfov_deg=81.0,
                     mount=MountConfig(x_m=1.08, y_m=-0.48, z_m=1.65)),
    ),
)

RIGS: dict[str, RigConfig] = {'nuscenes': NUSCENES_RIG, 'kitti': KITTI_RIG}


def load_rig(name_or_path: str | os.PathLike[str]) -> RigConfig:
    """A preset rig by name (``nuscenes``, ``kitti``) or a custom rig from a YAML file."""
    key = str(name_or_path)
    if key in RIGS:
        return RIGS[key]
    if not (key.endswith('.yaml') or key.endswith('.yml')):
        raise ConfigError(
            f'unknown rig {key!r}: expected one of {sorted(RIGS)} or a path to a rig YAML file'
        )
    return load_config(RigConfig, name_or_path)
