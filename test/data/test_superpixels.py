"""Tests for relkd_core.data.superpixels: SLIC segments, relabelling, input validation."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from relkd_core.data.superpixels import slic_superpixels
from relkd_core.errors import DataError

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)


def _quadrants(height: int = 40, width: int = 64) -> np.ndarray:
    """Four flat colour quadrants, numbered row-major."""
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:height // 2, :width // 2] = COLOURS[0]
    rgb[:height // 2, width // 2:] = COLOURS[1]
    rgb[height // 2:, :width // 2] = COLOURS[2]
    rgb[height // 2:, width // 2:] = COLOURS[3]
    return rgb


def _textured(rng: np.random.Generator) -> np.ndarray:
    """Smooth colour gradients with mild noise: an image SLIC cuts into many segments."""
    v, u = np.mgrid[0:60, 0:90]
    rgb = np.stack([u * 2.5, v * 4.0, 255 - u * 2.0], axis=-1) + rng.normal(0, 4, (60, 90, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_superpixels_follow_flat_colour_quadrants() -> None:
    segments = slic_superpixels(_quadrants(), 4)
    expected = np.zeros((40, 64), dtype=np.int32)
    expected[:20, 32:], expected[20:, :32], expected[20:, 32:] = 1, 2, 3
    assert segments.dtype == np.int32
    np.testing.assert_array_equal(segments, expected)


def test_superpixels_ids_are_contiguous_and_deterministic() -> None:
    rgb = _textured(np.random.default_rng(0))
    segments = slic_superpixels(rgb, 24)
    ids = np.unique(segments)
    assert segments.shape == (60, 90) and segments.dtype == np.int32
    assert 12 <= len(ids) <= 40
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    np.testing.assert_array_equal(slic_superpixels(rgb, 24), segments)


def test_superpixels_one_segment_covers_the_image() -> None:
    segments = slic_superpixels(_textured(np.random.default_rng(0)), 1)
    np.testing.assert_array_equal(segments, np.zeros((60, 90), dtype=np.int32))


BAD_INPUTS = [
    (np.zeros((8, 8, 3), np.float32), 4, 10.0,
     r'rgb: expected an H×W×3 uint8 image, got float32 array of shape \(8, 8, 3\)'),
    (np.zeros((8, 8), np.uint8), 4, 10.0,
     r'rgb: expected an H×W×3 uint8 image, got uint8 array of shape \(8, 8\)'),
    (np.zeros((8, 8, 4), np.uint8), 4, 10.0, r'got uint8 array of shape \(8, 8, 4\)'),
    (np.zeros((0, 8, 3), np.uint8), 4, 10.0, r'got uint8 array of shape \(0, 8, 3\)'),
    ([[0, 0, 0]], 4, 10.0, r'rgb: expected an H×W×3 uint8 image, got list'),
    (np.zeros((8, 8, 3), np.uint8), 0, 10.0,
     r'num_segments: expected a whole number of at least 1, got 0'),
    (np.zeros((8, 8, 3), np.uint8), 2.5, 10.0, r'num_segments: .* got 2\.5'),
    (np.zeros((8, 8, 3), np.uint8), True, 10.0, r'num_segments: .* got True'),
    (np.zeros((8, 8, 3), np.uint8), 4, 0.0, r'compactness: expected a positive number, got 0\.0'),
    (np.zeros((8, 8, 3), np.uint8), 4, float('nan'), r'compactness: .* got nan'),
]


@pytest.mark.parametrize(('rgb', 'num_segments', 'compactness', 'message'), BAD_INPUTS)
def test_superpixels_bad_input_is_refused(rgb: Any, num_segments: Any, compactness: float,
                                          message: str) -> None:
    with pytest.raises(DataError, match=message):
        slic_superpixels(rgb, num_segments, compactness)


def test_superpixels_without_scikit_image_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail, as an uninstalled package would.
    monkeypatch.setitem(sys.modules, 'skimage', None)
    monkeypatch.setitem(sys.modules, 'skimage.segmentation', None)
    with pytest.raises(DataError, match=r'superpixels need scikit-image: `pip install '
                                        r'scikit-image` \(or the \[superpixels\] extra'):
        slic_superpixels(_quadrants(), 4)
