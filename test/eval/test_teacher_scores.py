"""The three named teacher figures: pixels, every projected pair, the student's visible points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relkd_core.data.prepared import PreparedDataset
from relkd_core.eval.teacher_scores import (
    first_pairs,
    predicted_counts,
    teacher_projected,
    teacher_visible,
)
from relkd_core.metrics import confusion_matrix
from relkd_core.teachers import Vocabulary, build_teacher
from relkd_core.teachers.evaluate import predict_labels


def test_first_pairs_takes_the_first_pair_of_every_point() -> None:
    points, rows = first_pairs(np.array([5, 2, 5, 7, 2]))
    np.testing.assert_array_equal(points, [2, 5, 7])
    np.testing.assert_array_equal(rows, [1, 0, 3])


def test_predicted_counts_are_confusion_columns_without_ignore() -> None:
    confusion = confusion_matrix(np.array([1, 1, 2, 0]), np.array([2, 2, 2, 1]), 2)
    assert predicted_counts(confusion, ('a', 'b')) == {'a': 0, 'b': 3}


def test_teacher_projected_and_visible_score_their_pairs(tiny_prepared: Path) -> None:
    dataset = PreparedDataset(tiny_prepared)
    vocabulary = Vocabulary.default()
    text = build_teacher('synthetic').text_features(vocabulary)
    projected = teacher_projected(dataset, text, vocabulary)
    visible = teacher_visible(dataset, text, vocabulary)
    pairs = unique = 0
    expected = np.zeros((17, 17), np.int64)
    for i in range(len(dataset)):
        frame = dataset[i]
        assert frame.labels is not None and frame.pair_features is not None
        labels = frame.labels[frame.pair_point]
        pairs += int((labels != 0).sum())
        points, rows = first_pairs(frame.pair_point)
        unique += int((frame.labels[points] != 0).sum())
        expected += confusion_matrix(frame.labels[points], predict_labels(
            frame.pair_features[rows], text, vocabulary))
    assert projected.num_samples == pairs and visible.num_samples == unique
    assert unique < pairs  # the nuScenes rig's cameras overlap
    np.testing.assert_array_equal(visible.confusion, expected)
    assert 0.0 < visible.miou < 1.0
