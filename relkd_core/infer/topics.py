"""The topics labelling writes to: the node's default output topics (relative names), and under
a leading ``/`` those of a bag that ``relkd-label`` writes. Plain names, no torch: a node
checks its parameters with them before it loads anything heavy."""

from __future__ import annotations

from typing import Final

__all__ = ['LABELED_TOPIC', 'LEGEND_TOPIC']

#: Topic of the labeled cloud.
LABELED_TOPIC: Final = 'labeled_points'
#: Topic of the legend MarkerArray.
LEGEND_TOPIC: Final = 'legend'
