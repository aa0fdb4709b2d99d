"""Fixtures shared across the test tree: tiny synthetic bags (rendered once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS


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
    from relkd_core.cli.prepare import _camera_teacher_spec
    from relkd_core.data.prepare import PrepareOptions, prepare_dataset
    from relkd_core.data.preset import load_preset

    out = tmp_path_factory.mktemp('prepared') / 'nuscenes'
    spec = _camera_teacher_spec('synthetic', None)
    prepare_dataset([tiny_bags[('nuscenes', 'mcap')]], load_preset('synth-nuscenes'), out,
                    teacher_factory=lambda: spec,
                    options=PrepareOptions(frames_per_shard=2, superpixels=40))
    return out
