"""Synthetic bags read back with rosbags: topics, fields, geometry/rendering consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relkd_core.data.bag import open_bags, read_messages
from relkd_core.data.image import image_to_array, to_rgb
from relkd_core.data.pointcloud import pointcloud_to_array, xyz_of
from relkd_core.data.tf import TfBuffer, stamp_ns
from relkd_core.geometry.projection import pixel_indices, project_points, unoccluded_mask
from relkd_core.geometry.se3 import transform_points
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import IGNORE_LABEL, NUM_CLASSES

CASES = [(rig, storage) for rig in ('nuscenes', 'kitti') for storage in ('mcap', 'sqlite3')]


def _read_all(path: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    reader = open_bags([path])
    try:
        for topic, _, msg in read_messages(reader):
            out.setdefault(topic, []).append(msg)
    finally:
        reader.close()
    return out


@pytest.mark.parametrize(('rig', 'storage'), CASES)
def test_record_topics_and_counts(tiny_bags: dict, rig: str, storage: str) -> None:
    messages = _read_all(tiny_bags[(rig, storage)])
    cams = [c.name for c in RIGS[rig].cameras]
    image_topic = 'image_raw' if storage == 'mcap' else 'image_raw/compressed'
    expected = {RIGS[rig].lidar.topic, '/tf', '/tf_static'} | {
        f'/{c}/{suffix}' for c in cams
        for suffix in (image_topic, 'camera_info', 'semantic', 'instance')}
    assert set(messages) == expected
    assert len(messages[RIGS[rig].lidar.topic]) == 3
    assert all(len(messages[f'/{c}/semantic']) == 3 for c in cams)
    assert len(messages['/tf_static']) == 1
    # odom→base_link at the lidar stamp and at every distinct camera stamp of each frame.
    cam_offsets = {c.time_offset_ns for c in RIGS[rig].cameras} - {0}
    assert len(messages['/tf']) == 3 * (1 + len(cam_offsets))


@pytest.mark.parametrize(('rig', 'storage'), CASES)
def test_record_pointcloud_fields(tiny_bags: dict, rig: str, storage: str) -> None:
    messages = _read_all(tiny_bags[(rig, storage)])
    scan = messages[RIGS[rig].lidar.topic][0]
    fields = {f.name: f.datatype for f in scan.fields}
    assert fields == {'x': 7, 'y': 7, 'z': 7, 'intensity': 7, 'ring': 4, 'label': 4,
                      'instance': 6}
    points = pointcloud_to_array(scan)
    assert scan.header.frame_id == RIGS[rig].lidar.frame_id
    assert points['label'].max() <= NUM_CLASSES
    assert points['ring'].max() == RIGS[rig].lidar.num_beams - 1
    ranges = np.linalg.norm(xyz_of(points), axis=1)
    assert ranges.max() <= RIGS[rig].lidar.max_range_m + 0.2
    target = {'nuscenes': 34_000, 'kitti': 120_000}[rig]
    assert 0.85 * target <= len(points) <= 1.15 * target


def test_record_tf_static_is_transient_local(tiny_bags: dict) -> None:
    reader = open_bags([tiny_bags[('nuscenes', 'mcap')]])
    try:
        (connection,) = [c for c in reader.connections if c.topic == '/tf_static']
        profiles = connection.ext.offered_qos_profiles
    finally:
        reader.close()
    assert len(profiles) == 1
    assert 'TRANSIENT_LOCAL' in str(profiles[0].durability).upper()


def test_record_images_are_textured_not_label_maps(tiny_bags: dict) -> None:
    messages = _read_all(tiny_bags[('nuscenes', 'mcap')])
    rgb = to_rgb(messages['/CAM_FRONT/image_raw'][0])
    semantic = image_to_array(messages['/CAM_FRONT/semantic'][0])
    assert rgb.shape == (224, 400, 3) and semantic.shape == (224, 400)
    road = semantic == 11
    # Texture and shading: one class spans many distinct colours.
    assert len(np.unique(rgb[road].reshape(-1, 3), axis=0)) > 500
    assert (semantic[0] == IGNORE_LABEL).mean() > 0.2  # sky in the top row


class Agreement:
    """Counts of projected lidar points whose label equals their pixel's semantic label."""

    def __init__(self) -> None:
        self.agree = self.total = self.agree_unoccluded = self.unoccluded = 0

    @property
    def raw(self) -> float:
        return self.agree / max(self.total, 1)

    @property
    def among_unoccluded(self) -> float:
        return self.agree_unoccluded / max(self.unoccluded, 1)


def reprojection_agreement(path: Path, lidar_topic: str) -> Agreement:
    """Project every labelled lidar point into every camera with the bag's own CameraInfo
    and tf (ego motion between the lidar and camera stamps compensated through ``odom``)."""
    tf = TfBuffer()
    infos: dict[str, Any] = {}
    semantic: dict[str, list[tuple[int, str, np.ndarray]]] = {}
    scans = []
    reader = open_bags([path])
    for topic, _, msg in read_messages(reader):
        camera = topic.split('/')[1]
        if topic == '/tf_static':
            tf.add_message(msg, static=True)
        elif topic == '/tf':
            tf.add_message(msg)
        elif topic.endswith('/camera_info'):
            infos[camera] = msg
        elif topic.endswith('/semantic'):
            semantic.setdefault(camera, []).append(
                (stamp_ns(msg.header.stamp), msg.header.frame_id, image_to_array(msg)))
        elif topic == lidar_topic:
            scans.append(msg)
    reader.close()
    result = Agreement()
    for scan in scans:
        points = pointcloud_to_array(scan)
        points = points[points['label'] != IGNORE_LABEL]
        t_lidar = stamp_ns(scan.header.stamp)
        for camera, shots in semantic.items():
            t_cam, frame, labels = min(shots, key=lambda s: abs(s[0] - t_lidar))
            info = infos[camera]
            T = tf.lookup(frame, scan.header.frame_id, t_cam, t_lidar, fixed='odom')
            xyz_cam = transform_points(T, xyz_of(points))
            uv, visible = project_points(xyz_cam, np.asarray(info.k).reshape(3, 3), info.width,
                                         info.height)
            px = pixel_indices(uv[visible])
            same = labels[px[:, 1], px[:, 0]] == points['label'][visible]
            front = unoccluded_mask(uv[visible], xyz_cam[visible, 2], info.width, info.height)
            result.agree += int(same.sum())
            result.total += len(same)
            result.agree_unoccluded += int(same[front].sum())
            result.unoccluded += int(front.sum())
    return result


@pytest.mark.parametrize(('rig', 'storage'), CASES)
def test_record_lidar_reprojects_onto_matching_labels(tiny_bags: dict, rig: str,
                                                      storage: str) -> None:
    result = reprojection_agreement(tiny_bags[(rig, storage)], RIGS[rig].lidar.topic)
    assert result.total > 10_000
    # Points hidden from the camera by parallax (the camera sits up to 0.5 m beside the
    # lidar) land on the occluder's pixels; the sparse depth test removes them.
    assert result.unoccluded >= 0.8 * result.total
    assert result.among_unoccluded >= 0.95
    assert result.raw >= 0.92


def _raw_payloads(path: Path) -> list[tuple[str, int, bytes]]:
    reader = open_bags([path])
    try:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    finally:
        reader.close()


@pytest.mark.slow
def test_record_is_deterministic(tmp_path: Path) -> None:
    rig = RIGS['kitti'].with_image_size(64, 32)
    for name in ('a', 'b'):
        record_drive(SyntheticDrive(rig, 2, seed=5), tmp_path / name, image_format='jpeg')
    record_drive(SyntheticDrive(rig, 2, seed=6), tmp_path / 'c', image_format='jpeg')
    a, b, c = (_raw_payloads(tmp_path / n) for n in 'abc')
    assert len(a) == len(b) > 10
    assert a == b
    lidar_a = [p for p in a if p[0] == rig.lidar.topic]
    lidar_c = [p for p in c if p[0] == rig.lidar.topic]
    assert lidar_a[0][2] != lidar_c[0][2]


def test_record_failure_leaves_nothing(tmp_path: Path) -> None:
    def fail(frame: object) -> None:
        raise RuntimeError('disk on fire')

    drive = SyntheticDrive(RIGS['nuscenes'], 2, seed=0, cameras=False)
    with pytest.raises(RuntimeError, match='disk on fire'):
        record_drive(drive, tmp_path / 'bag', on_frame=fail)
    assert list(tmp_path.iterdir()) == []
