"""Tests for relkd_core.teachers.precomputed: the on-disk layout, round trip and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from relkd_core.errors import TeacherError
from relkd_core.teachers import build_teacher
from relkd_core.teachers.base import FeatureGrid, TeacherImage, normalize_rows
from relkd_core.teachers.precomputed import (
    PrecomputedTeacher,
    PrecomputedTeacherConfig,
    feature_path,
    write_precomputed,
)
from relkd_core.teachers.vocabulary import Vocabulary


def _grid(seed: int, rows: int = 3, cols: int = 4, dim: int = 8) -> FeatureGrid:
    features = normalize_rows(np.random.default_rng(seed).standard_normal((rows, cols, dim)))
    return FeatureGrid(features=features, image_size_px=(cols * 16, rows * 16))


def _image(camera: str, t_ns: int) -> TeacherImage:
    return TeacherImage(rgb=np.zeros((48, 64, 3), np.uint8), camera=camera, t_ns=t_ns)


def _write(root: Path) -> dict[tuple[str, int], FeatureGrid]:
    grids = {('CAM_FRONT', 10): _grid(0), ('CAM_BACK', 12): _grid(1)}
    text = normalize_rows(np.random.default_rng(2).standard_normal((2, 8)))
    write_precomputed(root, grids, teacher_id='openclip-abc', text_names=['car', 'road'],
                      text_embeddings=text)
    return grids


def test_precomputed_round_trip_reads_what_was_written_in_float16(tmp_path: Path) -> None:
    grids = _write(tmp_path)
    assert np.load(tmp_path / 'CAM_FRONT' / '10.npy').dtype == np.float16
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    assert teacher.teacher_id == 'openclip-abc'
    assert teacher.feature_dim == 8
    read = teacher.image_features([_image('CAM_BACK', 12), _image('CAM_FRONT', 10)])
    np.testing.assert_allclose(read[0].features, grids[('CAM_BACK', 12)].features, atol=2e-3)
    np.testing.assert_allclose(read[1].features, grids[('CAM_FRONT', 10)].features, atol=2e-3)
    assert read[0].image_size_px == (64, 48)
    np.testing.assert_allclose(np.linalg.norm(read[0].features, axis=-1), 1.0, atol=1e-6)


def test_precomputed_text_features_follow_vocabulary_order(tmp_path: Path) -> None:
    _write(tmp_path)
    teacher = build_teacher('precomputed', None, [f'root={tmp_path}'])
    both = teacher.text_features(Vocabulary.from_names(['road', 'car']))
    car = teacher.text_features(Vocabulary.from_names(['car']))
    np.testing.assert_array_equal(both[1], car[0])
    assert both.shape == (2, 8)


def test_precomputed_missing_image_names_the_expected_file(tmp_path: Path) -> None:
    _write(tmp_path)
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    expected = tmp_path / 'CAM_FRONT' / '11.npy'
    with pytest.raises(TeacherError, match=f'no features for CAM_FRONT at t_ns=11; expected '
                                           f'{expected}'):
        teacher.image_features([_image('CAM_FRONT', 11)])


def test_precomputed_unknown_text_lists_the_stored_names(tmp_path: Path) -> None:
    _write(tmp_path)
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    with pytest.raises(TeacherError, match=r"for \['vehicle'\]; stored names: \['car', 'road'\]"):
        teacher.text_features(Vocabulary.from_names(['car', 'vehicle']))


def test_precomputed_without_text_says_how_to_add_it(tmp_path: Path) -> None:
    write_precomputed(tmp_path, {('c', 1): _grid(0)}, teacher_id='x-1')
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    with pytest.raises(TeacherError, match='names no text_embeddings'):
        teacher.text_features(Vocabulary.default())


def test_precomputed_folder_without_manifest_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match=f'{tmp_path / "teacher.yaml"} not found'):
        PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))


def test_precomputed_grid_of_the_wrong_size_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path)
    np.save(tmp_path / 'CAM_FRONT' / '10.npy', np.zeros((3, 4, 5), np.float32))
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    with pytest.raises(TeacherError, match=r'expected a \(Hg, Wg, 8\) grid, got shape \(3, 4, 5\)'):
        teacher.image_features([_image('CAM_FRONT', 10)])


def test_write_precomputed_resumes_but_refuses_another_teacher(tmp_path: Path) -> None:
    _write(tmp_path)
    write_precomputed(tmp_path, {('CAM_FRONT', 20): _grid(3)}, teacher_id='openclip-abc')
    teacher = PrecomputedTeacher(PrecomputedTeacherConfig(root=tmp_path))
    assert len(teacher.image_features([_image('CAM_FRONT', 10), _image('CAM_FRONT', 20)])) == 2
    assert teacher.text_features(Vocabulary.from_names(['car'])).shape == (1, 8)
    with pytest.raises(TeacherError, match='holds features of openclip-abc'):
        write_precomputed(tmp_path, {('CAM_FRONT', 30): _grid(4)}, teacher_id='synthetic-xyz')


@pytest.mark.parametrize(('camera', 'message'), [
    ('../escape', 'cannot be a folder name'),
    ('a/b', 'cannot be a folder name'),
])
def test_feature_path_rejects_unsafe_camera_names(tmp_path: Path, camera: str,
                                                  message: str) -> None:
    with pytest.raises(TeacherError, match=message):
        feature_path(tmp_path, camera, 1)


def test_write_precomputed_rejects_mixed_feature_sizes(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match=r'got sizes \[8, 16\]'):
        write_precomputed(tmp_path, {('a', 1): _grid(0), ('b', 2): _grid(1, dim=16)},
                          teacher_id='x-1')
