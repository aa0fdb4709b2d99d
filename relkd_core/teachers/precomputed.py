"""A teacher that reads dense features another model wrote to disk.

Layout of a precomputed-features folder (write it with :func:`write_precomputed`)::

    <root>/teacher.yaml                 teacher_id: <id of the model that wrote them>
                                        feature_dim: 512
                                        text_embeddings: text.npz      # optional
    <root>/text.npz                     names (C,) str, embeddings (C, D) float
    <root>/<camera>/<t_ns>.npy          one (Hg, Wg, D) float16 or float32 grid per image

The features keep the id of the model that computed them, so a dataset prepared from them is
traceable to that model. Text embeddings can only be looked up by name: free text needs the
model itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from relkd_core.atomic import write_atomic, write_text_atomic
from relkd_core.config import load_config
from relkd_core.errors import TeacherError
from relkd_core.teachers.base import FeatureGrid, Teacher, TeacherImage, normalize_rows
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = [
    'PrecomputedTeacher',
    'PrecomputedTeacherConfig',
    'feature_path',
    'write_precomputed',
]

MANIFEST_NAME = 'teacher.yaml'
TEXT_NAME = 'text.npz'
# A camera name becomes a folder name: no separators, no '..'.
_SAFE_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]*')


@dataclass(frozen=True, kw_only=True)
class PrecomputedTeacherConfig:
    """Where the features are: the folder holding ``teacher.yaml``."""

    root: Path


@dataclass(frozen=True, kw_only=True)
class PrecomputedManifest:
    """``teacher.yaml`` of a precomputed-features folder."""

    teacher_id: str
    feature_dim: int
    text_embeddings: str | None = None

    def validate(self) -> None:
        if self.feature_dim < 1:
            raise ValueError(f'feature_dim must be positive, got {self.feature_dim}')
        if not self.teacher_id.strip():
            raise ValueError('teacher_id must not be empty')


def feature_path(root: str | os.PathLike[str], camera: str, t_ns: int) -> Path:
    """``<root>/<camera>/<t_ns>.npy``: where the grid of one image lives."""
    if not _SAFE_NAME.fullmatch(camera):
        raise TeacherError(f'camera name {camera!r} cannot be a folder name; use letters, '
                           'digits, "_", "-" and "."')
    return Path(root) / camera / f'{int(t_ns)}.npy'


class PrecomputedTeacher(Teacher):
    """Features read from a folder written by :func:`write_precomputed` (or any model that
    follows the layout in the module docstring)."""

    def __init__(self, config: PrecomputedTeacherConfig) -> None:
        self.config = config
        self.root = Path(config.root)
        manifest_path = self.root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise TeacherError(f'precomputed teacher: {manifest_path} not found; expected a folder '
                               'written by write_precomputed (teacher.yaml plus '
                               '<camera>/<t_ns>.npy files)')
        self.manifest = load_config(PrecomputedManifest, manifest_path)
        self.teacher_id = self.manifest.teacher_id
        self.feature_dim = self.manifest.feature_dim
        self._text: dict[str, NDArray[np.float32]] | None = None

    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        """The stored grid of each image, re-normalised, as float32 (Hg, Wg, D)."""
        self._check_images(images)
        grids = []
        for image in images:
            path = feature_path(self.root, image.camera, image.t_ns)
            if not path.is_file():
                raise TeacherError(f'precomputed teacher {self.teacher_id}: no features for '
                                   f'{image.camera} at t_ns={image.t_ns}; expected {path}')
            features = _load_array(path)
            if features.ndim != 3 or features.shape[2] != self.feature_dim:
                raise TeacherError(f'{path}: expected a (Hg, Wg, {self.feature_dim}) grid, got '
                                   f'shape {features.shape}')
            grids.append(FeatureGrid(features=normalize_rows(features),
                                     image_size_px=image.size_px))
        return grids

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        """(C, D) embeddings stored under the vocabulary's names, in vocabulary order."""
        table = self._text_table()
        missing = [name for name in vocabulary.names if name not in table]
        if missing:
            raise TeacherError(
                f'precomputed teacher {self.teacher_id}: no stored text embedding for '
                f'{missing}; stored names: {sorted(table)}. Free text needs the model that '
                'computed the features'
            )
        return np.stack([table[name] for name in vocabulary.names])

    def _text_table(self) -> dict[str, NDArray[np.float32]]:
        if self._text is None:
            if self.manifest.text_embeddings is None:
                raise TeacherError(
                    f'precomputed teacher {self.teacher_id}: {self.root / MANIFEST_NAME} names no '
                    'text_embeddings; write them with write_precomputed(..., text_names=..., '
                    'text_embeddings=...)'
                )
            path = self.root / self.manifest.text_embeddings
            if not path.is_file():
                raise TeacherError(f'precomputed teacher {self.teacher_id}: text embeddings '
                                   f'file {path} not found')
            with np.load(path, allow_pickle=False) as data:
                if 'names' not in data or 'embeddings' not in data:
                    raise TeacherError(f'{path}: expected arrays "names" and "embeddings", got '
                                       f'{sorted(data.files)}')
                names, embeddings = data['names'], data['embeddings']
            if embeddings.shape != (len(names), self.feature_dim):
                raise TeacherError(f'{path}: expected embeddings of shape ({len(names)}, '
                                   f'{self.feature_dim}), got {embeddings.shape}')
            vectors = normalize_rows(embeddings)
            self._text = {str(n): vectors[i] for i, n in enumerate(names.tolist())}
        return self._text


def write_precomputed(
    root: str | os.PathLike[str],
    grids: Mapping[tuple[str, int], FeatureGrid],
    *,
    teacher_id: str,
    text_names: Sequence[str] | None = None,
    text_embeddings: NDArray[np.floating[Any]] | None = None,
    dtype: type[np.floating[Any]] = np.float16,
) -> Path:
    """Write grids keyed by ``(camera, t_ns)`` (and optional text embeddings) under ``root``.

    Grids are stored as ``dtype`` (float16 by default, like prepared datasets). Calling it again
    on the same folder adds or replaces grids (resuming an interrupted export), but only for the
    same ``teacher_id`` and feature size. Every file is written atomically. Returns ``root``.
    """
    root = Path(root)
    dims = {grid.feature_dim for grid in grids.values()}
    if text_embeddings is not None:
        dims.add(int(np.shape(text_embeddings)[-1]))
    if len(dims) != 1:
        raise TeacherError(f'write_precomputed: give at least one grid or text embeddings, all '
                           f'of one feature size; got sizes {sorted(dims)}')
    (feature_dim,) = dims
    if (text_names is None) != (text_embeddings is None):
        raise TeacherError('write_precomputed: give text_names and text_embeddings together')
    manifest_path = root / MANIFEST_NAME
    text_file: str | None = None
    if manifest_path.is_file():
        existing = load_config(PrecomputedManifest, manifest_path)
        if (existing.teacher_id, existing.feature_dim) != (teacher_id, feature_dim):
            raise TeacherError(
                f'{manifest_path} holds features of {existing.teacher_id} '
                f'(D={existing.feature_dim}); refusing to add {teacher_id} (D={feature_dim}): '
                'use another folder'
            )
        text_file = existing.text_embeddings
    root.mkdir(parents=True, exist_ok=True)
    for (camera, t_ns), grid in grids.items():
        path = feature_path(root, camera, t_ns)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, _npy_writer(np.ascontiguousarray(grid.features, dtype=dtype)))
    if text_names is not None and text_embeddings is not None:
        embeddings = np.asarray(text_embeddings, dtype=np.float32)
        if embeddings.shape != (len(text_names), feature_dim):
            raise TeacherError(f'write_precomputed: text_embeddings must be ({len(text_names)}, '
                               f'{feature_dim}), got {embeddings.shape}')
        names = np.asarray(list(text_names), dtype=np.str_)
        write_atomic(root / TEXT_NAME,
                      lambda stream: np.savez(stream, names=names, embeddings=embeddings))
        text_file = TEXT_NAME
    manifest = {'teacher_id': teacher_id, 'feature_dim': feature_dim,
                'text_embeddings': text_file}
    text = yaml.safe_dump(manifest, sort_keys=False)
    write_text_atomic(manifest_path, text)
    return root


def _npy_writer(array: NDArray[Any]) -> Callable[[Any], None]:
    def write(stream: Any) -> None:
        np.save(stream, array, allow_pickle=False)

    return write


def _load_array(path: Path) -> NDArray[Any]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise TeacherError(f'{path}: not a readable .npy array: {err}') from err
    if array.dtype not in (np.float16, np.float32):
        raise TeacherError(f'{path}: expected float16 or float32 features, got {array.dtype}')
    return array
