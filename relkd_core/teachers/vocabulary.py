"""Open vocabularies: the class names a teacher's text side embeds, and the label each maps to.

An entry has a ``name`` (what reports and legends show), the ``prompts`` the text encoder embeds
(synonyms; their embeddings are averaged into one class embedding), and a taxonomy ``label``
(1..N of the data's taxonomy, see :mod:`relkd_core.taxonomy`; nuScenes-16 by default) so that
zero-shot predictions can be scored against ground truth. Free-text entries ("vehicle",
"a person walking") have label 0: they can be queried and shown, but a pixel predicted as one
counts as a miss for every ground-truth class.

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
from relkd_core.taxonomy import IGNORE_LABEL, MAX_RAW_ID, NUSCENES16, Taxonomy

__all__ = ['DEFAULT_PROMPTS', 'Vocabulary', 'load_vocabulary']

#: Prompt words of the nuScenes-lidarseg classes: what a captioned photo would call them. The
#: taxonomy's names are dataset jargon ("driveable_surface", "manmade") that a text model has
#: rarely seen next to pictures; everyday words embed closer to what the pixels show. They live
#: in the taxonomy file (``config/taxonomies/nuscenes16.yaml``).
DEFAULT_PROMPTS: dict[str, tuple[str, ...]] = dict(zip(NUSCENES16.names, NUSCENES16.prompts,
                                                       strict=True))


@dataclass(frozen=True)
class Vocabulary:
    """Class names, their prompts (synonyms) and taxonomy labels, one entry per class.

    ``names``, ``prompts`` and ``labels`` have one item per entry. ``labels[i]`` is the taxonomy
    label (1..N) entry ``i`` stands for, or 0 for a free-text entry. Several entries may share a
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
            if not 0 <= label <= MAX_RAW_ID:
                raise TeacherError(
                    f'vocabulary: class {name!r} has label {label}; expected a taxonomy label '
                    f'(1..N) or 0 (free text)'
                )

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def default(cls) -> Vocabulary:
        """The 16 nuScenes-lidarseg classes in label order (labels 1..16), everyday prompts."""
        return cls.from_taxonomy(NUSCENES16)

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy) -> Vocabulary:
        """Every class of ``taxonomy`` in label order, with the taxonomy's prompts: the
        default vocabulary of data labelled in it (e.g. SemanticKITTI's 19 classes)."""
        return cls(names=taxonomy.names, prompts=taxonomy.prompts,
                   labels=tuple(range(1, taxonomy.num_classes + 1)))

    @classmethod
    def from_names(cls, names: Sequence[str], taxonomy: Taxonomy = NUSCENES16) -> Vocabulary:
        """A vocabulary of free text or taxonomy names, e.g. ``['vehicle', 'road', 'car']``.

        A class name of ``taxonomy`` (``'car'``, ``'driveable_surface'``) gets its label and
        the taxonomy's prompts; any other text is its own single prompt with label 0.
        """
        if isinstance(names, str):
            raise TeacherError(f'Vocabulary.from_names expects a list of names, got the string '
                               f'{names!r}; write [{names!r}]')
        prompts = dict(zip(taxonomy.names, taxonomy.prompts, strict=True))
        return cls(
            names=tuple(names),
            prompts=tuple(prompts.get(n, (n.replace('_', ' '),)) for n in names),
            labels=tuple(taxonomy.label_of.get(n, IGNORE_LABEL) for n in names),
        )


@dataclass(frozen=True, kw_only=True)
class VocabularyEntryConfig:
    """One ``classes:`` item of a vocabulary YAML file."""

    name: str
    prompts: tuple[str, ...] = ()
    label: int | None = bounded(None, min=0, max=MAX_RAW_ID)


@dataclass(frozen=True, kw_only=True)
class VocabularyConfig:
    """A vocabulary YAML file: ``classes:`` is a list of entries."""

    classes: tuple[VocabularyEntryConfig, ...]


def load_vocabulary(path: str | os.PathLike[str], taxonomy: Taxonomy = NUSCENES16
                    ) -> Vocabulary:
    """Read a vocabulary YAML file (layout in the module docstring); entry names of
    ``taxonomy`` get its labels and prompts by default.

    Raises ConfigError for an unreadable file, unknown keys or wrong types (naming the dotted
    key), and for an inconsistent vocabulary (repeated names, empty prompts).
    """
    config = load_config(VocabularyConfig, path)
    taxonomy_prompts = dict(zip(taxonomy.names, taxonomy.prompts, strict=True))
    names, prompts, labels = [], [], []
    for i, entry in enumerate(config.classes):
        if entry.label is not None and entry.label > taxonomy.num_classes:
            raise ConfigError(f'{os.fspath(path)}: classes[{i}].label: expected a value in '
                              f'0..{taxonomy.num_classes} (taxonomy {taxonomy.name}), got '
                              f'{entry.label}')
        names.append(entry.name)
        default = taxonomy_prompts.get(entry.name, (entry.name.replace('_', ' '),))
        prompts.append(entry.prompts or default)
        labels.append(taxonomy.label_of.get(entry.name, IGNORE_LABEL) if entry.label is None
                      else entry.label)
    try:
        return Vocabulary(names=tuple(names), prompts=tuple(prompts), labels=tuple(labels))
    except TeacherError as err:
        raise ConfigError(f'{os.fspath(path)}: {err}') from err
