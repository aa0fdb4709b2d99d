"""Smoke tests of ``relkd-prepare``'s real ``main(argv)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bagtools import rewrite_bag

from relkd_core.cli.prepare import main
from relkd_core.data.prepared import PreparedDataset


def test_cli_prepare_writes_a_dataset_and_summary(tiny_bags: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'prepared'
    code = main(['--bag', str(tiny_bags[('nuscenes', 'sqlite3')]), '--preset', 'synth-nuscenes',
                 '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f'{out}: 3 frames in 1 shards (1 written now, 0 already there)' in printed
    assert f'complete: manifest written to {out / "manifest.json"}' in printed
    assert len(PreparedDataset(out)) == 3
    assert main(['--bag', str(tiny_bags[('nuscenes', 'sqlite3')]), '--preset',
                 'synth-nuscenes', '--out', str(out)]) == 0
    assert '(0 written now, 1 already there)' in capsys.readouterr().out


def test_cli_prepare_fails_when_nothing_is_usable(tiny_bags: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def all_nan(topic: str, t_ns: int, msg: Any) -> Any:
        if topic == '/velodyne_points':
            data = np.frombuffer(msg.data, np.uint8).copy().reshape(-1, msg.point_step)
            data[:, 0:4] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
            msg.data = data.reshape(-1)
        return msg

    bag = rewrite_bag(tiny_bags[('kitti', 'mcap')], tmp_path / 'nan', edit=all_nan)
    code = main(['--bag', str(bag), '--preset', 'synth-kitti', '--out', str(tmp_path / 'o')])
    captured = capsys.readouterr()
    assert code == 1
    assert 'dropped frames: 3 only NaN points' in captured.out
    assert captured.err.splitlines()[-1] == (
        'relkd-prepare: error: no usable frame in the given bags: dropped frames: 3 only NaN '
        'points; no dataset written')
    assert not (tmp_path / 'o').exists()  # no folder that looks like a dataset


def test_cli_prepare_unreadable_bag_leaves_no_manifest(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'metadata.yaml').write_text('not: a bag\n')
    out = tmp_path / 'o'
    out.mkdir()  # an existing empty folder: kept, but it gets no manifest
    code = main(['--bag', str(broken), '--preset', 'synth-kitti', '--out', str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count('\n') == 1 and err.startswith(
        f'relkd-prepare: error: no usable frame in the given bags: cannot open bag {broken}')
    assert not (out / 'manifest.json').exists()


def test_cli_prepare_unknown_preset_is_usage_error(tiny_bags: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(['--bag', str(tiny_bags[('kitti', 'mcap')]), '--preset', 'kiti',
                 '--out', str(tmp_path)])
    assert code == 2
    assert "--preset: unknown preset 'kiti'" in capsys.readouterr().err


def test_cli_prepare_missing_bag_is_usage_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(['--bag', str(tmp_path / 'nope'), '--preset', 'synth-kitti',
                 '--out', str(tmp_path / 'o')])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'relkd-prepare: error: --bag {tmp_path / "nope"}: no such bag file or folder')
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_prepare_refuses_a_folder_it_did_not_write(tiny_bags: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / 'notes.txt').write_text('mine')
    code = main(['--bag', str(tiny_bags[('kitti', 'mcap')]), '--preset', 'synth-kitti',
                 '--out', str(tmp_path)])
    assert code == 2
    assert 'a folder that relkd did not write, not a prepared-dataset' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']


def test_cli_prepare_superpixels_are_stored(tiny_bags: dict, tmp_path: Path) -> None:
    out = tmp_path / 'prepared'
    assert main(['--bag', str(tiny_bags[('kitti', 'sqlite3')]), '--preset', 'synth-kitti',
                 '--superpixels', '40', '--out', str(out)]) == 0
    dataset = PreparedDataset(out)
    assert dataset.superpixels == 40
    frame = dataset[0]
    assert frame.pair_superpixel is not None
    assert frame.pair_superpixel.shape == frame.pair_point.shape
    # Two cameras of about 40 segments each, most hit by some lidar point.
    assert 40 <= frame.pair_superpixel.max() + 1 <= 2 * 40 * 1.5


@pytest.mark.parametrize('count', ['0', '-1', 'many'])
def test_cli_prepare_bad_superpixels_argument(count: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(['--bag', 'x', '--preset', 'synth-kitti', '--out', str(tmp_path),
              '--superpixels', count])
    assert exit_info.value.code == 2
    assert 'argument --superpixels' in capsys.readouterr().err


@pytest.mark.parametrize('shard', ['2/2', 'a/b', '1'])
def test_cli_prepare_bad_shard_argument(shard: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(['--bag', 'x', '--preset', 'synth-kitti', '--out', str(tmp_path), '--shard', shard])
    assert exit_info.value.code == 2


def test_cli_prepare_synthetic_teacher_grids_match_the_teacher(tiny_bags: dict, tmp_path: Path
                                                               ) -> None:
    from relkd_core.data.frames import BagSource
    from relkd_core.data.preset import load_preset
    from relkd_core.teachers import TeacherImage, build_teacher
    from relkd_core.teachers.evaluate import zero_shot_points
    from relkd_core.teachers.vocabulary import Vocabulary

    bag = tiny_bags[('kitti', 'mcap')]
    out = tmp_path / 'prepared'
    assert main(['--bag', str(bag), '--preset', 'synth-kitti', '--teacher', 'synthetic',
                 '--out', str(out)]) == 0
    dataset = PreparedDataset(out)
    teacher = build_teacher('synthetic')
    assert dataset.teacher_id == teacher.teacher_id and dataset.feature_dim == 384
    source = BagSource(bag, load_preset('synth-kitti'))
    plan, _ = source.plan()
    frame = next(iter(source.read(plan[:1]))).frame
    assert frame is not None
    camera = frame.cameras[0]
    expected = teacher.image_features([TeacherImage(
        rgb=camera.rgb, camera=camera.name, t_ns=camera.t_ns, semantic=camera.semantic,
        instance=camera.instance)])[0].features
    stored = dataset.image_grid(0, camera.name)
    assert stored is not None and stored.shape == expected.shape
    np.testing.assert_allclose(stored.astype(np.float32), expected, atol=2e-3)
    # The teacher's zero-shot on projected lidar points, from the stored grids.
    item = dataset[0]
    assert item.pair_features is not None and item.labels is not None
    text = teacher.text_features(Vocabulary.default())
    result = zero_shot_points(item.pair_features, item.labels[item.pair_point], text,
                              Vocabulary.default())
    assert 0.15 < result.miou < 0.7
