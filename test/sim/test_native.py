"""The synthetic world written in nuScenes' and SemanticKITTI's own layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from relkd_core.errors import SimError
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.native import SEMANTICKITTI_RAW_OF_NUSCENES16, write_nuscenes
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import NUSCENES16, load_taxonomy


def _table(root: Path, name: str) -> list[dict]:
    return json.loads((root / 'v1.0-mini' / f'{name}.json').read_text())


def test_native_nuscenes_tables_reference_their_files(nuscenes_root: Path) -> None:
    rows = _table(nuscenes_root, 'sample_data')
    assert {r['fileformat'] for r in rows} == {'pcd', 'jpg'}
    assert all((nuscenes_root / r['filename']).is_file() for r in rows)
    scenes = {s['name']: s for s in _table(nuscenes_root, 'scene')}
    assert sorted(scenes) == ['scene-0061', 'scene-0103']
    assert scenes['scene-0061']['nbr_samples'] == 3
    calibrated = {c['token']: c for c in _table(nuscenes_root, 'calibrated_sensor')}
    lidar = [r for r in rows if r['filename'].startswith('samples/LIDAR_TOP')]
    assert len(lidar) == 5 and all(r['is_key_frame'] for r in lidar)
    assert calibrated[lidar[0]['calibrated_sensor_token']]['camera_intrinsic'] == []
    # rotation is [w, x, y, z]: the lidar is mounted without rotation.
    assert calibrated[lidar[0]['calibrated_sensor_token']]['rotation'] == [1.0, 0.0, 0.0, 0.0]


def test_native_nuscenes_lidar_and_lidarseg_match_the_drive(nuscenes_root: Path) -> None:
    drive = SyntheticDrive(RIGS['nuscenes'].with_image_size(64, 40), 3, 3)
    frame = drive.frame(0)
    rows = [r for r in _table(nuscenes_root, 'sample_data')
            if r['filename'].startswith('samples/LIDAR_TOP/scene-0061')]
    first = min(rows, key=lambda r: r['timestamp'])
    assert first['timestamp'] == frame.t_ns // 1000
    cloud = np.fromfile(nuscenes_root / first['filename'], '<f4').reshape(-1, 5)
    np.testing.assert_array_equal(cloud[:, 0], frame.points['x'])
    np.testing.assert_array_equal(cloud[:, 3], frame.points['intensity'])
    np.testing.assert_array_equal(cloud[:, 4], frame.points['ring'])
    seg = {r['sample_data_token']: r['filename'] for r in _table(nuscenes_root, 'lidarseg')}
    raw = np.fromfile(nuscenes_root / seg[first['token']], np.uint8)
    np.testing.assert_array_equal(NUSCENES16.map_raw(raw), frame.points['label'])


def test_native_nuscenes_keyframes_and_sweeps(tmp_path: Path) -> None:
    drive = SyntheticDrive(RIGS['nuscenes'].with_image_size(16, 12), 3, 0, cameras=False)
    root = write_nuscenes([('scene-0001', drive)], tmp_path / 'ns', keyframe_every=2,
                          lidarseg=False)
    rows = _table(root, 'sample_data')
    assert [r['is_key_frame'] for r in sorted(rows, key=lambda r: r['timestamp'])] == [
        True, False, True]
    assert [r['filename'].split('/')[0] for r in rows] == ['samples', 'sweeps', 'samples']
    assert not (root / 'v1.0-mini' / 'lidarseg.json').exists()
    linked = {r['token']: r for r in rows}
    assert linked[rows[0]['next']]['prev'] == rows[0]['token']


def test_native_nuscenes_refuses_an_existing_root(nuscenes_root: Path) -> None:
    with pytest.raises(SimError, match='already exists'):
        write_nuscenes([], nuscenes_root)


def test_native_semantickitti_files(kitti_root: Path) -> None:
    drive = SyntheticDrive(RIGS['kitti'].with_image_size(96, 32), 3, 4)
    frame = drive.frame(1)
    folder = kitti_root / 'sequences' / '08'
    scan = np.fromfile(folder / 'velodyne' / '000001.bin', '<f4').reshape(-1, 4)
    np.testing.assert_array_equal(scan[:, 2], frame.points['z'])
    label = np.fromfile(folder / 'labels' / '000001.label', '<u4')
    np.testing.assert_array_equal(label & 0xFFFF,
                                  SEMANTICKITTI_RAW_OF_NUSCENES16[frame.points['label']])
    np.testing.assert_array_equal(label >> 16, frame.points['instance'] & 0xFFFF)
    poses = np.loadtxt(folder / 'poses.txt')
    np.testing.assert_allclose(poses[0], np.eye(4)[:3].reshape(-1), atol=1e-12)
    assert poses[1, 11] > 0.5  # camera 0 looks along +z: the car drives forward
    calib = dict(line.split(':', 1) for line in (folder / 'calib.txt').read_text().splitlines())
    assert sorted(calib) == ['P0', 'P1', 'P2', 'P3', 'Tr']
    assert float(calib['P3'].split()[3]) < 0  # the right camera sits right of camera 0
    assert np.loadtxt(folder / 'times.txt').tolist() == pytest.approx([0.0, 0.1, 0.2])


def test_native_semantickitti_raw_ids_cover_the_19_classes_it_can() -> None:
    mapped = load_taxonomy('semantickitti19').map_raw(SEMANTICKITTI_RAW_OF_NUSCENES16)
    # ignore stays ignore; traffic cones become other-object, which SemanticKITTI ignores.
    assert mapped[0] == 0 and mapped[NUSCENES16.label_of['traffic_cone']] == 0
    assert mapped[NUSCENES16.label_of['driveable_surface']] == 9  # road
    assert mapped[NUSCENES16.label_of['car']] == 1
