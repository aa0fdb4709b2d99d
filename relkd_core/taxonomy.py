"""Taxonomies: the classes a lidar ``label`` field counts in, as data.

A taxonomy is a YAML file (shipped: ``config/taxonomies/nuscenes16.yaml`` and
``semantickitti19.yaml``; users pass a path to their own with the same keys)::

    name: my_taxonomy
    dataset: free text                # optional
    raw:                              # optional: the dataset's own label ids and names
      - {id: 40, name: road}
    classes:                          # labels 1..N, in order; 0 is always `ignore`
      - {id: 1, name: road, color: [255, 0, 255], prompts: [road, street], raw_ids: [40, 60]}

``raw_ids`` map the dataset's own ids onto the class (a many-to-one learning map); a raw id
no class lists maps to 0 (ignore). ``prompts`` are what a text model embeds for the class
(default: the name with ``_``/``-`` as spaces).

The module constants below are nuScenes-16's: the synthetic world renders in it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from relkd_core.config import bounded, load_config
from relkd_core.errors import ConfigError
from relkd_core.resources import find_named_config

__all__ = [
    'CLASS_NAMES',
    'IGNORE_LABEL',
    'LABEL_COLORS',
    'LABEL_OF',
    'MAX_RAW_ID',
    'NUM_CLASSES',
    'NUSCENES16',
    'TAXONOMIES',
    'THING_CLASSES',
    'Taxonomy',
    'label_name',
    'load_taxonomy',
]

IGNORE_LABEL: Final = 0
#: The shipped taxonomies (``config/taxonomies/<name>.yaml``).
TAXONOMIES: Final = ('nuscenes16', 'semantickitti19')
#: Largest raw id a taxonomy may map (SemanticKITTI's fit in the lower 16 bits of a label).
MAX_RAW_ID: Final = 65535


@dataclass(frozen=True, kw_only=True)
class RawClassConfig:
    """One ``raw:`` item: a dataset label id and its name."""

    id: int = bounded(0, min=0, max=MAX_RAW_ID)
    name: str


@dataclass(frozen=True, kw_only=True)
class ClassConfig:
    """One ``classes:`` item."""

    id: int = bounded(1, min=1, max=MAX_RAW_ID)
    name: str
    color: tuple[int, int, int] = bounded((128, 128, 128), min=0, max=255)
    prompts: tuple[str, ...] = ()
    raw_ids: tuple[int, ...] = bounded((), min=0, max=MAX_RAW_ID)


@dataclass(frozen=True, kw_only=True)
class TaxonomyConfig:
    """A taxonomy YAML file (layout in the module docstring)."""

    name: str
    dataset: str = ''
    raw: tuple[RawClassConfig, ...] = ()
    classes: tuple[ClassConfig, ...]

    def validate(self) -> None:
        if not self.classes:
            raise ValueError('classes: a taxonomy needs at least one class')
        for position, entry in enumerate(self.classes, start=1):
            if entry.id != position:
                raise ValueError(f'classes[{position - 1}] ({entry.name}) has id {entry.id}; '
                                 f'ids must be 1..N in order, expected {position}')
        names = [c.name for c in self.classes]
        repeated = sorted({n for n in names if names.count(n) > 1} | (
            {'ignore'} & set(names)))
        if repeated:
            raise ValueError(f'classes: names must be unique and not "ignore", got {repeated}')
        seen: dict[int, str] = {}
        for entry in self.classes:
            for raw in entry.raw_ids:
                if raw in seen:
                    raise ValueError(f'raw id {raw} is mapped twice ({seen[raw]} and '
                                     f'{entry.name})')
                seen[raw] = entry.name
        raw_ids = [r.id for r in self.raw]
        if len(set(raw_ids)) != len(raw_ids):
            raise ValueError('raw: ids must be unique')
        unknown = sorted(set(seen) - set(raw_ids)) if self.raw else []
        if unknown:
            raise ValueError(f'raw ids {unknown} are mapped by classes but not listed in raw:')


@dataclass(frozen=True)
class Taxonomy:
    """Class names, colours, prompts and the raw-id learning map of one label space.

    Labels are 0..``num_classes``; 0 is ``ignore``. ``names[i]`` is label ``i + 1``;
    ``colors[label]`` is an RGB triple (index 0 = ignore, black).
    """

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    prompts: tuple[tuple[str, ...], ...]
    raw_ids: tuple[tuple[int, ...], ...]
    raw_names: tuple[tuple[int, str], ...] = ()
    dataset: str = ''

    @classmethod
    def from_config(cls, config: TaxonomyConfig) -> Taxonomy:
        return cls(
            name=config.name, dataset=config.dataset,
            names=tuple(c.name for c in config.classes),
            colors=((0, 0, 0), *(c.color for c in config.classes)),
            prompts=tuple(c.prompts or (c.name.replace('_', ' ').replace('-', ' '),)
                          for c in config.classes),
            raw_ids=tuple(c.raw_ids for c in config.classes),
            raw_names=tuple((r.id, r.name) for r in config.raw),
        )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @functools.cached_property
    def label_of(self) -> dict[str, int]:
        """Label (1..N) of each class name."""
        return {name: i + 1 for i, name in enumerate(self.names)}

    def label_name(self, label: int) -> str:
        """Class name of a label id; ``'ignore'`` for 0."""
        if label == IGNORE_LABEL:
            return 'ignore'
        if not 1 <= label <= self.num_classes:
            raise ValueError(f'{self.name}: label must be in 0..{self.num_classes}, got {label}')
        return self.names[label - 1]

    @functools.cached_property
    def raw_lookup(self) -> NDArray[np.uint16]:
        """(MAX_RAW_ID + 1,) uint16: the label of every raw id (0 where unmapped)."""
        table = np.zeros(MAX_RAW_ID + 1, dtype=np.uint16)
        for label, raw_ids in enumerate(self.raw_ids, start=1):
            table[list(raw_ids)] = label
        return table

    def map_raw(self, raw: ArrayLike) -> NDArray[np.uint16]:
        """Labels (uint16, same shape) of raw dataset ids (integers in 0..65535)."""
        values = np.asarray(raw)
        if values.size and (values.min() < 0 or values.max() > MAX_RAW_ID):
            raise ValueError(f'{self.name}: raw ids must be in 0..{MAX_RAW_ID}, got '
                             f'{int(values.min())}..{int(values.max())}')
        return self.raw_lookup[values.astype(np.int64)]

    def representative_raw_ids(self, ignore_raw_id: int = 0) -> NDArray[np.int64]:
        """(N + 1,) one raw id per label (its first ``raw_ids`` entry; ``ignore_raw_id`` for 0):
        the inverse of :meth:`map_raw` where a label has raw ids."""
        out = np.full(self.num_classes + 1, ignore_raw_id, dtype=np.int64)
        for label, raw_ids in enumerate(self.raw_ids, start=1):
            if raw_ids:
                out[label] = raw_ids[0]
        return out


@functools.lru_cache(maxsize=16)
def _load(path: str) -> Taxonomy:
    return Taxonomy.from_config(load_config(TaxonomyConfig, path))


def load_taxonomy(name_or_path: str | os.PathLike[str]) -> Taxonomy:
    """A shipped taxonomy by name (:data:`TAXONOMIES`) or a user taxonomy YAML file.

    Raises ConfigError for an unknown name, an unreadable file or an invalid taxonomy.
    """
    try:
        path = find_named_config('taxonomies', name_or_path)
    except ConfigError as err:
        raise ConfigError(f'taxonomy: {err}') from err
    return _load(os.fspath(path.resolve()))


#: nuScenes-lidarseg's 16 classes: the synthetic world's label space.
NUSCENES16: Final = load_taxonomy('nuscenes16')

CLASS_NAMES: Final[tuple[str, ...]] = NUSCENES16.names
NUM_CLASSES: Final = NUSCENES16.num_classes

#: label id (1..16) of each class name.
LABEL_OF: Final[dict[str, int]] = NUSCENES16.label_of

#: "things" get instance ids; the rest are "stuff" (instance 0).
THING_CLASSES: Final[frozenset[str]] = frozenset(CLASS_NAMES[:10])

#: RGB colours (0..255) per label, index 0 = ignore; close to the nuScenes-lidarseg palette.
LABEL_COLORS: Final[tuple[tuple[int, int, int], ...]] = NUSCENES16.colors


def label_name(label: int) -> str:
    """Class name of a nuScenes-16 label id; ``'ignore'`` for 0."""
    return NUSCENES16.label_name(label)
