"""A 2D teacher as preparation uses it: camera frames in, one feature grid per camera out.

:func:`teacher_spec` adapts a built :class:`~relkd_core.teachers.Teacher`;
:func:`camera_teacher_spec` builds one by name first and is picklable through
``functools.partial``, so a worker pool can build its own copy in each process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.prepare import TeacherSpec
from relkd_core.types import CameraFrame

if TYPE_CHECKING:
    from relkd_core.teachers import Teacher, TeacherName


def teacher_spec(teacher: Teacher) -> TeacherSpec:
    """Adapt a built teacher to what preparation stores: one feature grid per camera."""
    from relkd_core.teachers import TeacherImage

    def featurize(cameras: Sequence[CameraFrame]) -> list[NDArray[np.floating]]:
        images = [TeacherImage(rgb=c.rgb, camera=c.name, t_ns=c.t_ns, semantic=c.semantic,
                               instance=c.instance) for c in cameras]
        return [grid.features for grid in teacher.image_features(images)]

    return TeacherSpec(teacher.teacher_id, teacher.feature_dim, featurize)


def camera_teacher_spec(name: TeacherName,
                        config: str | os.PathLike[str] | None) -> TeacherSpec:
    """Build the teacher ``name`` from its YAML config (``None``: its defaults) and adapt it."""
    from relkd_core.teachers import build_teacher

    return teacher_spec(build_teacher(name, config))
