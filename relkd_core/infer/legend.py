"""The legend of a labeled cloud: one coloured text line per vocabulary entry.

The node publishes it as a ``visualization_msgs/MarkerArray`` and ``relkd-label`` writes the same
markers into bags; both build their messages from :func:`legend_entries`, so the two look alike
in RViz. A legend starts with a DELETEALL marker in :data:`LEGEND_NAMESPACE`, then one
TEXT_VIEW_FACING marker per entry, stacked upwards from the frame origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import DataError

__all__ = ['LEGEND_NAMESPACE', 'LegendEntry', 'legend_entries']

#: Marker namespace of the legend.
LEGEND_NAMESPACE: Final = 'relkd_legend'


@dataclass(frozen=True)
class LegendEntry:
    """One text marker: ``marker_id``, its ``text``, height ``z_m`` above the frame origin,
    text height ``text_height_m`` (metres) and colour ``rgba`` (floats in [0, 1])."""

    marker_id: int
    text: str
    z_m: float
    text_height_m: float
    rgba: tuple[float, float, float, float]


def legend_entries(names: Sequence[str], colors: NDArray[np.uint8], *,
                   line_height_m: float = 1.0) -> list[LegendEntry]:
    """The text markers of a legend for vocabulary ``names`` and their (C, 3) uint8
    ``colors``: entry i reads ``'i: name'``, the first entry on top."""
    colors = np.asarray(colors)
    if colors.shape != (len(names), 3):
        raise DataError(f'legend: expected ({len(names)}, 3) colours for {len(names)} names, '
                        f'got shape {colors.shape}')
    entries = []
    for i, (name, rgb) in enumerate(zip(names, colors, strict=True)):
        red, green, blue = (float(c) / 255.0 for c in rgb)
        entries.append(LegendEntry(marker_id=i, text=f'{i}: {name}',
                                   z_m=float((len(names) - i) * line_height_m),
                                   text_height_m=float(0.8 * line_height_m),
                                   rgba=(red, green, blue, 1.0)))
    return entries
