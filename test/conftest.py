"""Fixtures shared across the test tree: tiny synthetic bags (rendered once per session), and a
cache folder of the session's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS


@pytest.fixture(scope='session', autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``RELKD_CACHE_DIR`` of this session (and of the processes its tests start): the
    session fills it, as a user's runs fill theirs, and the user's own is left alone."""
    folder = tmp_path_factory.mktemp('relkd_cache')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('RELKD_CACHE_DIR', str(folder))
        yield folder


@pytest.fixture(scope='session')
def tiny_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """3-frame bags of each rig in each storage; the sqlite3 ones carry JPEG images."""
    root = tmp_path_factory.mktemp('bags')
    bags = {}
    for rig in ('nuscenes', 'kitti'):
        for storage in ('mcap', 'sqlite3'):
            path = root / f'{rig}_{storage}'
            image_format = 'jpeg' if storage == 'sqlite3' else 'raw'
            record_drive(SyntheticDrive(RIGS[rig], 3, seed=7), path, storage=storage,
                         image_format=image_format)
            bags[(rig, storage)] = path
    return bags


@pytest.fixture(scope='session')
def tiny_prepared(tiny_bags: dict[tuple[str, str], Path],
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-frame nuScenes-rig bag prepared with the synthetic teacher and 40 superpixels."""
    from relkd_core.data.prepare import PrepareOptions, prepare_dataset
    from relkd_core.data.preset import load_preset
    from relkd_core.data.teacher_adapter import camera_teacher_spec

    out = tmp_path_factory.mktemp('prepared') / 'nuscenes'
    spec = camera_teacher_spec('synthetic', None)
    prepare_dataset([tiny_bags[('nuscenes', 'mcap')]], load_preset('synth-nuscenes'), out,
                    teacher_factory=lambda: spec,
                    options=PrepareOptions(frames_per_shard=2, superpixels=40))
    return out


# --- the paper's datasets in their own layouts, written by the synthetic world --------------
# (no real dataset file is ever used: their licences are non-commercial)

#: (rig, frames, seed, image size) of the native-layout drives and their direct bags.
NATIVE_DRIVES = {'nuscenes': ('nuscenes', 3, 3, (64, 40)), 'kitti': ('kitti', 3, 4, (96, 32))}


def _native_drive(name: str, *, cameras: bool = True) -> SyntheticDrive:
    rig, frames, seed, size = NATIVE_DRIVES[name]
    return SyntheticDrive(RIGS[rig].with_image_size(*size), frames, seed, cameras=cameras)


@pytest.fixture(scope='session')
def native_direct_bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The native-layout drives recorded as bags directly (what conversion must reproduce)."""
    root = tmp_path_factory.mktemp('native_direct')
    bags = {}
    for name in NATIVE_DRIVES:
        record_drive(_native_drive(name), root / name)
        bags[name] = root / name
    return bags


@pytest.fixture(scope='session')
def nuscenes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nuScenes-layout dataset (v1.0-mini, every scan a keyframe): scene-0061 (the
    'nuscenes' native drive) and scene-0103 (2 scans)."""
    from relkd_core.sim.native import write_nuscenes

    other = SyntheticDrive(RIGS['nuscenes'].with_image_size(32, 24), 2, 5)
    return write_nuscenes([('scene-0061', _native_drive('nuscenes')), ('scene-0103', other)],
                          tmp_path_factory.mktemp('native') / 'nuscenes')


@pytest.fixture(scope='session')
def kitti_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SemanticKITTI-layout dataset: sequence 08 (the 'kitti' native drive, both colour
    cameras) and sequence 00 (the same drive, lidar only)."""
    from relkd_core.sim.native import write_semantickitti

    root = tmp_path_factory.mktemp('native') / 'semantickitti'
    write_semantickitti(_native_drive('kitti'), root, '08')
    write_semantickitti(_native_drive('kitti', cameras=False), root, '00')
    return root
