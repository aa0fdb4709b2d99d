"""relkd_core.datasets.nuscenes on nuScenes-layout folders written by the synthetic world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relkd_core.datasets import DatasetError, ImageReading, LidarReading
from relkd_core.datasets.nuscenes import NuScenes, official_split, select_scenes
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.rig import RIGS


def test_nuscenes_official_splits() -> None:
    assert official_split('mini_val') == ('scene-0103', 'scene-0916')
    assert len(official_split('train')) == 700
    assert len(official_split('val')) == len(official_split('test')) == 150
    assert not set(official_split('train')) & set(official_split('val'))
    with pytest.raises(DatasetError, match="unknown nuScenes split 'minival'"):
        official_split('minival')


def test_nuscenes_scene_readings_follow_the_drive(nuscenes_root: Path) -> None:
    nusc = NuScenes(nuscenes_root)
    assert nusc.labelled and nusc.scene_names() == ['scene-0061', 'scene-0103']
    scene = nusc.scene('scene-0061')
    assert scene.cameras[0].image_topic == '/CAM_BACK/image_rect_compressed'
    readings = list(scene.readings())
    assert [r.t_ns for r in readings] == sorted(r.t_ns for r in readings)
    scans = [r for r in readings if isinstance(r, LidarReading)]
    images = [r for r in readings if isinstance(r, ImageReading)]
    assert len(scans) == 3 and len(images) == 18
    drive = SyntheticDrive(RIGS['nuscenes'].with_image_size(64, 40), 3, 3)
    frame = drive.frame(2)
    np.testing.assert_array_equal(scans[2].points['label'], frame.points['label'])
    np.testing.assert_allclose(scans[2].T_fixed_moving, frame.ego_poses[frame.t_ns], atol=1e-12)
    assert images[0].data[:2] == b'\xff\xd8' and (images[0].width, images[0].height) == (64, 40)
    mounts = {child: T for _, child, T in scene.static_transforms}
    np.testing.assert_allclose(mounts['CAM_FRONT'],
                               RIGS['nuscenes'].cameras[0].T_base_optical(), atol=1e-12)


def test_nuscenes_without_labels(nuscenes_root: Path) -> None:
    scene = NuScenes(nuscenes_root, labels=False).scene('scene-0103')
    scan = next(r for r in scene.readings() if isinstance(r, LidarReading))
    assert 'label' not in (scan.points.dtype.names or ())


def test_nuscenes_select_scenes(nuscenes_root: Path) -> None:
    nusc = NuScenes(nuscenes_root)
    assert select_scenes(nusc, split='mini_train') == ['scene-0061']
    assert select_scenes(nusc, scenes=['scene-0103']) == ['scene-0103']
    with pytest.raises(DatasetError, match=r"none of the 150 scenes of split 'test'"):
        select_scenes(nusc, split='test')


def test_nuscenes_missing_version_folder_lists_what_is_there(nuscenes_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"v1.0-trainval: no such version folder \(found: "
                                           r"\['v1.0-mini'\]\)"):
        NuScenes(nuscenes_root, 'v1.0-trainval')
