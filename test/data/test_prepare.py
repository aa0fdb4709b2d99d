"""Tests for relkd_core.data.prepare and .prepared: shards, manifest, resume, Dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from relkd_core.data.prepare import PrepareOptions, TeacherSpec, prepare_dataset
from relkd_core.data.prepared import PreparedDataset, rank_indices
from relkd_core.data.preset import load_preset
from relkd_core.errors import DataError
from relkd_core.types import CameraFrame

CASES = [('nuscenes', 'mcap'), ('nuscenes', 'sqlite3'), ('kitti', 'mcap'), ('kitti', 'sqlite3')]


def _manifest(root: Path) -> str:
    return (root / 'manifest.json').read_text()


@pytest.mark.parametrize(('rig', 'storage'), CASES)
def test_prepare_pairs_agree_with_ground_truth(tiny_bags: dict, tmp_path: Path, rig: str,
                                               storage: str) -> None:
    # mcap bags carry raw rgb8 images, sqlite3 bags JPEG.
    report = prepare_dataset([tiny_bags[(rig, storage)]], load_preset(f'synth-{rig}'), tmp_path)
    assert report.complete and report.frames_written == 3
    dataset = PreparedDataset(tmp_path)
    agree = total = 0
    for i in range(len(dataset)):
        frame = dataset[i]
        assert frame.labels is not None and frame.pair_pixel_label is not None
        point_labels = frame.labels[frame.pair_point]
        labelled = point_labels != 0
        agree += int((point_labels[labelled] == frame.pair_pixel_label[labelled]).sum())
        total += int(labelled.sum())
        assert frame.points[:, 3].min() >= 0.0 and frame.points[:, 3].max() <= 1.0
    assert total > 5_000
    assert agree / total >= 0.95


def test_prepare_manifest_counts_and_checksums(tiny_bags: dict, tmp_path: Path) -> None:
    report = prepare_dataset([tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'),
                             tmp_path, options=PrepareOptions(frames_per_shard=2))
    manifest = json.loads(_manifest(tmp_path))
    assert [s['frames'] for s in manifest['shards']] == [2, 1]
    assert manifest['counts']['frames'] == 3 == report.frames_written
    assert manifest['counts']['pairs'] == report.pairs > 0
    assert manifest['cameras'] == ['camera_color_left', 'camera_color_right']
    assert manifest['teacher'] is None
    assert manifest['superpixels'] is None
    assert PreparedDataset(tmp_path)[0].pair_superpixel is None
    for shard in manifest['shards']:
        for name, digest in shard['checksums'].items():
            data = (tmp_path / 'shards' / shard['name'] / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest


class _CameraTeacher:
    """A stand-in teacher: every cell of a camera's 3×4 grid is one-hot on the camera index."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def __call__(self, cameras: Sequence[CameraFrame]) -> list[np.ndarray]:
        grids = []
        for camera in cameras:
            grid = np.zeros((3, 4, 8), dtype=np.float32)
            grid[..., self.names.index(camera.name)] = 1.0
            grids.append(grid)
        return grids


def test_prepare_teacher_grids_are_stored_and_sampled_at_pairs(tiny_bags: dict,
                                                               tmp_path: Path) -> None:
    preset = load_preset('synth-nuscenes')
    names = [c.name for c in preset.cameras]
    spec = TeacherSpec('one-hot-camera', 8, _CameraTeacher(names))
    prepare_dataset([tiny_bags[('nuscenes', 'mcap')]], preset, tmp_path,
                    teacher_factory=lambda: spec)
    dataset = PreparedDataset(tmp_path, pairs_per_frame=500)
    assert dataset.teacher_id == 'one-hot-camera' and dataset.feature_dim == 8
    frame = dataset[1]
    assert frame.pair_features is not None and frame.pair_features.shape == (500, 8)
    np.testing.assert_allclose(frame.pair_features[np.arange(500), frame.pair_camera], 1.0,
                               atol=1e-3)
    grid = dataset.image_grid(1, 'CAM_BACK')
    assert grid is not None and grid.dtype == np.float16 and grid.shape == (3, 4, 8)


def test_prepare_pairs_per_frame_subset_is_reproducible(tiny_bags: dict, tmp_path: Path) -> None:
    prepare_dataset([tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'), tmp_path)
    full = PreparedDataset(tmp_path)[0]
    a, b = (PreparedDataset(tmp_path, pairs_per_frame=100, seed=3)[0] for _ in range(2))
    np.testing.assert_array_equal(a.pair_point, b.pair_point)
    assert set(a.pair_point.tolist()) <= set(full.pair_point.tolist())
    other = PreparedDataset(tmp_path, pairs_per_frame=100, seed=3)
    other.set_epoch(1)
    assert not np.array_equal(other[0].pair_point, a.pair_point)


def test_prepare_rank_indices_partition_frames() -> None:
    shares = [rank_indices(10, r, 4, seed=1, epoch=2) for r in range(4)]
    assert all(len(s) == 3 for s in shares)
    assert sorted(i for s in shares for i in s[:2]) == sorted({i for s in shares for i in s[:2]})
    assert set().union(*map(set, shares)) == set(range(10))
    assert shares != [rank_indices(10, r, 4, seed=1, epoch=3) for r in range(4)]
    with pytest.raises(DataError, match=r'rank 4 is not in \[0, world_size=4\)'):
        rank_indices(10, 4, 4)


def test_prepare_dataset_splits_across_ranks_and_loader_workers(tiny_bags: dict,
                                                                tmp_path: Path) -> None:
    prepare_dataset([tiny_bags[('kitti', 'mcap')], tiny_bags[('kitti', 'sqlite3')]],
                    load_preset('synth-kitti'), tmp_path,
                    options=PrepareOptions(frames_per_shard=2))
    dataset = PreparedDataset(tmp_path)
    assert len(dataset) == 6
    seen = []
    for rank in range(2):
        subset = Subset(dataset, rank_indices(len(dataset), rank, 2, seed=0))
        loader = DataLoader(subset, batch_size=None, num_workers=2,
                            collate_fn=lambda f: (f.key, torch.from_numpy(f.points).shape[0]))
        seen.extend(key for key, _ in loader)
    assert sorted(seen) == sorted(dataset[i].key for i in range(6))
    assert {k.split(':')[0] for k in seen} == {'0', '1'}


@pytest.mark.slow
def test_prepare_shard_groups_and_workers_give_the_same_manifest(tiny_bags: dict,
                                                                tmp_path: Path) -> None:
    bag, preset = tiny_bags[('kitti', 'mcap')], load_preset('synth-kitti')
    prepare_dataset([bag], preset, tmp_path / 'one', options=PrepareOptions(frames_per_shard=1))
    first = prepare_dataset([bag], preset, tmp_path / 'split',
                            options=PrepareOptions(frames_per_shard=1, shard_group=(0, 2)))
    assert not first.complete and not (tmp_path / 'split' / 'manifest.json').exists()
    second = prepare_dataset([bag], preset, tmp_path / 'split',
                             options=PrepareOptions(frames_per_shard=1, shard_group=(1, 2)))
    assert second.complete and second.shards_written == 1
    prepare_dataset([bag], preset, tmp_path / 'pool',
                    options=PrepareOptions(frames_per_shard=1, workers=2))
    reference = _manifest(tmp_path / 'one')
    assert _manifest(tmp_path / 'split') == reference == _manifest(tmp_path / 'pool')


def test_prepare_refuses_a_folder_prepared_differently(tiny_bags: dict, tmp_path: Path) -> None:
    prepare_dataset([tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'), tmp_path)
    with pytest.raises(DataError, match=r'holds a preparation with different frames_per_shard; '
                                        r'use a new --out folder'):
        prepare_dataset([tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'), tmp_path,
                        options=PrepareOptions(frames_per_shard=5))


def _majority_agreement(segment: np.ndarray, label: np.ndarray) -> float:
    """Share of pairs whose pixel label is the most common one of their segment."""
    counts = np.zeros((segment.max() + 1, label.max() + 1), dtype=np.int64)
    np.add.at(counts, (segment, label), 1)
    return float(counts.max(axis=1).sum() / len(segment))


def test_prepare_superpixels_group_pairs_of_one_object(tiny_bags: dict, tmp_path: Path) -> None:
    report = prepare_dataset([tiny_bags[('nuscenes', 'mcap')]], load_preset('synth-nuscenes'),
                             tmp_path, options=PrepareOptions(superpixels=150))
    assert report.complete
    dataset = PreparedDataset(tmp_path)
    assert dataset.superpixels == 150
    assert json.loads(_manifest(tmp_path))['superpixels'] == 150
    rng = np.random.default_rng(0)
    for i in range(len(dataset)):
        frame = dataset[i]
        segment, label = frame.pair_superpixel, frame.pair_pixel_label
        assert segment is not None and label is not None
        assert segment.dtype == np.int64 and segment.shape == frame.pair_point.shape
        ids = np.unique(segment)
        np.testing.assert_array_equal(ids, np.arange(len(ids)))
        assert 400 < len(ids) <= 6 * 150 * 1.5  # 6 cameras, not all segments hit by points
        # Superpixels follow the rendered objects: measured 0.94-0.95 per frame. Ids off by
        # one pair measured 0.83, scrambled ones 0.32.
        assert _majority_agreement(segment, label) >= 0.9
        assert _majority_agreement(rng.permutation(segment), label) < 0.5
        # A superpixel never spans two cameras.
        assert all(len(np.unique(frame.pair_camera[segment == s])) == 1 for s in ids)


def test_prepare_superpixels_stay_aligned_when_pairs_are_subsampled(tiny_bags: dict,
                                                                    tmp_path: Path) -> None:
    prepare_dataset([tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'), tmp_path,
                    options=PrepareOptions(superpixels=50))
    full = PreparedDataset(tmp_path)[0]
    part = PreparedDataset(tmp_path, pairs_per_frame=300, seed=1)[0]
    assert full.pair_superpixel is not None and part.pair_superpixel is not None
    # A point projects into one camera at most once: (camera, point) names a pair.
    row = {pair: k for k, pair in enumerate(zip(full.pair_camera.tolist(),
                                                full.pair_point.tolist(), strict=True))}
    rows = np.array([row[pair] for pair in zip(part.pair_camera.tolist(),
                                               part.pair_point.tolist(), strict=True)])
    assert full.pair_pixel_label is not None
    np.testing.assert_array_equal(full.pair_pixel_label[rows], part.pair_pixel_label)
    # The same partition into superpixels, renumbered densely over the subset.
    links = set(zip(part.pair_superpixel.tolist(), full.pair_superpixel[rows].tolist(),
                    strict=True))
    assert len(links) == len(np.unique(part.pair_superpixel)) == \
        len(np.unique(full.pair_superpixel[rows]))
    np.testing.assert_array_equal(np.unique(part.pair_superpixel),
                                  np.arange(len(np.unique(part.pair_superpixel))))


@pytest.mark.slow
def test_prepare_superpixels_from_workers_match_a_single_process(tiny_bags: dict,
                                                                 tmp_path: Path) -> None:
    bag, preset = tiny_bags[('kitti', 'mcap')], load_preset('synth-kitti')
    for name, workers in (('one', 1), ('pool', 2)):
        prepare_dataset([bag], preset, tmp_path / name, options=PrepareOptions(
            frames_per_shard=2, workers=workers, superpixels=50))
    manifest = json.loads(_manifest(tmp_path / 'pool'))
    assert all('pair_superpixel.npy' in shard['checksums'] for shard in manifest['shards'])
    assert _manifest(tmp_path / 'pool') == _manifest(tmp_path / 'one')


@pytest.mark.parametrize(('first', 'second'), [(None, 150), (150, None), (150, 100)])
def test_prepare_refuses_to_resume_with_other_superpixels(tiny_bags: dict, tmp_path: Path,
                                                          first: int | None,
                                                          second: int | None) -> None:
    bag, preset = tiny_bags[('kitti', 'mcap')], load_preset('synth-kitti')
    prepare_dataset([bag], preset, tmp_path, options=PrepareOptions(superpixels=first))
    with pytest.raises(DataError, match=r'holds a preparation with different superpixels; '
                                        r'use a new --out folder'):
        prepare_dataset([bag], preset, tmp_path, options=PrepareOptions(superpixels=second))


def test_prepare_resumes_a_plan_written_before_superpixels_existed(tiny_bags: dict,
                                                                   tmp_path: Path) -> None:
    bag, preset = tiny_bags[('kitti', 'mcap')], load_preset('synth-kitti')
    prepare_dataset([bag], preset, tmp_path)
    plan = json.loads((tmp_path / 'plan.json').read_text())
    del plan['superpixels']
    (tmp_path / 'plan.json').write_text(json.dumps(plan))
    assert prepare_dataset([bag], preset, tmp_path).shards_resumed == 1


@pytest.mark.parametrize('superpixels', [0, -3, 2.5, True])
def test_prepare_options_refuse_bad_superpixels(superpixels: object) -> None:
    with pytest.raises(DataError, match=r'superpixels: expected a whole number of segments per '
                                        rf'image of at least 1, or None for none; got '
                                        rf'{superpixels!r}'):
        PrepareOptions(superpixels=superpixels)  # type: ignore[arg-type]


# Runs relkd-prepare in a child process that SIGKILLs itself halfway through writing the
# third shard's files, as a crash or an OOM kill would.
_DYING_RUN = """
import os, signal, sys
import numpy as np
calls = 0
real_save = np.save
def save(*args, **kwargs):
    global calls
    calls += 1
    if calls == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(*args, **kwargs)
np.save = save
from relkd_core.cli.prepare import main
sys.exit(main(sys.argv[2:]))
"""


def test_prepare_killed_run_resumes_to_identical_manifest(tiny_bags: dict,
                                                          tmp_path: Path) -> None:
    bag = str(tiny_bags[('nuscenes', 'mcap')])
    argv = ['--bag', bag, '--preset', 'synth-nuscenes', '--frames-per-shard', '1']
    files_per_shard = 11  # without teacher: see the layout in relkd_core.data.prepared
    killed = subprocess.run([sys.executable, '-c', _DYING_RUN, str(2 * files_per_shard + 4),
                             *argv, '--out', str(tmp_path / 'killed')], capture_output=True)
    assert killed.returncode == -9
    shards = tmp_path / 'killed' / 'shards'
    assert sorted(p.name for p in shards.iterdir() if not p.name.startswith('.')) == \
        ['000000', '000001']
    assert [p for p in shards.iterdir() if p.name.startswith('.')]  # the half-written shard
    assert not (tmp_path / 'killed' / 'manifest.json').exists()

    from relkd_core.cli.prepare import main
    assert main([*argv, '--out', str(tmp_path / 'killed')]) == 0
    assert main([*argv, '--out', str(tmp_path / 'clean')]) == 0
    assert not [p for p in shards.iterdir() if p.name.startswith('.')]
    assert _manifest(tmp_path / 'killed') == _manifest(tmp_path / 'clean')


def test_prepare_unreadable_bag_is_reported_and_others_kept(tiny_bags: dict,
                                                            tmp_path: Path) -> None:
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'metadata.yaml').write_text('not: a bag\n')
    report = prepare_dataset([broken, tiny_bags[('kitti', 'mcap')]], load_preset('synth-kitti'),
                             tmp_path / 'out')
    assert report.complete and report.frames_written == 3
    assert len(report.problems) == 1 and 'cannot open bag' in report.problems[0]
    manifest = json.loads(_manifest(tmp_path / 'out'))
    assert [b['readable'] for b in manifest['bags']] == [False, True]


@pytest.mark.parametrize(('damage', 'message'), [
    (lambda shard: (shard / 'points.npy').write_bytes((shard / 'points.npy').read_bytes()[:200]),
     r'points\.npy: damaged prepared file \(.*\); prepare the dataset again into a new folder$'),
    (lambda shard: (shard / 'points.npy').write_bytes(b'\x93NUMPY garbage'),
     r'points\.npy: damaged prepared file \('),
    (lambda shard: (shard / 'meta.json').write_text('{"frames": [1, '),
     r'meta\.json: damaged prepared file \(Expecting value'),
], ids=['truncated-array', 'overwritten-header', 'truncated-meta'])
def test_prepared_damaged_file_is_a_data_error(tiny_prepared: Path, tmp_path: Path, damage: object,
                                               message: str) -> None:
    root = tmp_path / 'copy'
    shutil.copytree(tiny_prepared, root)
    damage(root / 'shards' / '000000')  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        PreparedDataset(root)[0]


def test_prepared_damaged_manifest_is_a_data_error(tiny_prepared: Path, tmp_path: Path) -> None:
    (tmp_path / 'manifest.json').write_bytes(b'\x00\x01')
    with pytest.raises(DataError, match=r'manifest\.json: damaged prepared file \('):
        PreparedDataset(tmp_path)


def test_prepared_dataset_tells_how_its_scans_were_read(tiny_prepared: Path) -> None:
    dataset = PreparedDataset(tiny_prepared, features=False)
    assert dataset.scan_input == load_preset('synth-nuscenes').lidar.scan_input
    assert dataset.taxonomy == 'nuscenes16'
