"""Tests for relkd_core.teachers.base: grid sampling, upsampling, ids and the frozen guard."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.errors import TeacherError
from relkd_core.teachers.base import (
    FeatureGrid,
    Teacher,
    TeacherImage,
    grid_shape,
    make_teacher_id,
    normalize_rows,
    sample_grid,
    upsample_grid,
)
from relkd_core.teachers.vocabulary import Vocabulary


def _random_grid(rows: int, cols: int, dim: int, size_px: tuple[int, int]) -> FeatureGrid:
    rng = np.random.default_rng(0)
    return FeatureGrid(features=normalize_rows(rng.standard_normal((rows, cols, dim))),
                       image_size_px=size_px)


@pytest.mark.parametrize(('size_px', 'patch', 'expected'), [
    ((400, 224), 16, (14, 25)),
    ((416, 128), 16, (8, 26)),
    ((17, 16), 16, (1, 2)),
    ((1, 1), 16, (1, 1)),
])
def test_grid_shape_rounds_partial_patches_up(size_px: tuple[int, int], patch: int,
                                              expected: tuple[int, int]) -> None:
    assert grid_shape(size_px, patch) == expected


def test_sample_grid_returns_cells_at_their_centres() -> None:
    grid = _random_grid(3, 4, 8, (64, 48))  # 16 px cells
    rows, cols = np.meshgrid(np.arange(3), np.arange(4), indexing='ij')
    uv = np.stack([(cols + 0.5) * 16 - 0.5, (rows + 0.5) * 16 - 0.5], axis=-1).reshape(-1, 2)
    samples = sample_grid(grid, uv)
    np.testing.assert_allclose(samples, grid.features.reshape(-1, 8), atol=1e-6)


def test_sample_grid_interpolates_between_centres_and_renormalises() -> None:
    features = np.zeros((1, 2, 2), dtype=np.float32)
    features[0, 0] = [1.0, 0.0]
    features[0, 1] = [0.0, 1.0]
    grid = FeatureGrid(features=features, image_size_px=(32, 16))  # centres at u = 7.5, 23.5
    samples = sample_grid(grid, np.array([[15.5, 7.5], [11.5, 7.5]]))
    np.testing.assert_allclose(samples[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    expected = normalize_rows(np.array([0.75, 0.25]))
    np.testing.assert_allclose(samples[1], expected, atol=1e-6)


def test_sample_grid_clamps_outside_the_outermost_centres() -> None:
    grid = _random_grid(2, 3, 4, (48, 32))
    samples = sample_grid(grid, np.array([[-0.5, -0.5], [2.0, 3.0], [47.5, 31.5], [100.0, 0.0]]))
    np.testing.assert_allclose(samples[0], grid.features[0, 0], atol=1e-6)
    np.testing.assert_allclose(samples[1], grid.features[0, 0], atol=1e-6)
    np.testing.assert_allclose(samples[2], grid.features[1, 2], atol=1e-6)
    np.testing.assert_allclose(samples[3], grid.features[0, 2], atol=1e-6)


def test_sample_grid_reads_float16_grids_as_float32() -> None:
    grid = _random_grid(2, 2, 16, (32, 32))
    half = FeatureGrid(features=grid.features.astype(np.float16), image_size_px=(32, 32))
    uv = np.array([[10.0, 20.0], [3.3, 4.4]])
    samples = sample_grid(half, uv)
    assert samples.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(samples, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(samples, sample_grid(grid, uv), atol=2e-3)


@pytest.mark.parametrize(('uv', 'message'), [
    (np.zeros((4, 3)), r'uv_px must be \(M, 2\)'),
    (np.array([[1.0, np.nan]]), '1 non-finite rows'),
])
def test_sample_grid_rejects_bad_coordinates(uv: NDArray[np.float64], message: str) -> None:
    with pytest.raises(TeacherError, match=message):
        sample_grid(_random_grid(2, 2, 4, (32, 32)), uv)


def test_upsample_grid_argmax_equals_argmax_of_sampled_features() -> None:
    grid = _random_grid(4, 5, 12, (37, 29))
    text = normalize_rows(np.random.default_rng(1).standard_normal((6, 12)))
    scores = upsample_grid(grid.features @ text.T, grid.image_size_px)
    v, u = np.mgrid[0:29, 0:37]
    sampled = sample_grid(grid, np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64))
    assert scores.shape == (29, 37, 6)
    np.testing.assert_array_equal(scores.argmax(-1).ravel(), (sampled @ text.T).argmax(-1))


def test_make_teacher_id_is_stable_and_sensitive_to_config() -> None:
    first = make_teacher_id('synthetic', {'seed': 0, 'noise': 0.5}, 'model==1')
    assert first == make_teacher_id('synthetic', {'noise': 0.5, 'seed': 0}, 'model==1')
    assert first.startswith('synthetic-') and len(first) == len('synthetic-') + 12
    assert first != make_teacher_id('synthetic', {'seed': 1, 'noise': 0.5}, 'model==1')
    assert first != make_teacher_id('synthetic', {'seed': 0, 'noise': 0.5}, 'model==2')


class _ConstantTeacher(Teacher):
    teacher_id = 'constant-0'
    feature_dim = 2

    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        return [FeatureGrid(features=np.ones((1, 1, 2), np.float32) / np.sqrt(2),
                            image_size_px=image.size_px) for image in images]

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        return np.ones((len(vocabulary), 2), np.float32) / np.sqrt(2)


def test_teacher_refuses_to_train() -> None:
    teacher = _ConstantTeacher()
    with pytest.raises(TeacherError, match=r'constant-0 is frozen: train\(True\)'):
        teacher.train()
    with pytest.raises(TeacherError, match=r'requires_grad_\(True\) is not allowed'):
        teacher.requires_grad_(True)
    assert teacher.train(False) is teacher
    assert teacher.eval() is teacher
    assert teacher.requires_grad_(False) is teacher
    assert teacher.training is False
