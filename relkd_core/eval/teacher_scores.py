"""The 2D teacher's own zero-shot mIoU: three figures, three names, one function each.

A teacher's zero-shot label at a place is ``vocabulary.labels[argmax_c <feature, text_c>]``.
*Where* it is scored changes the figure, so every report names which one it shows:

- ``teacher_pixels``: every labelled pixel of the camera images (the bilinearly upsampled
  patch grid against the semantic image). A property of the teacher alone; needs images with
  ground truth (:func:`teacher_pixels`).
- ``teacher_projected``: every point-pixel pair of a prepared dataset (a lidar point seen by
  two cameras counts twice), the teacher feature at the pixel against the point's lidar
  label (:func:`teacher_projected`).
- ``teacher_visible``: one pair per camera-visible lidar point, its first camera, scored on
  the same points as the student's ``visible`` column of ``relkd-eval zero-shot``
  (:func:`teacher_visible`). This is the reference the 3D student is compared with.

All three follow :mod:`relkd_core.metrics` (label 0 ignored; classes absent from both ground
truth and prediction left out of the mean). On one drive they differ by a point or two (pixels
weigh large surfaces, points weigh what the lidar hits); across drives they differ far more:
on a short drive each class is a handful of objects, and a teacher whose errors are per object
(the simulated VLM draws its confusion once per object) scores a class near 0 or near its best
depending on which objects the drive holds. Compare figures of one drive only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.prepared import PreparedDataset, PreparedFrame
from relkd_core.errors import DataError
from relkd_core.metrics import confusion_matrix
from relkd_core.teachers.base import Teacher, TeacherImage
from relkd_core.teachers.evaluate import ZeroShotResult, predict_labels, zero_shot_pixels
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = ['TEACHER_FIGURES', 'first_pairs', 'predicted_counts', 'teacher_pixels',
           'teacher_projected', 'teacher_visible']

#: The names of the three figures, as metrics.json and the reports spell them.
TEACHER_FIGURES = ('teacher_pixels', 'teacher_projected', 'teacher_visible')


def first_pairs(pair_point: NDArray[np.integer]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Camera-visible points of a frame (sorted, (V,) int64) and, for each, the row of its
    first point-pixel pair ((V,) int64): the pairs :func:`teacher_visible` scores."""
    points, first = np.unique(np.asarray(pair_point), return_index=True)
    return points.astype(np.int64), first.astype(np.int64)


def predicted_counts(confusion: NDArray[np.integer], class_names: Sequence[str]
                     ) -> dict[str, int]:
    """How many scored samples were predicted as each class (columns of a (C+1, C+1)
    confusion matrix whose rows exclude ignore): shows rare classes collapsing into frequent
    ones, which a mean IoU hides."""
    columns = np.asarray(confusion)[1:, 1:].sum(axis=0)
    return {name: int(n) for name, n in zip(class_names, columns, strict=True)}


def teacher_pixels(teacher: Teacher, vocabulary: Vocabulary, images: Iterable[TeacherImage],
                   batch_size: int = 8) -> ZeroShotResult:
    """``teacher_pixels``: the teacher's zero-shot scores on every labelled pixel of
    ``images`` (each needs ``semantic``)."""
    return zero_shot_pixels(teacher, vocabulary, images, batch_size)


def _frames(dataset: PreparedDataset) -> Iterable[PreparedFrame]:
    for i in range(len(dataset)):
        frame = dataset[i]
        if frame.labels is None or frame.pair_features is None:
            raise DataError(f'{dataset.root}: frame {frame.key} lacks lidar labels or teacher '
                            'features; the teacher figures need both')
        yield frame


def _score(dataset: PreparedDataset, text: NDArray[np.floating[Any]], vocabulary: Vocabulary,
           *, first_only: bool, num_classes: int) -> ZeroShotResult:
    size = num_classes + 1
    confusion = np.zeros((size, size), np.int64)
    for frame in _frames(dataset):
        assert frame.labels is not None and frame.pair_features is not None  # _frames checked
        features, points = frame.pair_features, frame.pair_point.astype(np.int64)
        if first_only:
            points, rows = first_pairs(points)
            features = features[rows]
        if len(points):
            predicted = predict_labels(features, text, vocabulary)
            confusion += confusion_matrix(frame.labels[points], predicted, num_classes)
    return ZeroShotResult.from_confusion(confusion)


def teacher_projected(dataset: PreparedDataset, text: NDArray[np.floating[Any]],
                      vocabulary: Vocabulary, num_classes: int = 16) -> ZeroShotResult:
    """``teacher_projected``: zero-shot scores of the teacher feature of every point-pixel
    pair of ``dataset`` against the pair's lidar label. ``text`` is (C, D) unit rows."""
    return _score(dataset, text, vocabulary, first_only=False, num_classes=num_classes)


def teacher_visible(dataset: PreparedDataset, text: NDArray[np.floating[Any]],
                    vocabulary: Vocabulary, num_classes: int = 16) -> ZeroShotResult:
    """``teacher_visible``: one pair per camera-visible point (its first camera), the points
    and pairs of the student's ``visible`` column in ``relkd-eval zero-shot``."""
    return _score(dataset, text, vocabulary, first_only=True, num_classes=num_classes)
