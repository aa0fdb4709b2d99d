"""Rig presets and custom rig files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relkd_core.errors import ConfigError
from relkd_core.geometry.projection import project_points
from relkd_core.geometry.se3 import invert_transform, transform_points
from relkd_core.sim.rig import RIGS, load_rig


def test_rig_presets_match_their_datasets() -> None:
    nus, kitti = RIGS['nuscenes'], RIGS['kitti']
    assert (nus.lidar.num_beams, nus.frame_rate_hz, len(nus.cameras)) == (32, 20.0, 6)
    assert (kitti.lidar.num_beams, kitti.frame_rate_hz, len(kitti.cameras)) == (64, 10.0, 2)
    assert np.rad2deg(nus.lidar.elevations_rad()[[0, -1]]) == pytest.approx([-30.67, 10.67])
    assert np.rad2deg(kitti.lidar.elevations_rad()[[0, -1]]) == pytest.approx([-24.8, 2.0])
    assert kitti.lidar.mount.z_m != nus.lidar.mount.z_m


def test_rig_camera_looks_along_its_yaw() -> None:
    # A point 10 m out along each camera's mounting yaw projects to the principal point.
    for camera in RIGS['nuscenes'].cameras:
        yaw = np.deg2rad(camera.mount.yaw_deg)
        target = np.array([camera.mount.x_m + 10 * np.cos(yaw),
                           camera.mount.y_m + 10 * np.sin(yaw), camera.mount.z_m])
        xyz = transform_points(invert_transform(camera.T_base_optical()), target[None])
        uv, visible = project_points(xyz, camera.K(), camera.width_px, camera.height_px)
        assert visible[0]
        np.testing.assert_allclose(uv[0], camera.K()[:2, 2], atol=1e-9)


def test_rig_load_custom_yaml(tmp_path: Path) -> None:
    path = tmp_path / 'rig.yaml'
    path.write_text('name: mine\nframe_rate_hz: 5\nlidar:\n  num_beams: 16\n'
                    'cameras:\n  - name: front\n    width_px: 64\n    height_px: 48\n')
    rig = load_rig(path)
    assert rig.lidar.num_beams == 16 and rig.cameras[0].width_px == 64
    assert rig.frame_rate_hz == 5.0


@pytest.mark.parametrize(('text', 'match'), [
    ('name: r\nlidar:\n  num_beam: 16\n', "did you mean 'num_beams'"),
    ('name: r\nlidar:\n  elevation_min_deg: 5.0\n  elevation_max_deg: 1.0\n',
     'elevation_min_deg'),
    ('name: r\ncameras:\n  - name: a\n  - name: a\n', 'unique'),
])
def test_rig_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / 'rig.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_rig(path)


def test_rig_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown rig 'velodyne'"):
        load_rig('velodyne')
