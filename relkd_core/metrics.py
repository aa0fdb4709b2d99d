"""Segmentation metrics: confusion matrix, per-class IoU and mIoU over taxonomy labels.

Conventions (the nuScenes-lidarseg ones, shared by every mIoU relkd reports):

- Labels are 0..num_classes; 0 is ``ignore`` (sky, noise, unlabelled). Samples whose ground truth
  is 0 are skipped entirely. A *prediction* of 0 (e.g. a free-text vocabulary entry with no
  taxonomy label) is kept: it is a false negative for the true class and a false positive for
  nobody.
- The confusion matrix is (num_classes + 1)²: rows = ground truth, columns = prediction, index =
  label; row 0 is always zero.
- IoU of class c = TP / (TP + FP + FN). A class absent from both the ground truth and the
  prediction has IoU NaN and is left out of the mean; a class only predicted (FP > 0, no ground
  truth) has IoU 0 and counts. mIoU is the mean over classes with a defined IoU, a fraction in
  [0, 1] (reports multiply by 100).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from relkd_core.errors import DataError
from relkd_core.taxonomy import IGNORE_LABEL, NUM_CLASSES

__all__ = ['confusion_matrix', 'mean_iou', 'per_class_iou']


def confusion_matrix(gt_labels: ArrayLike, pred_labels: ArrayLike,
                     num_classes: int = NUM_CLASSES) -> NDArray[np.int64]:
    """(num_classes + 1, num_classes + 1) int64 counts, rows = ground truth, columns = prediction.

    ``gt_labels`` and ``pred_labels`` are integer arrays of one shape (any), with values in
    0..num_classes. Samples with ground truth 0 (ignore) are not counted. Raises DataError for
    mismatched shapes or labels out of range.
    """
    gt = np.asarray(gt_labels).ravel()
    pred = np.asarray(pred_labels).ravel()
    if np.shape(gt_labels) != np.shape(pred_labels):
        raise DataError(f'confusion_matrix: ground truth has shape {np.shape(gt_labels)} but the '
                        f'prediction {np.shape(pred_labels)}; they must match')
    for what, labels in (('ground truth', gt), ('prediction', pred)):
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f'confusion_matrix: {what} labels must be integers, got {labels.dtype}')
        if labels.size and (labels.min() < 0 or labels.max() > num_classes):
            raise DataError(f'confusion_matrix: {what} labels must be in 0..{num_classes}, got '
                            f'{int(labels.min())}..{int(labels.max())}')
    keep = gt != IGNORE_LABEL
    size = num_classes + 1
    flat = gt[keep].astype(np.int64) * size + pred[keep].astype(np.int64)
    return np.bincount(flat, minlength=size * size).reshape(size, size)


def per_class_iou(confusion: NDArray[np.integer]) -> NDArray[np.float64]:
    """IoU of labels 1..num_classes (shape (num_classes,), float64) from a confusion matrix.

    NaN for a class absent from both ground truth and prediction (see module docstring).
    """
    conf = np.asarray(confusion, dtype=np.int64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] < 2:
        raise DataError(f'per_class_iou: expected a square (C+1, C+1) confusion matrix, got '
                        f'shape {conf.shape}')
    # Column 0 (predicted "ignore") adds false negatives to the true class, never false positives.
    true_positive = np.diag(conf)[1:]
    false_negative = conf[1:, :].sum(axis=1) - true_positive
    false_positive = conf[1:, 1:].sum(axis=0) - true_positive
    union = true_positive + false_negative + false_positive
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)


def mean_iou(confusion: NDArray[np.integer]) -> float:
    """Mean of :func:`per_class_iou` over classes with a defined IoU (fraction in [0, 1]).

    NaN when no class occurs at all (empty input).
    """
    iou = per_class_iou(confusion)
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else float('nan')
