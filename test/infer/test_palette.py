"""Entry colours, packed RGB and the labeled point layout."""

from __future__ import annotations

import numpy as np
import pytest

from relkd_core.errors import DataError
from relkd_core.infer import (
    FREE_TEXT_COLORS,
    LABELED_FIELDS,
    UNLABELED,
    UNLABELED_COLOR,
    LabelResult,
    entry_colors,
    label_colors,
    labeled_points,
    pack_rgb,
)
from relkd_core.taxonomy import LABEL_COLORS, LABEL_OF
from relkd_core.teachers.vocabulary import Vocabulary


def test_entry_colors_use_taxonomy_colours_then_the_free_text_palette() -> None:
    colors = entry_colors(Vocabulary.from_names(['car', 'lamp post', 'road', 'bench']))
    assert colors.dtype == np.uint8
    assert colors.tolist() == [list(LABEL_COLORS[LABEL_OF['car']]), list(FREE_TEXT_COLORS[1]),
                               list(FREE_TEXT_COLORS[2]), list(FREE_TEXT_COLORS[3])]


def test_label_colors_give_grey_to_unlabeled_points() -> None:
    colors = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    rgb = label_colors(np.array([1, UNLABELED, 0], np.uint16), colors)
    assert rgb.tolist() == [[4, 5, 6], list(UNLABELED_COLOR), [1, 2, 3]]


def test_pack_rgb_is_0x00rrggbb() -> None:
    packed = pack_rgb(np.array([[255, 0, 0], [0x12, 0x34, 0x56]], np.uint8))
    assert packed.dtype == np.uint32 and packed.tolist() == [0xFF0000, 0x123456]


def test_labeled_points_fill_every_field() -> None:
    scan = np.array([[1, 2, 3, 0.5], [4, 5, 6, 0.25]], np.float32)
    result = LabelResult(np.array([1, UNLABELED], np.uint16), np.array([0.75, np.nan], np.float32))
    points = labeled_points(scan, result, np.array([[0, 0, 0], [10, 20, 30]], np.uint8))
    assert points.dtype.names == LABELED_FIELDS and points.dtype.itemsize == 28
    assert points['x'].tolist() == [1, 4] and points['intensity'].tolist() == [0.5, 0.25]
    assert points['label'].tolist() == [1, UNLABELED]
    assert points['score'][0] == np.float32(0.75) and np.isnan(points['score'][1])
    assert points['rgb'].tolist() == [(10 << 16) | (20 << 8) | 30, 0x808080]


def test_labeled_points_bytes_are_the_fields_with_zero_padding() -> None:
    rng = np.random.default_rng(3)
    scan = rng.normal(size=(500, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 500).astype(np.uint16)
    labels[::7] = UNLABELED
    scores = rng.uniform(-1, 1, 500).astype(np.float32)
    scores[labels == UNLABELED] = np.nan
    colors = rng.integers(0, 256, (3, 3)).astype(np.uint8)
    points = labeled_points(scan, LabelResult(labels, scores), colors)
    raw = points.view(np.uint8).reshape(500, 28)
    np.testing.assert_array_equal(raw[:, :16].view(np.float32), scan)
    np.testing.assert_array_equal(raw[:, 16:18].view('<u2')[:, 0], labels)
    assert not raw[:, 18:20].any()
    np.testing.assert_array_equal(raw[:, 20:24].view('<f4')[:, 0], scores)
    np.testing.assert_array_equal(raw[:, 24:28].view('<u4')[:, 0],
                                  pack_rgb(label_colors(labels, colors)))


def test_label_colors_of_signed_labels_out_of_range_are_grey() -> None:
    colors = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    rgb = label_colors(np.array([-1, 0, 2, 1], np.int64), colors)
    assert rgb.tolist() == [list(UNLABELED_COLOR), [1, 2, 3], list(UNLABELED_COLOR), [4, 5, 6]]


def test_labeled_points_reject_a_mismatched_scan() -> None:
    result = LabelResult(np.zeros(3, np.uint16), np.zeros(3, np.float32))
    with pytest.raises(DataError, match=r'expected a \(N, 4\) scan for 3 labels'):
        labeled_points(np.zeros((2, 4), np.float32), result, np.zeros((1, 3), np.uint8))
