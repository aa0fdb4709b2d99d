"""Colours of vocabulary entries, one palette for the labeled cloud, overlays and legends.

An entry that stands for a taxonomy class takes that class's colour in the taxonomy
(nuScenes-16 unless told), so the default vocabulary looks like the dataset's palette;
synonyms of one class share its colour. Free-text entries take colours from
:data:`FREE_TEXT_COLORS` by entry index, so a given vocabulary is always drawn the same way.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.taxonomy import NUSCENES16, Taxonomy
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = ['FREE_TEXT_COLORS', 'UNLABELED_COLOR', 'entry_colors', 'entry_indices', 'entry_table',
           'label_colors', 'pack_rgb']

#: RGB of unlabeled points: mid grey, visible on RViz's dark and light backgrounds.
UNLABELED_COLOR: Final = (128, 128, 128)

#: Distinct, saturated RGB colours for free-text entries (cycled by entry index).
FREE_TEXT_COLORS: Final[tuple[tuple[int, int, int], ...]] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 255, 255),
)


def entry_colors(vocabulary: Vocabulary, taxonomy: Taxonomy = NUSCENES16) -> NDArray[np.uint8]:
    """(C, 3) uint8 RGB, one row per vocabulary entry (see the module doc); a label outside
    ``taxonomy`` is drawn as free text."""
    palette = taxonomy.colors
    colors = [palette[label] if 0 < label < len(palette)
              else FREE_TEXT_COLORS[i % len(FREE_TEXT_COLORS)]
              for i, label in enumerate(vocabulary.labels)]
    return np.asarray(colors, dtype=np.uint8).reshape(-1, 3)


def label_colors(labels: NDArray[np.integer], colors: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(N, 3) uint8 RGB of per-point entry indices ``labels`` (N,); indices outside
    ``colors`` (:data:`~relkd_core.infer.labeler.UNLABELED`) get :data:`UNLABELED_COLOR`."""
    table = entry_table(colors)
    return table[entry_indices(labels, len(table) - 1)]


def entry_table(colors: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(C + 1, 3) uint8: the (C, 3) entry ``colors``, then :data:`UNLABELED_COLOR`."""
    return np.concatenate([colors.reshape(-1, 3).astype(np.uint8),
                           np.asarray([UNLABELED_COLOR], dtype=np.uint8)])


def entry_indices(labels: NDArray[np.integer], count: int) -> NDArray[np.intp]:
    """Rows of :func:`entry_table` for per-point entry indices ``labels``: the index itself
    when in ``[0, count)``, ``count`` (the unlabeled colour) otherwise."""
    index = np.asarray(labels)
    if index.dtype.kind == 'u':  # no negative values: one clamp
        return np.minimum(index, count).astype(np.intp, copy=False)
    index = index.astype(np.int64, copy=False)
    return np.where((index >= 0) & (index < count), index, count)


def pack_rgb(rgb: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """(N,) uint32 ``0x00RRGGBB`` from (N, 3) uint8 RGB: the ``rgb`` field RViz reads."""
    rgb32 = np.asarray(rgb, dtype=np.uint32).reshape(-1, 3)
    packed = (rgb32[:, 0] << 16) | (rgb32[:, 1] << 8) | rgb32[:, 2]
    return packed.astype(np.uint32)
