"""2D teachers: frozen image models giving dense features and text embeddings in one space.

- ``synthetic``: the simulated VLM of the synthetic world (:mod:`.synthetic`).
- ``openclip``: MaskCLIP dense features of an open_clip ViT (:mod:`.openclip`).
- ``precomputed``: features another model wrote to disk (:mod:`.precomputed`).
- ``learned``: a small network trained on synthetic drives to map RGB patches into the text
  space (:mod:`.learned`); needs only RGB, like a real VLM.

:func:`build_teacher` builds one by name from a YAML config (``config/teachers/*.yaml``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Literal

from relkd_core.config import load_config
from relkd_core.errors import TeacherError
from relkd_core.teachers.base import (
    FeatureGrid,
    Teacher,
    TeacherImage,
    grid_shape,
    sample_grid,
    upsample_grid,
)
from relkd_core.teachers.vocabulary import Vocabulary, load_vocabulary

__all__ = [
    'TEACHERS',
    'FeatureGrid',
    'Teacher',
    'TeacherImage',
    'Vocabulary',
    'build_teacher',
    'grid_shape',
    'load_vocabulary',
    'sample_grid',
    'upsample_grid',
]

TeacherName = Literal['synthetic', 'openclip', 'precomputed', 'learned']

#: name -> (module, config class, teacher class). Modules are imported on use: the openclip one
#: pulls in torch, which a synthetic or precomputed teacher does not need.
TEACHERS: dict[str, tuple[str, str, str]] = {
    'synthetic': ('relkd_core.teachers.synthetic', 'SyntheticTeacherConfig', 'SyntheticTeacher'),
    'openclip': ('relkd_core.teachers.openclip', 'OpenClipTeacherConfig', 'OpenClipTeacher'),
    'precomputed': ('relkd_core.teachers.precomputed', 'PrecomputedTeacherConfig',
                    'PrecomputedTeacher'),
    'learned': ('relkd_core.teachers.learned', 'LearnedTeacherConfig', 'LearnedTeacher'),
}


def build_teacher(name: TeacherName, config_path: str | os.PathLike[str] | None = None,
                  overrides: Sequence[str] = ()) -> Teacher:
    """Build the teacher ``name`` from a YAML config (``None``: all defaults) and
    ``dotted.key=value`` overrides, e.g. ``build_teacher('synthetic', None, ['pixel_noise=1.0'])``.

    Raises TeacherError for an unknown name or a teacher that cannot load (missing package or
    weights), ConfigError for a bad config file or override.
    """
    if name not in TEACHERS:
        raise TeacherError(f'unknown teacher {name!r}; expected one of {sorted(TEACHERS)}')
    module_name, config_name, teacher_name = TEACHERS[name]
    module = importlib.import_module(module_name)
    config = load_config(getattr(module, config_name), config_path, overrides)
    teacher: Teacher = getattr(module, teacher_name)(config)
    return teacher
