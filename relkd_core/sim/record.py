"""Record a synthetic drive as a ROS 2 bag, with ground truth topics.

Topics, per rig (``<lidar>`` and ``<cam>`` are the rig's names):

- ``<lidar topic>``: ``sensor_msgs/PointCloud2`` with x, y, z, intensity (float32), ring,
  label (uint16) and instance (uint32), in the lidar frame.
- ``/<cam>/image_raw`` (``Image`` rgb8) or ``/<cam>/image_raw/compressed``
  (``CompressedImage`` jpeg), ``/<cam>/camera_info``, and ground truth
  ``/<cam>/semantic`` (mono16 labels) and ``/<cam>/instance`` (32SC1 ids), all stamped in the
  camera's optical frame ``<cam>_optical``.
- ``/tf``: ``odom → base_link`` at every lidar and camera stamp; ``/tf_static``
  (transient-local): ``base_link → <lidar>``, ``base_link → <cam> → <cam>_optical``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.bag import BagWriter, Storage
from relkd_core.geometry.projection import R_BODY_OPTICAL
from relkd_core.geometry.se3 import make_transform
from relkd_core.sim.drive import SimFrame, SyntheticDrive
from relkd_core.taxonomy import NUM_CLASSES

ImageFormat = Literal['raw', 'jpeg']
ODOM_FRAME = 'odom'
BASE_FRAME = 'base_link'
#: The output kind of a recorded synthetic drive (see relkd_core.outputs).
SYNTH_BAG_KIND = 'synth-bag'


@dataclass
class RecordSummary:
    """What was written: counts per topic, points per scan, and the lidar class histogram
    (points per label 0..16)."""

    path: str
    frames: int = 0
    topics: dict[str, tuple[str, int]] = field(default_factory=dict)
    points_per_scan: list[int] = field(default_factory=list)
    label_histogram: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))
    duration_s: float = 0.0


def topic_names(drive: SyntheticDrive, image_format: ImageFormat) -> dict[str, str]:
    """Every topic of the bag and its message type."""
    topics = {drive.rig.lidar.topic: 'sensor_msgs/msg/PointCloud2',
              '/tf': 'tf2_msgs/msg/TFMessage', '/tf_static': 'tf2_msgs/msg/TFMessage'}
    if drive.render_cameras:
        for cam in drive.rig.cameras:
            if image_format == 'raw':
                topics[f'/{cam.name}/image_raw'] = 'sensor_msgs/msg/Image'
            else:
                topics[f'/{cam.name}/image_raw/compressed'] = 'sensor_msgs/msg/CompressedImage'
            topics[f'/{cam.name}/camera_info'] = 'sensor_msgs/msg/CameraInfo'
            topics[f'/{cam.name}/semantic'] = 'sensor_msgs/msg/Image'
            topics[f'/{cam.name}/instance'] = 'sensor_msgs/msg/Image'
    return topics


def static_transforms(drive: SyntheticDrive) -> list[tuple[str, str, NDArray[np.float64]]]:
    """``(parent, child, T_parent_child)`` of the rig's fixed mounts."""
    rig = drive.rig
    out = [(BASE_FRAME, rig.lidar.frame_id, rig.lidar.mount.T_base_sensor())]
    if drive.render_cameras:
        body_optical = make_transform(R_BODY_OPTICAL, [0.0, 0.0, 0.0])
        for cam in rig.cameras:
            out.append((BASE_FRAME, cam.frame_id, cam.mount.T_base_sensor()))
            out.append((cam.frame_id, cam.optical_frame_id, body_optical))
    return out


def record_drive(drive: SyntheticDrive, path: str | os.PathLike[str], *,
                 storage: Storage = 'mcap', image_format: ImageFormat = 'raw',
                 on_frame: Callable[[SimFrame], None] | None = None) -> RecordSummary:
    """Render every frame of ``drive`` and write the bag at ``path`` atomically.

    ``on_frame`` is called after each frame is written (progress bars live in the CLI).
    """
    summary = RecordSummary(path=str(path))
    topics = topic_names(drive, image_format)
    with BagWriter(path, storage=storage, kind=SYNTH_BAG_KIND) as writer:
        make = writer.factory
        for topic, msgtype in topics.items():
            writer.add_topic(topic, msgtype, latched=topic == '/tf_static')
        t0 = drive.stamp_ns(0)
        writer.write('/tf_static', t0, make.tf_message(static_transforms(drive), t0))
        lidar = drive.rig.lidar
        for frame in drive.frames():
            # Messages are written in stamp order so that record time equals header time.
            for t_ns in sorted(frame.ego_poses):
                tf = make.tf_message([(ODOM_FRAME, BASE_FRAME, frame.ego_poses[t_ns])], t_ns)
                writer.write('/tf', t_ns, tf)
            writer.write(lidar.topic, frame.t_ns,
                         make.point_cloud(frame.points, frame.t_ns, lidar.frame_id))
            for shot in sorted(frame.shots, key=lambda s: s.t_ns):
                cam, t_ns, images = shot.camera, shot.t_ns, shot.images
                optical = cam.optical_frame_id
                if image_format == 'raw':
                    writer.write(f'/{cam.name}/image_raw', t_ns,
                                 make.image(images.rgb, 'rgb8', t_ns, optical))
                else:
                    writer.write(f'/{cam.name}/image_raw/compressed', t_ns,
                                 make.compressed_image(images.rgb, t_ns, optical))
                writer.write(f'/{cam.name}/camera_info', t_ns,
                             make.camera_info(cam.K(), cam.width_px, cam.height_px, t_ns, optical))
                writer.write(f'/{cam.name}/semantic', t_ns,
                             make.image(images.semantic, 'mono16', t_ns, optical))
                writer.write(f'/{cam.name}/instance', t_ns,
                             make.image(images.instance.astype(np.int32), '32SC1', t_ns, optical))
            summary.frames += 1
            summary.points_per_scan.append(len(frame.points))
            summary.label_histogram += np.bincount(frame.points['label'],
                                                   minlength=NUM_CLASSES + 1)
            if on_frame is not None:
                on_frame(frame)
        summary.topics = {t: (topics[t], writer.message_counts[t]) for t in topics}
    summary.duration_s = (drive.num_frames - 1) * drive.period_ns * 1e-9
    return summary
