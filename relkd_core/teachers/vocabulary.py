"""Open vocabularies: the class names a teacher's text side embeds, and the label each maps to.

An entry has a ``name`` (what reports and legends show), the ``prompts`` the text encoder embeds
(synonyms; their embeddings are averaged into one class embedding), and a taxonomy ``label``
(1..16, see :mod:`relkd_core.taxonomy`) so that zero-shot predictions can be scored against
ground truth. Free-text entries ("vehicle", "a person walking") have label 0: they can be
queried and shown, but a pixel predicted as one counts as a miss for every ground-truth class.

YAML layout (``config/vocabularies/nuscenes.yaml``)::

    classes:
      - name: driveable_surface
        prompts: [road, street]      # optional; default: the name with '_' -> ' '
        label: 11                     # optional; default: the taxonomy label of `name`, else 0
      - name: vehicle                 # free text: label 0
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from relkd_core.config import bounded, load_config
from relkd_core.errors import ConfigError, TeacherError
from relkd_core.taxonomy import CLASS_NAMES, IGNORE_LABEL, LABEL_OF, NUM_CLASSES

__all__ = ['DEFAULT_PROMPTS', 'Vocabulary', 'load_vocabulary']

#: Prompt words of the nuScenes-lidarseg classes: what a captioned photo would call them. The
#: taxonomy's names are dataset jargon ("driveable_surface", "manmade") that a text model has
#: rarely seen next to pictures; everyday words embed closer to what the pixels show.
DEFAULT_PROMPTS: dict[str, tuple[str, ...]] = {
    'barrier': ('barrier', 'concrete barrier'),
    'bicycle': ('bicycle',),
    'bus': ('bus',),
    'car': ('car',),
    'construction_vehicle': ('construction vehicle', 'excavator'),
    'motorcycle': ('motorcycle',),
    'pedestrian': ('pedestrian', 'person'),
    'traffic_cone': ('traffic cone',),
    'trailer': ('trailer',),
    'truck': ('truck',),
    'driveable_surface': ('road',),
    'other_flat': ('traffic island', 'curb'),
    'sidewalk': ('sidewalk',),
    'terrain': ('grass', 'terrain'),
    'manmade': ('building', 'wall'),
    'vegetation': ('tree', 'vegetation'),
}


@dataclass(frozen=True)
class Vocabulary:
    """Class names, their prompts (synonyms) and taxonomy labels, one entry per class.

    ``names``, ``prompts`` and ``labels`` have one item per entry. ``labels[i]`` is the taxonomy
    label (1..16) entry ``i`` stands for, or 0 for a free-text entry. Several entries may share a
    label (e.g. "road" and "street" both 11): the zero-shot prediction is ``labels[argmax]``.
    """

    names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise TeacherError('a vocabulary needs at least one class name, got none')
        if not len(self.names) == len(self.prompts) == len(self.labels):
            raise TeacherError(
                f'vocabulary: names, prompts and labels must have one item per class, got '
                f'{len(self.names)}, {len(self.prompts)} and {len(self.labels)}'
            )
        if len(set(self.names)) != len(self.names):
            repeated = sorted({n for n in self.names if self.names.count(n) > 1})
            raise TeacherError(f'vocabulary: class names must be unique, repeated: {repeated}')
        for name, prompts, label in zip(self.names, self.prompts, self.labels, strict=True):
            if not name.strip():
                raise TeacherError('vocabulary: a class name is empty')
            if not prompts or not all(p.strip() for p in prompts):
                raise TeacherError(f'vocabulary: class {name!r} needs non-empty prompts')
            if not 0 <= label <= NUM_CLASSES:
                raise TeacherError(
                    f'vocabulary: class {name!r} has label {label}; expected 1..{NUM_CLASSES} '
                    f'(a taxonomy class) or 0 (free text)'
                )

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def default(cls) -> Vocabulary:
        """The 16 nuScenes-lidarseg classes in label order (labels 1..16), everyday prompts."""
        return cls(names=CLASS_NAMES, prompts=tuple(DEFAULT_PROMPTS[n] for n in CLASS_NAMES),
                   labels=tuple(LABEL_OF[n] for n in CLASS_NAMES))

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Vocabulary:
        """A vocabulary of free text or taxonomy names, e.g. ``['vehicle', 'road', 'car']``.

        A taxonomy class name (``'car'``, ``'driveable_surface'``) gets its label and default
        prompts; any other text is its own single prompt with label 0.
        """
        if isinstance(names, str):
            raise TeacherError(f'Vocabulary.from_names expects a list of names, got the string '
                               f'{names!r}; write [{names!r}]')
        return cls(
            names=tuple(names),
            prompts=tuple(DEFAULT_PROMPTS.get(n, (n.replace('_', ' '),)) for n in names),
            labels=tuple(LABEL_OF.get(n, IGNORE_LABEL) for n in names),
        )


@dataclass(frozen=True, kw_only=True)
class VocabularyEntryConfig:
    """One ``classes:`` item of a vocabulary YAML file."""

    name: str
    prompts: tuple[str, ...] = ()
    label: int | None = bounded(None, min=0, max=NUM_CLASSES)


@dataclass(frozen=True, kw_only=True)
class VocabularyConfig:
    """A vocabulary YAML file: ``classes:`` is a list of entries."""

    classes: tuple[VocabularyEntryConfig, ...]


def load_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """Read a vocabulary YAML file (layout in the module docstring).

    Raises ConfigError for an unreadable file, unknown keys or wrong types (naming the dotted
    key), and for an inconsistent vocabulary (repeated names, empty prompts).
    """
    config = load_config(VocabularyConfig, path)
    names, prompts, labels = [], [], []
    for entry in config.classes:
        names.append(entry.name)
        default = DEFAULT_PROMPTS.get(entry.name, (entry.name.replace('_', ' '),))
        prompts.append(entry.prompts or default)
        labels.append(LABEL_OF.get(entry.name, IGNORE_LABEL) if entry.label is None
                      else entry.label)
    try:
        return Vocabulary(names=tuple(names), prompts=tuple(prompts), labels=tuple(labels))
    except TeacherError as err:
        raise ConfigError(f'{os.fspath(path)}: {err}') from err
