"""Tests for relkd_core.data.frames: indexing, pairing, calibration and damaged bags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bagtools import convert_ros1_bag, rewrite_bag, write_ros1_bag

from relkd_core.data.frames import BagSource, UnreadableBagError
from relkd_core.data.preset import load_preset
from relkd_core.errors import BagError, CalibrationError
from relkd_core.geometry.se3 import invert_transform
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS


def _read_all(source: BagSource) -> list[Any]:
    frames, _ = source.plan()
    return list(source.read(frames))


def test_frames_unknown_topic_lists_bag_topics_and_preset_key(tiny_bags: dict) -> None:
    with pytest.raises(BagError, match=(
            r"has no topic '/LIDAR_TOP' \(preset 'synth-nuscenes' key lidar\.topic\); change "
            r"that key to one of the bag's topics:\n  /camera_color_left/camera_info "
            r"\(sensor_msgs/msg/CameraInfo\)")):
        BagSource(tiny_bags[('kitti', 'mcap')], load_preset('synth-nuscenes'))


def test_frames_missing_camera_info_names_topic(tiny_bags: dict, tmp_path: Path) -> None:
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'noinfo',
                      edit=lambda topic, t, msg: None if topic.endswith('camera_info') else msg)
    with pytest.raises(BagError, match=r"has no CameraInfo on '/camera_color_left/camera_info' "
                                       r"for camera 'camera_color_left'"):
        BagSource(bag, load_preset('synth-kitti'))


def test_frames_missing_tf_link_names_frame_chain(tiny_bags: dict, tmp_path: Path) -> None:
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'notf', drop=('/tf_static',))
    with pytest.raises(CalibrationError, match=(
            r"cannot place camera 'camera_color_left' \(frame 'camera_color_left_optical'\) "
            r"relative to the lidar \(frame 'velo_link'\): no tf path from 'velo_link' to "
            r"'camera_color_left_optical': 'velo_link' chain is velo_link, "
            r"'camera_color_left_optical' chain is camera_color_left_optical")):
        BagSource(bag, load_preset('synth-kitti'))


def test_frames_missing_intensity_field_names_preset_key(tiny_bags: dict) -> None:
    preset = load_preset('synth-kitti', ('lidar.intensity_field=i',))
    with pytest.raises(BagError, match=r"the cloud on /velodyne_points has no field 'i' \(preset "
                                       r"'synth-kitti' key lidar\.intensity_field\); its fields "
                                       r"are \['x', 'y', 'z', 'intensity', 'ring', 'label'"):
        BagSource(tiny_bags[('kitti', 'mcap')], preset)


def test_frames_extrinsics_match_simulator_with_interpolated_tf(tiny_bags: dict,
                                                                tmp_path: Path) -> None:
    # Keep odom → base_link only at lidar stamps: camera stamps (up to 50 ms later along the
    # sweep) must be interpolated, and ego motion between the stamps compensated.
    sims = list(SyntheticDrive(RIGS['nuscenes'], 3, seed=7).frames())
    scan_stamps = {f.t_ns for f in sims}
    poses = {t: T for sim in sims for t, T in sim.ego_poses.items()}
    bag = rewrite_bag(tiny_bags[('nuscenes', 'mcap')], tmp_path / 'sparse_tf',
                      edit=lambda topic, t, msg: None if topic == '/tf' and t not in scan_stamps
                      else msg)
    source = BagSource(bag, load_preset('synth-nuscenes'))
    results = _read_all(source)
    rig = RIGS['nuscenes']
    T_base_lidar = rig.lidar.mount.T_base_sensor()
    worst = 0.0
    for result, sim in zip(results, sims, strict=True):
        assert result.frame is not None
        for camera in result.frame.cameras:
            if camera.t_ns > max(scan_stamps):
                continue  # beyond the last tf sample: nearest sample, not interpolation
            config = next(c for c in rig.cameras if c.name == camera.name)
            T_odom_cam = poses[camera.t_ns] @ config.T_base_optical()
            truth = invert_transform(T_odom_cam) @ poses[sim.t_ns] @ T_base_lidar
            worst = max(worst, float(np.abs(camera.T_cam_lidar - truth).max()))
    assert 0.0 < worst < 5e-3


def test_frames_pairs_nearest_image_and_counts_out_of_tolerance(tiny_bags: dict) -> None:
    tolerance = 20_000_000
    preset = load_preset('synth-nuscenes', (f'max_dt_ns={tolerance}',))
    source = BagSource(tiny_bags[('nuscenes', 'mcap')], preset)
    frames, unpaired = source.plan()
    scans = [f.scan.stamp_ns for f in frames]
    period = scans[1] - scans[0]
    expected = {}
    for camera in RIGS['nuscenes'].cameras:
        images = [t + camera.time_offset_ns for t in scans]
        expected[camera.name] = sum(min(abs(i - t) for i in images) > tolerance for t in scans)
    assert period == 50_000_000
    assert unpaired == expected
    assert 0 < sum(expected.values()) < 18
    for frame in frames:
        for plan in frame.cameras:
            assert abs(plan.image.stamp_ns - frame.scan.stamp_ns) <= tolerance
            assert plan.semantic is not None and plan.semantic.stamp_ns == plan.image.stamp_ns


def test_frames_jpeg_bag_falls_back_to_compressed_topic(tiny_bags: dict) -> None:
    source = BagSource(tiny_bags[('kitti', 'sqlite3')], load_preset('synth-kitti'))
    resolved = source.topics['/camera_color_left/image_raw']
    assert resolved == '/camera_color_left/image_raw/compressed'
    results = _read_all(source)
    assert all(r.frame is not None and len(r.frame.cameras) == 2 for r in results)


def test_frames_nan_and_empty_clouds_dropped_with_counts(tiny_bags: dict, tmp_path: Path) -> None:
    def damage(topic: str, t_ns: int, msg: Any) -> Any:
        if topic != '/velodyne_points':
            return msg
        data = np.frombuffer(msg.data, np.uint8).copy()
        points = data.reshape(-1, msg.point_step)
        index = len(seen)
        seen.append(t_ns)
        if index == 0:    # every point NaN
            points[:, 0:4] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
        elif index == 1:  # empty cloud
            msg.width, msg.row_step = 0, 0
            points = points[:0]
        else:             # 10 NaN points
            points[:10, 0:4] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
        msg.data = points.reshape(-1)
        return msg

    seen: list[int] = []
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'nan', edit=damage)
    results = _read_all(BagSource(bag, load_preset('synth-kitti')))
    assert [r.reason for r in results] == ['only NaN points', 'empty cloud', None]
    assert results[2].nan_points == 10
    assert results[2].frame is not None
    assert np.isfinite(results[2].frame.scan.points).all()


def test_frames_truncated_mcap_keeps_frames_before_the_damage(tiny_bags: dict,
                                                              tmp_path: Path) -> None:
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'cut')
    mcap = next(bag.glob('*.mcap'))
    size = mcap.stat().st_size
    with mcap.open('r+b') as stream:
        stream.truncate(int(size * 0.8))
    source = BagSource(bag, load_preset('synth-kitti'))
    assert len(source.problems) == 1
    assert 'MCAP file ends without its footer' in source.problems[0]
    assert f'read {source.num_scans} of 3 scans' in source.problems[0]
    assert 1 <= source.num_scans < 3
    results = _read_all(source)
    assert results and all(r.frame is not None for r in results)


def test_frames_mcap_cut_before_its_topics_is_damaged_not_misconfigured(
        tiny_bags: dict, tmp_path: Path) -> None:
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'cut')
    mcap = next(bag.glob('*.mcap'))
    size = mcap.stat().st_size
    with mcap.open('r+b') as stream:
        stream.truncate(int(size * 0.02))
    # Not "bag has no topic ... change that preset key": the topics are in the lost part.
    with pytest.raises(UnreadableBagError, match=rf'^bag {bag} is damaged: its MCAP file ends '
                                                 rf'without its footer \(truncated at byte \d+ '
                                                 rf'of {int(size * 0.02)}\) and what is left has '
                                                 r"no message on '/"):
        BagSource(bag, load_preset('synth-kitti'))


def test_frames_corrupt_database_is_unreadable(tiny_bags: dict, tmp_path: Path) -> None:
    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'db', storage='sqlite3')
    db = next(bag.glob('*.db3'))
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with pytest.raises(UnreadableBagError, match=r'cannot open bag .*malformed'):
        BagSource(bag, load_preset('synth-kitti'))


@pytest.mark.parametrize('layout', ['ros1', 'converted'])
def test_frames_ros1_layouts_read_like_the_original(tiny_bags: dict, tmp_path: Path,
                                                    layout: str) -> None:
    original = tiny_bags[('kitti', 'mcap')]
    bag = write_ros1_bag(original, tmp_path / 'kitti.bag')
    if layout == 'converted':
        bag = convert_ros1_bag(bag, tmp_path / 'kitti_ros2')
    preset = load_preset('synth-kitti')
    expected = _read_all(BagSource(original, preset))
    got = _read_all(BagSource(bag, preset))
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert a.frame is not None and b.frame is not None
        np.testing.assert_array_equal(a.frame.scan.points, b.frame.scan.points)
        for ca, cb in zip(a.frame.cameras, b.frame.cameras, strict=True):
            np.testing.assert_allclose(ca.T_cam_lidar, cb.T_cam_lidar, atol=1e-9)
            np.testing.assert_array_equal(ca.rgb, cb.rgb)
