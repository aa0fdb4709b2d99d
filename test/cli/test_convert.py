"""``relkd-convert``'s real ``main(argv)``: synthetic drives in the datasets' own layouts,
converted and prepared, give what the same drives recorded as bags directly give."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from relkd_core.cli.convert import main
from relkd_core.cli.prepare import main as prepare_main
from relkd_core.config import save_config
from relkd_core.data.bag import bag_topics, open_bags
from relkd_core.data.prepared import PreparedDataset
from relkd_core.data.preset import load_preset
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.native import SEMANTICKITTI_RAW_OF_NUSCENES16, write_nuscenes
from relkd_core.sim.rig import RIGS
from relkd_core.taxonomy import load_taxonomy


def _prepare(bag: Path, preset: str | Path, out: Path) -> PreparedDataset:
    assert prepare_main(['--bag', str(bag), '--preset', str(preset), '--out', str(out)]) == 0
    return PreparedDataset(out)


def _assert_same_frames(direct: PreparedDataset, converted: PreparedDataset,
                        label_map: np.ndarray | None = None) -> None:
    assert len(direct) == len(converted) > 0
    assert direct.cameras == converted.cameras
    for i in range(len(direct)):
        a, b = direct[i], converted[i]
        np.testing.assert_allclose(b.points, a.points, rtol=0, atol=1e-6)
        assert a.labels is not None and b.labels is not None
        expected = a.labels if label_map is None else label_map[a.labels]
        np.testing.assert_array_equal(b.labels, expected)
        np.testing.assert_array_equal(b.pair_point, a.pair_point)
        np.testing.assert_array_equal(b.pair_camera, a.pair_camera)
        np.testing.assert_allclose(b.pair_uv, a.pair_uv, rtol=0, atol=1e-3)
        assert len(a.pair_point) > 100


def test_convert_nuscenes_round_trip_matches_the_direct_bag(
        nuscenes_root: Path, native_direct_bags: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'bags'
    assert main(['nuscenes', '--dataroot', str(nuscenes_root), '--scenes', 'scene-0061',
                 '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'wrote 1 bags to {out}' in printed and '3 scans (3 labelled), 18 images' in printed
    assert 'relkd-prepare --preset nuscenes-lidarseg --bag' in printed
    preset = load_preset('nuscenes-lidarseg')
    with open_bags([out / 'scene-0061']) as reader:
        assert set(preset.topics()) <= set(bag_topics(reader))
    _assert_same_frames(_prepare(native_direct_bags['nuscenes'], 'synth-nuscenes',
                                 tmp_path / 'direct'),
                        _prepare(out / 'scene-0061', 'nuscenes-lidarseg', tmp_path / 'conv'))


def test_convert_semantickitti_round_trip_matches_the_direct_bag(
        kitti_root: Path, native_direct_bags: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / 'bags'
    assert main(['semantickitti', '--dataroot', str(kitti_root), '--sequences', '08',
                 '--storage', 'sqlite3', '--out', str(out)]) == 0
    assert sorted(p.suffix for p in (out / '08').iterdir()) == ['.db3', '.yaml']
    # The direct bag, read with the same range limits as the semantickitti preset.
    direct_preset = load_preset('synth-kitti')
    direct_preset = dataclasses.replace(direct_preset, lidar=dataclasses.replace(
        direct_preset.lidar, max_range_m=load_preset('semantickitti').lidar.max_range_m))
    save_config(direct_preset, tmp_path / 'direct.yaml')
    # Ground truth travels as SemanticKITTI raw ids and comes back in semantickitti19.
    label_map = load_taxonomy('semantickitti19').map_raw(SEMANTICKITTI_RAW_OF_NUSCENES16)
    _assert_same_frames(_prepare(native_direct_bags['kitti'], tmp_path / 'direct.yaml',
                                 tmp_path / 'direct'),
                        _prepare(out / '08', 'semantickitti', tmp_path / 'conv'), label_map)


def test_convert_semantickitti_lidar_only_sequence_and_raw_labels(
        kitti_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'bags'
    assert main(['semantickitti', '--dataroot', str(kitti_root), '--sequences', '00',
                 '--labels', 'raw', '--out', str(out)]) == 0
    assert 'relkd-prepare --preset semantickitti-lidar' in capsys.readouterr().out
    with open_bags([out / '00']) as reader:
        assert set(bag_topics(reader)) == {'/kitti/velo/pointcloud', '/tf', '/tf_static'}
    raw = np.fromfile(sorted((kitti_root / 'sequences/00/labels').glob('*.label'))[0], '<u4')
    prepared = _prepare(out / '00', 'semantickitti-lidar', tmp_path / 'prepared')
    frame = prepared[0]
    assert frame.labels is not None and len(frame.pair_point) == 0
    # Raw ids kept: every prepared label is one of the scan's raw semantic ids.
    assert set(np.unique(frame.labels)) <= set(np.unique(raw & 0xFFFF).tolist())
    assert 40 in set(frame.labels.tolist())  # road


def test_convert_nuscenes_split_selects_official_scenes(nuscenes_root: Path, tmp_path: Path
                                                         ) -> None:
    assert main(['nuscenes', '--dataroot', str(nuscenes_root), '--split', 'mini_val',
                 '--out', str(tmp_path / 'val')]) == 0
    assert sorted(p.name for p in (tmp_path / 'val').iterdir() if not p.name.startswith('.')
                  ) == ['scene-0103']
    assert main(['nuscenes', '--dataroot', str(nuscenes_root), '--workers', '2',
                 '--out', str(tmp_path / 'all')]) == 0
    assert sorted(p.name for p in (tmp_path / 'all').iterdir() if not p.name.startswith('.')
                  ) == ['scene-0061', 'scene-0103']


def test_convert_nuscenes_sweeps_are_unlabelled(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    drive = SyntheticDrive(RIGS['nuscenes'].with_image_size(32, 24), 3, 6)
    root = write_nuscenes([('scene-0001', drive)], tmp_path / 'nuscenes', keyframe_every=2)
    assert main(['nuscenes', '--dataroot', str(root), '--out', str(tmp_path / 'keys')]) == 0
    assert '2 scans (2 labelled), 12 images' in capsys.readouterr().out
    assert main(['nuscenes', '--dataroot', str(root), '--sweeps',
                 '--out', str(tmp_path / 'all')]) == 0
    assert '3 scans (3 labelled), 18 images' in capsys.readouterr().out
    prepared = _prepare(tmp_path / 'all' / 'scene-0001', 'nuscenes-lidarseg', tmp_path / 'p')
    labels = [prepared[i].labels for i in range(3)]
    assert all(lab is not None for lab in labels)
    assert [bool(np.any(lab)) for lab in labels] == [True, False, True]


def _drop(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-4])


def _first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def _no_tr(calib: Path) -> None:
    calib.write_text(''.join(line + '\n' for line in calib.read_text().splitlines()
                             if not line.startswith('Tr')))


BAD_INPUTS = {
    'missing table': ('nuscenes', lambda root: _drop(root / 'v1.0-mini/sample_data.json'),
                      [], 'v1.0-mini/sample_data.json: missing table'),
    'missing lidarseg folder': ('nuscenes', lambda root: _drop(root / 'lidarseg'), [],
                                'lidarseg/v1.0-mini: lidarseg folder missing'),
    'lidarseg of the wrong length': (
        'nuscenes', lambda root: _truncate(_first(root / 'lidarseg/v1.0-mini', '*.bin')), [],
        r'_lidarseg.bin: \d+ labels for \d+ points in scene-\d+__LIDAR_TOP__\d+.pcd.bin'),
    'unknown scene': ('nuscenes', lambda root: None, ['--scenes', 'scene-9999'],
                      r"scene.json: no scene\(s\) \['scene-9999'\]"),
    'calib without Tr': ('kitti', lambda root: _no_tr(root / 'sequences/08/calib.txt'),
                         ['--sequences', '08'], r'08/calib.txt: no Tr line \(velodyne'),
    'label of the wrong length': (
        'kitti', lambda root: _truncate(_first(root / 'sequences/08/labels', '*.label')),
        ['--sequences', '08'], r'000000.label: \d+ labels for \d+ points in 000000.bin'),
    'unknown sequence': ('kitti', lambda root: None, ['--sequences', '05'],
                         r"sequences/05: no such sequence \(found: \['00', '08'\]\)"),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_convert_bad_input_is_one_line_exit_2_and_no_bag(
        case: str, nuscenes_root: Path, kitti_root: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dataset, damage, extra, message = BAD_INPUTS[case]
    root = tmp_path / 'data'
    shutil.copytree(nuscenes_root if dataset == 'nuscenes' else kitti_root, root)
    damage(root)
    out = tmp_path / 'out' / 'bags'
    out.parent.mkdir()
    name = 'nuscenes' if dataset == 'nuscenes' else 'semantickitti'
    code = main([name, '--dataroot', str(root), '--out', str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith('relkd-convert: error: ')
    assert re.search(message, err), err
    assert list(out.parent.iterdir()) == []  # no bag, no leftover


def test_convert_never_replaces_a_folder_it_did_not_write(nuscenes_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    out = tmp_path / 'notes'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert main(['nuscenes', '--dataroot', str(nuscenes_root), '--out', str(out),
                 '--overwrite']) == 2
    assert 'never replaced' in capsys.readouterr().err
    assert (out / 'keep.txt').read_text() == 'mine'


def test_convert_overwrite_replaces_its_own_output(nuscenes_root: Path, tmp_path: Path) -> None:
    out = tmp_path / 'bags'
    args = ['nuscenes', '--dataroot', str(nuscenes_root), '--scenes', 'scene-0103',
            '--out', str(out)]
    assert main(args) == 0
    assert main(args) == 2
    assert main([*args[:-2], '--scenes', 'scene-0061', '--out', str(out), '--overwrite']) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.')) == [
        'scene-0061']
