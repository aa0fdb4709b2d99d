"""The nuScenes-lidarseg 16-class taxonomy used across relkd_core.

Label 0 is ``ignore`` (noise, sky, unlabelled), as in nuScenes-lidarseg's 16-class
challenge mapping; the 16 classes are labels 1..16 in the challenge order.
"""

from __future__ import annotations

from typing import Final

IGNORE_LABEL: Final = 0

CLASS_NAMES: Final[tuple[str, ...]] = (
    'barrier',
    'bicycle',
    'bus',
    'car',
    'construction_vehicle',
    'motorcycle',
    'pedestrian',
    'traffic_cone',
    'trailer',
    'truck',
    'driveable_surface',
    'other_flat',
    'sidewalk',
    'terrain',
    'manmade',
    'vegetation',
)
NUM_CLASSES: Final = len(CLASS_NAMES)

#: label id (1..16) of each class name.
LABEL_OF: Final[dict[str, int]] = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}

#: "things" get instance ids; the rest are "stuff" (instance 0).
THING_CLASSES: Final[frozenset[str]] = frozenset(CLASS_NAMES[:10])

#: RGB colours (0..255) per label, index 0 = ignore; close to the nuScenes-lidarseg palette.
LABEL_COLORS: Final[tuple[tuple[int, int, int], ...]] = (
    (0, 0, 0),
    (112, 128, 144),
    (220, 20, 60),
    (255, 127, 80),
    (255, 158, 0),
    (233, 150, 70),
    (255, 61, 99),
    (0, 0, 230),
    (47, 79, 79),
    (255, 140, 0),
    (255, 99, 71),
    (0, 207, 191),
    (175, 0, 75),
    (75, 0, 75),
    (112, 180, 60),
    (222, 184, 135),
    (0, 175, 0),
)


def label_name(label: int) -> str:
    """Class name of a label id; ``'ignore'`` for 0."""
    if label == IGNORE_LABEL:
        return 'ignore'
    if not 1 <= label <= NUM_CLASSES:
        raise ValueError(f'label must be in 0..{NUM_CLASSES}, got {label}')
    return CLASS_NAMES[label - 1]
