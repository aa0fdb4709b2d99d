"""Tests for relkd_core.data.preset: shipped presets load, bad presets fail usefully."""

from __future__ import annotations

from pathlib import Path

import pytest

from relkd_core.data.preset import load_preset
from relkd_core.errors import ConfigError
from relkd_core.resources import config_dirs
from relkd_core.taxonomy import load_taxonomy

SHIPPED = sorted(p.stem for p in (config_dirs()[0] / 'presets').glob('*.yaml'))


def test_preset_every_required_preset_ships() -> None:
    assert {'synth-nuscenes', 'synth-kitti', 'nuscenes', 'kitti', 'nuscenes-lidarseg',
            'semantickitti', 'semantickitti-lidar'} <= set(SHIPPED)


@pytest.mark.parametrize('name', SHIPPED)
def test_preset_shipped_preset_loads_and_names_itself(name: str) -> None:
    preset = load_preset(name)
    assert preset.name == name
    assert preset.cameras or name.endswith('-lidar')  # lidar-only presets have none
    load_taxonomy(preset.taxonomy)


def test_preset_kitti_reads_intensity_field_i() -> None:
    preset = load_preset('kitti')
    assert (preset.lidar.topic, preset.lidar.intensity_field) == ('/kitti/velo/pointcloud', 'i')
    assert all(c.intrinsics == 'rectified' for c in preset.cameras)


def test_preset_unknown_name_lists_shipped_presets() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'nuscene'.*'nuscenes'"):
        load_preset('nuscene')


def test_preset_user_yaml_typo_suggests_key(tmp_path: Path) -> None:
    path = tmp_path / 'mine.yaml'
    path.write_text('name: mine\nlidar: {topic: /points, intensity_feld: i}\ncameras: []\n')
    with pytest.raises(ConfigError, match=r"lidar\.intensity_feld.*intensity_field"):
        load_preset(path)


def test_preset_duplicate_camera_names_rejected(tmp_path: Path) -> None:
    path = tmp_path / 'dup.yaml'
    cam = '{name: a, image_topic: /a/image, info_topic: /a/info}'
    path.write_text(f'name: dup\nlidar: {{topic: /points}}\ncameras: [{cam}, {cam}]\n')
    with pytest.raises(ConfigError, match=r"camera names must be unique, got \['a', 'a'\]"):
        load_preset(path)


def test_preset_override_changes_tolerance() -> None:
    preset = load_preset('synth-kitti', ('max_dt_ns=1000',))
    assert preset.max_dt_ns == 1000
