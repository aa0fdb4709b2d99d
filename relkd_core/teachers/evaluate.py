"""The teacher's own 2D zero-shot quality: mIoU on pixels and on projected lidar points.

Zero-shot prediction: the label of the vocabulary entry with the highest cosine similarity,
``vocabulary.labels[argmax_c <feature, text_c>]``. Scores follow the conventions of
:mod:`relkd_core.metrics` (ignore label 0 skipped; classes absent from both ground truth and
prediction left out of the mean).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import TeacherError
from relkd_core.metrics import confusion_matrix, mean_iou, per_class_iou
from relkd_core.taxonomy import CLASS_NAMES, NUM_CLASSES
from relkd_core.teachers.base import FeatureGrid, Teacher, TeacherImage, upsample_grid
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = [
    'ZeroShotResult',
    'predict_grid_labels',
    'predict_labels',
    'zero_shot_pixels',
    'zero_shot_points',
]


@dataclass(frozen=True)
class ZeroShotResult:
    """Accumulated zero-shot scores over taxonomy labels 1..16.

    ``confusion`` is (17, 17) int64 (rows = ground truth, columns = prediction, index = label);
    ``per_class_iou`` is (16,) float64 for labels 1..16, NaN where a class occurs in neither;
    ``miou`` is their mean, a fraction in [0, 1]; ``num_samples`` counts the scored (non-ignore)
    pixels or points.
    """

    confusion: NDArray[np.int64]
    per_class_iou: NDArray[np.float64]
    miou: float
    num_samples: int

    @classmethod
    def from_confusion(cls, confusion: NDArray[np.int64]) -> ZeroShotResult:
        return cls(confusion=confusion, per_class_iou=per_class_iou(confusion),
                   miou=mean_iou(confusion), num_samples=int(confusion.sum()))

    def to_dict(self, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
        """JSON-safe summary in percent: ``miou_pct`` (None when no class occurs),
        ``per_class_iou_pct`` (class name -> IoU, None where undefined; ``class_names`` of
        the taxonomy, nuScenes-16 by default) and ``num_samples``."""
        per_class = {name: (None if np.isnan(iou) else round(100.0 * float(iou), 2))
                     for name, iou in zip(class_names, self.per_class_iou, strict=True)}
        miou = None if np.isnan(self.miou) else round(100.0 * self.miou, 2)
        return {'miou_pct': miou, 'per_class_iou_pct': per_class,
                'num_samples': self.num_samples}


def predict_labels(features: NDArray[np.floating[Any]], text: NDArray[np.floating[Any]],
                   vocabulary: Vocabulary) -> NDArray[np.uint16]:
    """Zero-shot labels of (..., D) features against (C, D) text embeddings: (...,) uint16.

    Both sides are expected L2-normalised (cosine = dot product); the label is
    ``vocabulary.labels[argmax]`` (0 for a free-text entry).
    """
    text32 = _check_text(text, vocabulary)
    feats = np.asarray(features, dtype=np.float32)
    if feats.shape[-1] != text32.shape[1]:
        raise TeacherError(f'features have dimension {feats.shape[-1]} but the text embeddings '
                           f'{text32.shape[1]}; they must come from the same teacher')
    lookup = np.asarray(vocabulary.labels, dtype=np.uint16)
    return lookup[np.argmax(feats @ text32.T, axis=-1)]


def predict_grid_labels(grid: FeatureGrid, text: NDArray[np.floating[Any]],
                        vocabulary: Vocabulary) -> NDArray[np.uint16]:
    """Zero-shot label of every pixel, (H, W) uint16, from the bilinearly upsampled grid.

    Identical to ``predict_labels(sample_grid(grid, every pixel centre), ...)``: cosine scores
    are linear in the features, so upsampling the (Hg, Wg, C) scores gives the same argmax as
    upsampling (and re-normalising) the (Hg, Wg, D) features, without the full-size grid.
    """
    text32 = _check_text(text, vocabulary)
    if grid.feature_dim != text32.shape[1]:
        raise TeacherError(f'the grid has dimension {grid.feature_dim} but the text embeddings '
                           f'{text32.shape[1]}; they must come from the same teacher')
    scores = upsample_grid(grid.features.astype(np.float32) @ text32.T, grid.image_size_px)
    lookup = np.asarray(vocabulary.labels, dtype=np.uint16)
    return lookup[np.argmax(scores, axis=-1)]


def zero_shot_pixels(teacher: Teacher, vocabulary: Vocabulary, images: Iterable[TeacherImage],
                     batch_size: int = 8) -> ZeroShotResult:
    """2D zero-shot scores of ``teacher`` on every labelled pixel of ``images``.

    Every image needs ``semantic`` (ground truth). Images are run ``batch_size`` at a time;
    the confusion matrix accumulates over all of them.
    """
    if batch_size < 1:
        raise TeacherError(f'batch_size must be at least 1, got {batch_size}')
    text = teacher.text_features(vocabulary)
    confusion = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    batch: list[tuple[TeacherImage, NDArray[np.uint16]]] = []

    def score(batch: Sequence[tuple[TeacherImage, NDArray[np.uint16]]]) -> None:
        grids = teacher.image_features([image for image, _ in batch])
        for (_, semantic), grid in zip(batch, grids, strict=True):
            confusion[...] += confusion_matrix(semantic, predict_grid_labels(grid, text,
                                                                             vocabulary))

    for image in images:
        if image.semantic is None:
            raise TeacherError(f'zero_shot_pixels needs ground-truth semantic images; '
                               f'{image.camera} at t_ns={image.t_ns} has none')
        batch.append((image, image.semantic))
        if len(batch) == batch_size:
            score(batch)
            batch = []
    if batch:
        score(batch)
    return ZeroShotResult.from_confusion(confusion)


def zero_shot_points(point_features: NDArray[np.floating[Any]], point_labels: NDArray[np.integer],
                     text: NDArray[np.floating[Any]], vocabulary: Vocabulary) -> ZeroShotResult:
    """Zero-shot scores of (M, D) per-point features (e.g. :func:`sample_grid` of the teacher's
    grid at the points' projections) against (M,) ground-truth labels (0 = ignore)."""
    feats = np.asarray(point_features)
    labels = np.asarray(point_labels)
    if feats.ndim != 2 or labels.shape != (feats.shape[0],):
        raise TeacherError(f'zero_shot_points: expected (M, D) features and (M,) labels, got '
                           f'{feats.shape} and {labels.shape}')
    predicted = predict_labels(feats, text, vocabulary)
    return ZeroShotResult.from_confusion(confusion_matrix(labels, predicted))


def _check_text(text: NDArray[np.floating[Any]], vocabulary: Vocabulary) -> NDArray[np.float32]:
    text32 = np.asarray(text, dtype=np.float32)
    if text32.ndim != 2 or text32.shape[0] != len(vocabulary):
        raise TeacherError(f'text embeddings must be (C, D) with C = {len(vocabulary)} vocabulary '
                           f'entries, got shape {text32.shape}')
    return text32
