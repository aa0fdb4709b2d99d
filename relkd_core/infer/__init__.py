"""Inference: open-vocabulary labels for lidar scans, their colours and point layout.

No ROS here: :mod:`relkd_ros` and ``relkd-label`` wrap these functions. The names below load
their modules on first use, so that importing a light module of this package (``topics``,
``legend``) does not import torch: a node checks its parameters before it loads the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relkd_core.infer.labeled import LABELED_FIELDS, LABELED_POINT_DTYPE, labeled_points
    from relkd_core.infer.labeler import (
        UNLABELED,
        Labeler,
        LabelResult,
        TextEncoder,
        VocabularyEmbedding,
        teacher_text_encoder,
    )
    from relkd_core.infer.palette import (
        FREE_TEXT_COLORS,
        UNLABELED_COLOR,
        entry_colors,
        label_colors,
        pack_rgb,
    )

#: Each public name -> the module that defines it.
_HOMES = {
    **dict.fromkeys(('LABELED_FIELDS', 'LABELED_POINT_DTYPE', 'labeled_points'),
                    'relkd_core.infer.labeled'),
    **dict.fromkeys(('UNLABELED', 'Labeler', 'LabelResult', 'TextEncoder', 'VocabularyEmbedding',
                     'teacher_text_encoder'), 'relkd_core.infer.labeler'),
    **dict.fromkeys(('FREE_TEXT_COLORS', 'UNLABELED_COLOR', 'entry_colors', 'label_colors',
                     'pack_rgb'), 'relkd_core.infer.palette'),
}

__all__ = [
    'FREE_TEXT_COLORS',
    'LABELED_FIELDS',
    'LABELED_POINT_DTYPE',
    'UNLABELED',
    'UNLABELED_COLOR',
    'LabelResult',
    'Labeler',
    'TextEncoder',
    'VocabularyEmbedding',
    'entry_colors',
    'label_colors',
    'labeled_points',
    'pack_rgb',
    'teacher_text_encoder',
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(home), name)
