"""Tests for relkd_core.teachers.evaluate: zero-shot labels and scores on pixels and points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.errors import TeacherError
from relkd_core.teachers.base import FeatureGrid, Teacher, TeacherImage, normalize_rows, sample_grid
from relkd_core.teachers.evaluate import (
    predict_grid_labels,
    predict_labels,
    zero_shot_pixels,
    zero_shot_points,
)
from relkd_core.teachers.vocabulary import Vocabulary

DIM = 17


class _OracleTeacher(Teacher):
    """Features = one-hot of the true label at every pixel (grid = image resolution)."""

    teacher_id = 'oracle-0'
    feature_dim = DIM

    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        grids = []
        for image in images:
            assert image.semantic is not None
            one_hot = np.eye(DIM, dtype=np.float32)[image.semantic]
            grids.append(FeatureGrid(features=one_hot, image_size_px=image.size_px))
        return grids

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        return np.eye(DIM, dtype=np.float32)[list(vocabulary.labels)]


def _image(semantic: NDArray[np.uint16]) -> TeacherImage:
    height, width = semantic.shape
    return TeacherImage(rgb=np.zeros((height, width, 3), np.uint8), camera='c', t_ns=0,
                        semantic=semantic)


def test_zero_shot_pixels_of_an_oracle_is_perfect_and_skips_ignore() -> None:
    rng = np.random.default_rng(0)
    semantics = [rng.integers(0, 17, (6, 9)).astype(np.uint16) for _ in range(5)]
    result = zero_shot_pixels(_OracleTeacher(), Vocabulary.default(), map(_image, semantics),
                              batch_size=2)
    assert result.miou == 1.0
    assert result.num_samples == sum(int((semantic > 0).sum()) for semantic in semantics)
    assert result.to_dict()['per_class_iou_pct']['car'] == 100.0


def test_zero_shot_pixels_counts_free_text_predictions_as_misses() -> None:
    semantic = np.full((4, 4), 4, np.uint16)  # all car
    vocabulary = Vocabulary(names=('vehicle',), prompts=(('vehicle',),), labels=(0,))
    teacher = _OracleTeacher()
    result = zero_shot_pixels(teacher, vocabulary, [_image(semantic)])
    assert result.miou == 0.0
    assert result.confusion[4, 0] == 16


def test_zero_shot_points_scores_argmax_labels() -> None:
    text = np.eye(3, 4, dtype=np.float32)
    vocabulary = Vocabulary(names=('car', 'road', 'vehicle'), prompts=(('car',), ('road',),
                            ('vehicle',)), labels=(4, 11, 4))
    features = normalize_rows(np.array([[1.0, 0.1, 0, 0], [0.1, 1.0, 0, 0], [0, 0.2, 1.0, 0],
                                        [0.9, 1.0, 0, 0]]))
    labels = np.array([4, 11, 4, 4], np.uint16)
    np.testing.assert_array_equal(predict_labels(features, text, vocabulary), [4, 11, 4, 11])
    result = zero_shot_points(features, labels, text, vocabulary)
    np.testing.assert_allclose(result.per_class_iou[[3, 10]], [2 / 3, 1 / 2])
    assert result.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result.num_samples == 4


def test_predict_grid_labels_equals_labels_of_sampled_features() -> None:
    rng = np.random.default_rng(0)
    grid = FeatureGrid(features=normalize_rows(rng.standard_normal((3, 5, 8))),
                       image_size_px=(40, 21))
    vocabulary = Vocabulary.default()
    text = normalize_rows(rng.standard_normal((16, 8)))
    v, u = np.mgrid[0:21, 0:40]
    sampled = sample_grid(grid, np.stack([u.ravel(), v.ravel()], 1).astype(np.float64))
    expected = predict_labels(sampled, text, vocabulary).reshape(21, 40)
    np.testing.assert_array_equal(predict_grid_labels(grid, text, vocabulary), expected)


@pytest.mark.parametrize(('features', 'labels', 'text', 'message'), [
    (np.zeros((3, 4)), np.zeros(2, int), np.zeros((16, 4)), r'expected \(M, D\) features and '),
    (np.zeros((3, 4)), np.zeros(3, int), np.zeros((15, 4)), 'C = 16 vocabulary entries'),
    (np.zeros((3, 4)), np.zeros(3, int), np.zeros((16, 5)), 'dimension 4 but the text'),
])
def test_zero_shot_points_rejects_mismatched_inputs(features: NDArray[np.float64],
                                                    labels: NDArray[np.int64],
                                                    text: NDArray[np.float64],
                                                    message: str) -> None:
    with pytest.raises(TeacherError, match=message):
        zero_shot_points(features, labels, text, Vocabulary.default())


def test_zero_shot_pixels_needs_ground_truth() -> None:
    image = TeacherImage(rgb=np.zeros((2, 2, 3), np.uint8), camera='CAM_BACK', t_ns=4)
    with pytest.raises(TeacherError, match='CAM_BACK at t_ns=4 has none'):
        zero_shot_pixels(_OracleTeacher(), Vocabulary.default(), [image])
