"""Tests for relkd_core.metrics: confusion matrix, per-class IoU and mIoU conventions."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from relkd_core.errors import DataError
from relkd_core.metrics import confusion_matrix, mean_iou, per_class_iou


def test_confusion_matrix_counts_rows_as_ground_truth_and_skips_ignore() -> None:
    gt = np.array([1, 1, 2, 2, 0, 0, 3])
    pred = np.array([1, 2, 2, 2, 1, 3, 0])
    confusion = confusion_matrix(gt, pred, num_classes=3)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 1], expected[1, 2], expected[2, 2], expected[3, 0] = 1, 1, 2, 1
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.dtype == np.int64


def test_per_class_iou_follows_the_documented_conventions() -> None:
    # class 1: TP 1, FN 2 -> 1/3; class 2: TP 2, FP 1 -> 2/3; class 3: only predicted -> 0;
    # class 4: absent everywhere -> NaN; class 5: its one sample predicted as 0 -> 0. The
    # ignored sample (ground truth 0, predicted 3) counts for nobody.
    gt = np.array([1, 1, 2, 2, 0, 5, 1])
    pred = np.array([1, 2, 2, 2, 3, 0, 3])
    iou = per_class_iou(confusion_matrix(gt, pred, num_classes=5))
    np.testing.assert_allclose(iou[[0, 1, 2, 4]], [1 / 3, 2 / 3, 0.0, 0.0])
    assert np.isnan(iou[3])
    assert mean_iou(confusion_matrix(gt, pred, num_classes=5)) == pytest.approx(
        (1 / 3 + 2 / 3 + 0 + 0) / 4)


def test_mean_iou_is_one_for_a_perfect_prediction_on_any_shape() -> None:
    labels = np.random.default_rng(0).integers(0, 17, size=(7, 9)).astype(np.uint16)
    assert mean_iou(confusion_matrix(labels, labels)) == 1.0


def test_mean_iou_is_nan_when_nothing_is_labelled() -> None:
    assert np.isnan(mean_iou(confusion_matrix(np.zeros(5, int), np.ones(5, int))))


@pytest.mark.parametrize(('gt', 'pred', 'message'), [
    (np.zeros(3, int), np.zeros(4, int), 'must match'),
    (np.array([17]), np.array([1]), r'ground truth labels must be in 0..16, got 17..17'),
    (np.array([1]), np.array([-1]), r'prediction labels must be in 0..16'),
    (np.array([1.0]), np.array([1]), 'must be integers'),
])
def test_confusion_matrix_rejects_bad_labels(gt: NDArray[np.generic], pred: NDArray[np.generic],
                                             message: str) -> None:
    with pytest.raises(DataError, match=message):
        confusion_matrix(gt, pred)


def test_per_class_iou_rejects_a_non_square_matrix() -> None:
    with pytest.raises(DataError, match=r'square \(C\+1, C\+1\)'):
        per_class_iou(np.zeros((3, 4), dtype=np.int64))
