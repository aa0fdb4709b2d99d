"""A dataset scene as a stream of sensor readings, and the bag writer for it.

A reader (nuScenes, SemanticKITTI) checks a scene's files when it builds the :class:`Scene`
(tables, file sizes, label lengths, calibration), so a bad input fails before any bag is
opened; :meth:`Scene.readings` then loads one file at a time, in time order.

The bag (:func:`write_scene_bag`) holds, with the names of the scene's topic preset:
the lidar ``PointCloud2`` (x, y, z, intensity float32, then the scene's extra fields such as
``ring`` and a uint16 ``label``), per camera a ``CompressedImage`` with the file's bytes
untouched and a ``CameraInfo`` (rectified: ``p`` = [K | 0], ``d`` = 0), ``/tf`` with
``fixed_frame → moving_frame`` at every reading's stamp, and ``/tf_static`` (transient local)
with the sensor mounts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.bag import BagWriter, Storage
from relkd_core.errors import DataError

__all__ = ['CameraStream', 'DatasetError', 'ImageReading', 'LidarReading', 'Scene',
           'SceneBagSummary', 'write_scene_bag']


class DatasetError(DataError):
    """A dataset folder that cannot be converted: a missing table, file or folder, a label
    file of the wrong length, incomplete calibration. The message names the file."""


@dataclass(frozen=True)
class CameraStream:
    """One camera of a scene: its topics, optical frame and intrinsics (3×3, rectified)."""

    name: str
    image_topic: str
    info_topic: str
    frame_id: str


@dataclass(frozen=True)
class LidarReading:
    """A scan at ``t_ns``: a structured array (``x, y, z, intensity`` float32 first) in the
    lidar frame; ``T_fixed_moving`` is the moving frame's pose at ``t_ns`` (4×4)."""

    t_ns: int
    points: NDArray[np.void]
    T_fixed_moving: NDArray[np.float64]


@dataclass(frozen=True)
class ImageReading:
    """An encoded image (``data`` as stored in the dataset, ``format`` 'jpeg' or 'png')."""

    t_ns: int
    camera: str
    data: bytes
    format: str
    width: int
    height: int
    K: NDArray[np.float64]
    T_fixed_moving: NDArray[np.float64]


class Scene(Protocol):
    """What a dataset reader gives the bag writer for one scene or sequence."""

    name: str
    lidar_topic: str
    lidar_frame: str
    fixed_frame: str
    moving_frame: str
    cameras: tuple[CameraStream, ...]
    #: Whether the lidar clouds carry a ``label`` field.
    labelled: bool
    #: ``(parent, child, T_parent_child)`` of the fixed sensor mounts.
    static_transforms: tuple[tuple[str, str, NDArray[np.float64]], ...]

    def readings(self) -> Iterator[LidarReading | ImageReading]:
        """Every reading in time order (files are read here, one at a time)."""
        ...


@dataclass
class SceneBagSummary:
    """What one bag received."""

    path: Path
    scans: int = 0
    images: int = 0
    points: int = 0
    labelled_scans: int = 0
    bytes_read: int = 0
    duration_s: float = 0.0
    topics: dict[str, int] = field(default_factory=dict)


def write_scene_bag(scene: Scene, path: str | os.PathLike[str], *, storage: Storage = 'mcap',
                    distro: str = 'humble') -> SceneBagSummary:
    """Write ``scene`` as one ROS 2 bag at ``path`` (atomically: complete or absent)."""
    summary = SceneBagSummary(path=Path(path))
    first = last = None
    with BagWriter(path, storage=storage, distro=distro) as writer:
        make = writer.factory
        writer.add_topic('/tf', 'tf2_msgs/msg/TFMessage')
        writer.add_topic('/tf_static', 'tf2_msgs/msg/TFMessage', latched=True)
        writer.add_topic(scene.lidar_topic, 'sensor_msgs/msg/PointCloud2')
        cameras = {c.name: c for c in scene.cameras}
        for camera in scene.cameras:
            writer.add_topic(camera.image_topic, 'sensor_msgs/msg/CompressedImage')
            writer.add_topic(camera.info_topic, 'sensor_msgs/msg/CameraInfo')
        last_tf: int | None = None
        for reading in scene.readings():
            t_ns = reading.t_ns
            if first is None:
                first = t_ns
                writer.write('/tf_static', t_ns,
                             make.tf_message(list(scene.static_transforms), t_ns))
            last = t_ns
            if t_ns != last_tf:  # one pose per stamp (a camera may fire with the scan)
                writer.write('/tf', t_ns, make.tf_message(
                    [(scene.fixed_frame, scene.moving_frame, reading.T_fixed_moving)], t_ns))
                last_tf = t_ns
            if isinstance(reading, LidarReading):
                writer.write(scene.lidar_topic, t_ns,
                             make.point_cloud(reading.points, t_ns, scene.lidar_frame))
                summary.scans += 1
                summary.points += len(reading.points)
                summary.bytes_read += reading.points.nbytes
                if 'label' in (reading.points.dtype.names or ()):
                    summary.labelled_scans += 1
            else:
                camera = cameras[reading.camera]
                image = make.message(
                    'sensor_msgs/msg/CompressedImage', header=make.header(t_ns, camera.frame_id),
                    format=reading.format, data=np.frombuffer(reading.data, dtype=np.uint8))
                writer.write(camera.image_topic, t_ns, image)
                writer.write(camera.info_topic, t_ns, make.camera_info(
                    reading.K, reading.width, reading.height, t_ns, camera.frame_id))
                summary.images += 1
                summary.bytes_read += len(reading.data)
        if first is None:
            raise DatasetError(f'scene {scene.name} has no sensor readings')
        summary.topics = dict(writer.message_counts)
    summary.duration_s = (last - first) * 1e-9 if first is not None and last is not None else 0.0
    return summary
