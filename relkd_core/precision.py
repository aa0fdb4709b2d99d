"""The numeric precisions a student can label in: ``float32`` (default) or ``bfloat16``
(:mod:`relkd_core.models.inference` runs them). Plain names, no torch: a node or a command
checks its ``precision`` against them before it loads anything heavy."""

from __future__ import annotations

from typing import Final, Literal

__all__ = ['PRECISIONS', 'Precision']

Precision = Literal['float32', 'bfloat16']
PRECISIONS: Final = ('float32', 'bfloat16')
