"""A synthetic drive: one scene, a rig, and its frames in time order.

Every frame is rendered from its own generator seeded by ``(seed, frame index)``, so a frame
does not depend on which frames were rendered before it, and the same arguments always give
the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import SimError
from relkd_core.geometry.projection import pixel_rays
from relkd_core.sim.rig import CameraConfig, RigConfig
from relkd_core.sim.scene import Scene, SceneConfig, generate_scene
from relkd_core.sim.sensors import CameraImages, T_odom_base, render_camera, render_lidar

#: Stamp of frame 0 (2023-11-14T22:13:20Z): realistic epoch nanoseconds, fixed for determinism.
START_NS = 1_700_000_000_000_000_000
_SCENE_STREAM = 0x5CE4E


@dataclass(frozen=True)
class CameraShot:
    """One camera's images and their stamp (int64 ns)."""

    camera: CameraConfig
    t_ns: int
    images: CameraImages


@dataclass(frozen=True)
class SimFrame:
    """A lidar scan (``POINT_DTYPE``, lidar frame) at ``t_ns`` plus the camera shots of the
    same sweep; ``ego_poses`` maps each stamp used to ``T_odom_base`` at that stamp."""

    index: int
    t_ns: int
    points: NDArray[np.void]
    shots: tuple[CameraShot, ...]
    ego_poses: dict[int, NDArray[np.float64]]


class SyntheticDrive:
    """``num_frames`` frames of ``rig`` driving through a street generated from ``seed``."""

    def __init__(self, rig: RigConfig, num_frames: int, seed: int,
                 scene_config: SceneConfig | None = None, *, cameras: bool = True) -> None:
        if num_frames <= 0:
            raise SimError(f'num_frames must be positive, got {num_frames}')
        if seed < 0:
            raise SimError(f'seed must be non-negative, got {seed}')
        self.rig = rig
        self.num_frames = num_frames
        self.seed = seed
        self.render_cameras = cameras
        self.period_ns = round(1e9 / rig.frame_rate_hz)
        route_m = rig.ego_speed_mps * num_frames / rig.frame_rate_hz
        self.scene: Scene = generate_scene(
            scene_config or SceneConfig(), np.random.default_rng([seed, _SCENE_STREAM]),
            route_m, rig.ego_speed_mps)
        self._lidar_rays = rig.lidar.ray_grid()
        self._camera_rays = {c.name: pixel_rays(c.K(), c.width_px, c.height_px)
                             for c in rig.cameras} if cameras else {}

    def stamp_ns(self, index: int) -> int:
        """Lidar stamp of frame ``index``."""
        return START_NS + index * self.period_ns

    def frame(self, index: int) -> SimFrame:
        """Render frame ``index`` (0-based)."""
        if not 0 <= index < self.num_frames:
            raise SimError(f'frame index must be in 0..{self.num_frames - 1}, got {index}')
        rng = np.random.default_rng([self.seed, index])
        t_ns = self.stamp_ns(index)
        t_s = (t_ns - START_NS) * 1e-9
        points = render_lidar(self.scene, self.rig.lidar, t_s, rng, self._lidar_rays)
        poses = {t_ns: T_odom_base(self.scene, t_s)}
        shots = []
        if self.render_cameras:
            for camera in self.rig.cameras:
                cam_ns = t_ns + camera.time_offset_ns
                cam_s = (cam_ns - START_NS) * 1e-9
                images = render_camera(self.scene, camera, cam_s, rng,
                                       self._camera_rays[camera.name])
                shots.append(CameraShot(camera=camera, t_ns=cam_ns, images=images))
                poses[cam_ns] = T_odom_base(self.scene, cam_s)
        return SimFrame(index=index, t_ns=t_ns, points=points, shots=tuple(shots),
                        ego_poses=poses)

    def frames(self) -> Iterator[SimFrame]:
        """All frames in time order."""
        for index in range(self.num_frames):
            yield self.frame(index)
