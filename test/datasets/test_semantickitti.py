"""relkd_core.datasets.semantickitti on SemanticKITTI-layout folders written by the
synthetic world."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from relkd_core.datasets import DatasetError, ImageReading, LidarReading
from relkd_core.datasets.semantickitti import SemanticKitti
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS


def test_semantickitti_sequence_geometry_follows_the_drive(kitti_root: Path) -> None:
    sequence = SemanticKitti(kitti_root).sequence('08')
    assert [c.name for c in sequence.cameras] == ['camera_color_left', 'camera_color_right']
    readings = list(sequence.readings())
    scans = [r for r in readings if isinstance(r, LidarReading)]
    images = [r for r in readings if isinstance(r, ImageReading)]
    assert len(scans) == 3 and len(images) == 6 and images[0].format == 'png'
    rig = RIGS['kitti']
    drive = SyntheticDrive(rig.with_image_size(96, 32), 3, 4)
    # world is the velodyne frame of scan 0: poses are relative to it.
    T_base_velo = rig.lidar.mount.T_base_sensor()
    first, last = drive.frame(0), drive.frame(2)
    expected = (np.linalg.inv(first.ego_poses[first.t_ns] @ T_base_velo)
                @ last.ego_poses[last.t_ns] @ T_base_velo)
    np.testing.assert_allclose(scans[2].T_fixed_moving, expected, atol=1e-9)
    mounts = {child: T for _, child, T in sequence.static_transforms}
    np.testing.assert_allclose(mounts['camera_color_right'],
                               np.linalg.inv(T_base_velo) @ rig.cameras[1].T_base_optical(),
                               atol=1e-9)
    assert images[0].width == 96 and images[0].height == 32
    assert scans[1].t_ns == 100_000_000


def test_semantickitti_selects_splits(kitti_root: Path) -> None:
    kitti = SemanticKitti(kitti_root)
    assert kitti.sequence_names() == ['00', '08']
    assert kitti.select(split='val') == ['08']
    assert kitti.select(split='train') == ['00']
    with pytest.raises(DatasetError, match=r'none of the sequences of split .test.'):
        kitti.select(split='test')


def test_semantickitti_without_label_folder_has_no_label_field(kitti_root: Path,
                                                              tmp_path: Path) -> None:
    root = tmp_path / 'kitti'
    shutil.copytree(kitti_root / 'sequences' / '00', root / 'sequences' / '00')
    shutil.rmtree(root / 'sequences' / '00' / 'labels')
    sequence = SemanticKitti(root).sequence('00')
    assert not sequence.labelled and sequence.cameras == ()
    scan = next(iter(sequence.readings()))
    assert isinstance(scan, LidarReading) and scan.points.dtype.names == (
        'x', 'y', 'z', 'intensity')


@pytest.mark.parametrize(('damage', 'message'), [
    (lambda f: (f / 'poses.txt').write_text('1 0 0 0 0 1 0 0 0 0 1 0\n'),
     r'poses.txt: 1 lines for 3 scans'),
    (lambda f: (f / 'times.txt').unlink(), r'times.txt: missing times file'),
    (lambda f: (f / 'calib.txt').write_text('Tr: 1 2 3\n'),
     r'calib.txt: Tr has 3 values, expected 12'),
    (lambda f: (f / 'image_3' / '000002.png').unlink(),
     r'image_3/000002.png: missing image \(1 of 3 scans have none\)'),
    (lambda f: shutil.rmtree(f / 'velodyne'), r'08/velodyne: missing velodyne folder'),
])
def test_semantickitti_bad_sequence_names_the_file(kitti_root: Path, tmp_path: Path,
                                                   damage, message: str) -> None:
    root = tmp_path / 'kitti'
    shutil.copytree(kitti_root / 'sequences' / '08', root / 'sequences' / '08')
    damage(root / 'sequences' / '08')
    with pytest.raises(DatasetError, match=message):
        SemanticKitti(root).sequence('08')
