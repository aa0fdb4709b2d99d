"""``relkd-synth`` end to end through its real ``main(argv)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from relkd_core.cli.synth import main
from relkd_core.data.bag import open_bags
from relkd_core.outputs import MARKER_NAME, output_kind
from relkd_core.sim.record import SYNTH_BAG_KIND


def test_synth_main_writes_bag_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    out = tmp_path / 'drive'
    code = main(['--out', str(out), '--rig', 'kitti', '--frames', '2', '--seed', '3',
                 '--storage', 'sqlite3', '--image-format', 'jpeg', '--image-size', '96x32'])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'wrote' in printed and '2 frames' in printed
    assert '/<camera>/image_raw/compressed' in printed and '× 2 cameras' in printed
    assert 'camera_color_left, camera_color_right' in printed
    assert 'driveable_surface' in printed
    reader = open_bags([out])
    try:
        assert reader.topics['/velodyne_points'].msgcount == 2
        assert reader.topics['/camera_color_left/image_raw/compressed'].msgcount == 2
    finally:
        reader.close()


def test_synth_overwrite_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / 'drive'
    assert main(['--out', str(out), '--frames', '1', '--no-cameras']) == 0
    assert main(['--out', str(out), '--frames', '2', '--no-cameras', '--overwrite']) == 0
    reader = open_bags([out])
    try:
        assert reader.topics['/LIDAR_TOP'].msgcount == 2
    finally:
        reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['drive']
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, 'drive.mcap', 'metadata.yaml']
    assert output_kind(out) == SYNTH_BAG_KIND


@pytest.mark.parametrize(('args', 'match'), [
    (['--rig', 'velodyne'], "unknown rig 'velodyne'"),
    (['--frames', '0'], 'must be at least 1'),
    (['--frames', '-3'], 'must be at least 1'),
    (['--frames', 'many'], 'expected a whole number'),
    (['--seed', '-1'], 'must be non-negative'),
    (['--storage', 'rosbag1'], 'invalid choice'),
    (['--image-size', '400'], 'WIDTHxHEIGHT'),
])
def test_synth_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    args: list[str], match: str) -> None:
    out = tmp_path / 'drive'
    try:
        code = main(['--out', str(out), *args])
    except SystemExit as exit_:  # argparse exits by itself
        code = int(exit_.code or 0)
    assert code == 2
    assert match in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_synth_unwritable_out_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    assert main(['--out', str(blocker / 'drive'), '--frames', '1']) == 2
    assert 'a_file is a file, not a folder' in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ['a_file']


def test_synth_existing_out_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['--out', str(tmp_path / 'drive'), '--frames', '1', '--no-cameras']) == 0
    capsys.readouterr()
    assert main(['--out', str(tmp_path / 'drive'), '--frames', '1']) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'relkd-synth: error: --out {tmp_path / "drive"} already exists (a synth-bag); choose a '
        'new path or pass --overwrite')


def test_synth_overwrite_never_replaces_what_it_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'thesis.tex').write_text('years of work')
    (tmp_path / 'file.txt').write_text('a file')
    for out in (notes, tmp_path / 'file.txt'):
        assert main(['--out', str(out), '--frames', '1', '--no-cameras', '--overwrite']) == 2
        assert 'choose a new path' in capsys.readouterr().err
    assert (notes / 'thesis.tex').read_text() == 'years of work'
    assert (tmp_path / 'file.txt').read_text() == 'a file'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file.txt', 'notes']


def test_cli_synth_layout_writes_dataset_folders(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    common = ['--frames', '2', '--image-size', '32x24', '--seed', '1']
    assert main(['--layout', 'nuscenes', '--out', str(tmp_path / 'ns'), *common]) == 0
    assert (tmp_path / 'ns' / 'v1.0-mini' / 'sample_data.json').is_file()
    assert len(list((tmp_path / 'ns' / 'samples' / 'LIDAR_TOP').glob('*.pcd.bin'))) == 2
    kitti = ['--layout', 'semantickitti', '--rig', 'kitti', '--out', str(tmp_path / 'sk'), *common]
    assert main([*kitti, '--scene-name', '03']) == 0
    assert main([*kitti, '--scene-name', '04', '--no-cameras']) == 0  # a second sequence
    assert sorted(p.name for p in (tmp_path / 'sk' / 'sequences' / '03').iterdir()) == [
        'calib.txt', 'image_2', 'image_3', 'labels', 'poses.txt', 'times.txt', 'velodyne']
    assert not (tmp_path / 'sk' / 'sequences' / '04' / 'image_2').exists()
    assert 'in the semantickitti layout' in capsys.readouterr().out
    assert main([*kitti, '--scene-name', '03']) == 1  # an existing sequence is never replaced
    assert 'sequences/03 already exists' in capsys.readouterr().err
