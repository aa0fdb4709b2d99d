"""The frame types passed between stages: a lidar scan, camera images with their calibration,
and a frame that groups one scan with the camera images paired to it.

Units and frames: points are float32 metres in the lidar frame; stamps are int64 nanoseconds;
labels are uint16 taxonomy labels (0 = ignore); ``T_a_b`` maps points from frame b into a.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from relkd_core.geometry.camera import CameraModel

__all__ = ['CameraFrame', 'Frame', 'LidarScan']


@dataclass(frozen=True)
class LidarScan:
    """``points`` (N×4 float32: x, y, z in metres, intensity in [0, 1]) at ``t_ns``;
    ``labels`` (N uint16) when the source carries ground truth."""

    points: NDArray[np.float32]
    t_ns: int
    frame_id: str
    labels: NDArray[np.uint16] | None = None

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True)
class CameraFrame:
    """One camera image paired with a scan.

    ``rgb`` is H×W×3 uint8. ``T_cam_lidar`` maps points of the scan (at the scan's stamp)
    into this camera's optical frame at the image's stamp, ego motion between the two stamps
    included. ``semantic`` (H×W uint16) and ``instance`` (H×W uint32) are ground truth, when
    the source has them.
    """

    name: str
    t_ns: int
    rgb: NDArray[np.uint8]
    model: CameraModel
    T_cam_lidar: NDArray[np.float64]
    semantic: NDArray[np.uint16] | None = None
    instance: NDArray[np.uint32] | None = None


@dataclass(frozen=True)
class Frame:
    """A scan and the camera images paired with it (cameras without an image within the
    time tolerance are absent). ``source`` is the bag index, ``index`` the scan's position
    in that bag."""

    scan: LidarScan
    cameras: tuple[CameraFrame, ...]
    source: int = 0
    index: int = 0
