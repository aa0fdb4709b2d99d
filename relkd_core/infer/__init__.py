"""Inference: open-vocabulary labels for lidar scans, their colours and point layout.

No ROS here: :mod:`relkd_ros` and ``relkd-label`` wrap these functions.
"""

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
