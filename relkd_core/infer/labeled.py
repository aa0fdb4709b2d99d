"""The labeled point layout shared by the ROS node and the offline bag labeler.

One point is 28 bytes, every field aligned to its size::

    x, y, z     float32 @ 0, 4, 8   metres, the input cloud's frame
    intensity   float32 @ 12        as in the input (after intensity_scale)
    label       uint16  @ 16        vocabulary entry index, 0xFFFF = unlabeled
    (2 bytes padding)
    score       float32 @ 20        cosine similarity to the entry (NaN: not labelled)
    rgb         uint32  @ 24        0x00RRGGBB of the entry's colour (RViz "RGB8")
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError
from relkd_core.infer.labeler import LabelResult
from relkd_core.infer.palette import entry_indices, entry_table, pack_rgb

__all__ = ['LABELED_FIELDS', 'LABELED_POINT_DTYPE', 'labeled_points']

LABELED_POINT_DTYPE: Final = np.dtype({
    'names': ['x', 'y', 'z', 'intensity', 'label', 'score', 'rgb'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4', '<u4'],
    'offsets': [0, 4, 8, 12, 16, 20, 24],
    'itemsize': 28,
})

#: Field names of a labeled cloud, in order.
LABELED_FIELDS: Final = tuple(LABELED_POINT_DTYPE.names or ())


def labeled_points(scan: NDArray[np.float32], result: LabelResult,
                   colors: NDArray[np.uint8]) -> NDArray[np.void]:
    """(N,) structured array of :data:`LABELED_POINT_DTYPE` from a (N, 4) xyzi scan, its
    :class:`LabelResult` and the (C, 3) uint8 entry colours."""
    if scan.ndim != 2 or scan.shape[1] != 4 or len(scan) != len(result.labels):
        raise DataError(f'labeled_points: expected a (N, 4) scan for {len(result.labels)} labels, '
                        f'got shape {scan.shape}')
    # Written as seven little-endian 32-bit words per point (the layout above, the label's two
    # padding bytes zero): the four xyzi words in one copy instead of a copy per field.
    count = len(scan)
    words = np.empty((count, 7), dtype='<u4')
    words[:, :4] = np.ascontiguousarray(scan, dtype='<f4').view('<u4')
    words[:, 4] = np.asarray(result.labels, dtype='<u2')
    words[:, 5] = np.ascontiguousarray(result.scores, dtype='<f4').view('<u4')
    table = pack_rgb(entry_table(colors))
    words[:, 6] = table[entry_indices(result.labels, len(table) - 1)]
    points: NDArray[np.void] = words.view(LABELED_POINT_DTYPE).reshape(count)
    return points
