"""The node's cameras without ROS: each buffers images by stamp, keeps its latest CameraInfo as
a :class:`~relkd_core.geometry.camera.CameraModel`, and draws a labelled scan onto the image
nearest to the scan's stamp (the overlay).

Messages are duck-typed (rclpy and rosbags alike); what cannot be read is a
:class:`~relkd_core.errors.DataError` or :class:`~relkd_core.errors.CalibrationError`, which the
node logs and counts, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.image import to_rgb
from relkd_core.errors import DataError
from relkd_core.geometry.camera import CameraModel
from relkd_core.infer.overlay import draw_overlay
from relkd_core.infer.sync import StampBuffer

__all__ = ['IMAGE_BUFFER', 'Overlay', 'OverlayCamera', 'image_to_rgb', 'overlay_topic',
           'same_camera_info']

#: Images buffered per camera for pairing with scans.
IMAGE_BUFFER = 5

#: ``lookup(target_frame, source_frame, target_t_ns, source_t_ns)`` → 4×4 ``T_target_source``.
TransformLookup = Callable[[str, str, int, int], NDArray[np.float64]]


def overlay_topic(image_topic: str, suffix: str) -> str:
    """``/cam/image_raw/compressed`` → ``/cam/image_raw/<suffix>``."""
    base = image_topic[: -len('/compressed')] if image_topic.endswith('/compressed') else (
        image_topic)
    return f'{base.rstrip("/")}/{suffix}'


def image_to_rgb(msg: Any) -> NDArray[np.uint8]:
    """H×W×3 RGB uint8 of an ``Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``CompressedImage``
    (JPEG, PNG); DataError for another encoding or broken data."""
    try:
        return to_rgb(msg)
    except (ValueError, TypeError) as err:
        raise DataError(f'cannot read image: {err}') from err


def same_camera_info(a: Any, b: Any) -> bool:
    """Whether two CameraInfo messages describe the same camera (size, model, frame, K, D, R,
    P), so the second need not be parsed again."""
    return (a.width, a.height, a.distortion_model, a.header.frame_id) == (
        b.width, b.height, b.distortion_model, b.header.frame_id) and all(
        np.array_equal(np.asarray(getattr(a, k)), np.asarray(getattr(b, k)))
        for k in ('k', 'd', 'r', 'p'))


@dataclass(frozen=True)
class Overlay:
    """An overlay drawn for one camera: the (H, W, 3) uint8 ``rgb`` and the ``header`` of the
    image it was drawn on."""

    header: Any
    rgb: NDArray[np.uint8]


@dataclass
class OverlayCamera:
    """One camera of the node; ``publisher`` is whatever the caller publishes its overlays
    with (kept here so a camera and its output travel together)."""

    image_topic: str
    publisher: Any = None
    images: StampBuffer[Any] = field(default_factory=lambda: StampBuffer(IMAGE_BUFFER))
    info: Any = None
    model: CameraModel | None = None

    def add_image(self, t_ns: int, msg: Any) -> None:
        self.images.add(t_ns, msg)

    def set_info(self, msg: Any) -> None:
        """Take a CameraInfo (parsed only when it differs from the last one); raises
        CalibrationError or ValueError for one that cannot be used, keeping the last."""
        if self.info is not None and same_camera_info(self.info, msg):
            return
        self.model = CameraModel.from_camera_info(msg)
        self.info = msg

    def draw(self, xyz_lidar: NDArray[np.float32], labels: NDArray[np.uint16],
             colors: NDArray[np.uint8], scan_frame: str, scan_t_ns: int, slop_ns: int,
             lookup: TransformLookup, radius_px: int = 1) -> Overlay | None:
        """The scan's points (N, 3 metres in ``scan_frame``) drawn in their label colours on
        the buffered image nearest to ``scan_t_ns`` (at most ``slop_ns`` away); None when there
        is none or no CameraInfo yet. Raises CalibrationError (no transform) or DataError (an
        unreadable image)."""
        match = self.images.nearest(scan_t_ns, slop_ns)
        if match is None or self.model is None:
            return None
        image_t_ns, image = match
        frame = (self.info.header.frame_id or image.header.frame_id).lstrip('/')
        T_cam_lidar = lookup(frame, scan_frame, image_t_ns, scan_t_ns)
        drawn = draw_overlay(image_to_rgb(image), xyz_lidar, labels, colors, T_cam_lidar,
                             self.model, radius_px=radius_px)
        return Overlay(image.header, drawn)
