"""What every 2D teacher provides: dense image features and text embeddings in one space.

A teacher is frozen. Distillation copies its features into a 3D student; a teacher that drifted
while the student learns from it would make every checkpoint refer to a moving target. The
:class:`Teacher` base class therefore refuses ``train(True)`` and ``requires_grad_(True)``, and
teachers backed by a torch module check before every forward pass that nothing unfroze it.

Pixel convention (as ROS ``CameraInfo``, see :mod:`relkd_core.geometry.projection`): ``u`` is the
column, ``v`` the row, and pixel centres sit at integer coordinates.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import TeacherError
from relkd_core.geometry.grid import axis_weights
from relkd_core.geometry.grid import sample_grid as geometry_sample_grid
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = [
    'FeatureGrid',
    'Teacher',
    'TeacherImage',
    'check_frozen',
    'grid_shape',
    'make_teacher_id',
    'normalize_rows',
    'sample_grid',
    'upsample_grid',
]


@dataclass(frozen=True)
class TeacherImage:
    """One camera image handed to a teacher.

    ``rgb`` is (H, W, 3) uint8; ``camera`` the camera name (``'CAM_FRONT'``); ``t_ns`` the image
    stamp (int nanoseconds). ``semantic`` (H, W) uint16 taxonomy labels (0 = ignore) and
    ``instance`` (H, W) uint32 object ids (0 = stuff) exist for synthetic bags only.
    """

    rgb: NDArray[np.uint8]
    camera: str
    t_ns: int
    semantic: NDArray[np.uint16] | None = None
    instance: NDArray[np.uint32] | None = None

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class FeatureGrid:
    """Dense features of one image on a coarse grid.

    ``features`` is (Hg, Wg, D), float32 or float16, L2-normalised along D. Cell ``(r, c)`` is
    centred at pixel ``((c + 0.5) * W / Wg - 0.5, (r + 0.5) * H / Hg - 0.5)`` of the image of
    size ``image_size_px = (W, H)``.
    """

    features: NDArray[np.floating[Any]]
    image_size_px: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """(Hg, Wg): rows and columns of the grid."""
        return int(self.features.shape[0]), int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])


def grid_shape(image_size_px: tuple[int, int], patch_size_px: int) -> tuple[int, int]:
    """(Hg, Wg) = (ceil(H / patch), ceil(W / patch)) for an image of (W, H) pixels."""
    width, height = image_size_px
    return -(-height // patch_size_px), -(-width // patch_size_px)


def check_frozen(module: Any, teacher_id: str) -> None:
    """Raise TeacherError when the torch ``module`` of teacher ``teacher_id`` is in train mode
    or has a parameter that requires a gradient: teachers must stay frozen (enforced, not
    assumed: someone holding the module could have unfrozen it)."""
    if module.training or any(p.requires_grad for p in module.parameters()):
        raise TeacherError(f'teacher {teacher_id} was unfrozen (train mode or requires_grad); '
                           'teachers must stay frozen')


def normalize_rows(x: NDArray[np.floating[Any]], axis: int = -1) -> NDArray[np.float32]:
    """``x`` scaled to unit L2 norm along ``axis``, as float32 (zero vectors stay zero)."""
    x32 = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x32, axis=axis, keepdims=True)
    return x32 / np.maximum(norm, np.float32(1e-12))


def sample_grid(grid: FeatureGrid, uv_px: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Bilinear samples of ``grid`` at pixel coordinates, re-normalised to unit length.

    ``uv_px`` is (M, 2) float (u right, v down, pixel centres at integers, ROS convention); the
    result is (M, D) float32. Grid cell ``(r, c)`` is centred at pixel
    ``((c + 0.5) * W / Wg - 0.5, (r + 0.5) * H / Hg - 0.5)``; samples outside the outermost
    centres clamp to the edge cells. This equals sampling "the patch grid upsampled (bilinearly)
    to the image" without materialising the full-resolution grid.
    """
    uv = np.asarray(uv_px, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise TeacherError(f'sample_grid: uv_px must be (M, 2) pixel coordinates, got shape '
                           f'{uv.shape}')
    if not np.isfinite(uv).all():
        bad = int((~np.isfinite(uv)).any(axis=1).sum())
        raise TeacherError(f'sample_grid: uv_px has {bad} non-finite rows; keep only points that '
                           'project into the image')
    return geometry_sample_grid(grid.features, grid.image_size_px, uv)


def _interpolation_matrix(num_px: int, num_cells: int) -> NDArray[np.float32]:
    """(num_px, num_cells) matrix whose rows hold the linear weights of each pixel centre."""
    i0, i1, weight = axis_weights(np.arange(num_px, dtype=np.float64), num_cells, num_px)
    matrix = np.zeros((num_px, num_cells), dtype=np.float32)
    rows = np.arange(num_px)
    np.add.at(matrix, (rows, i0), (1.0 - weight).astype(np.float32))
    np.add.at(matrix, (rows, i1), weight.astype(np.float32))
    return matrix


def upsample_grid(values: NDArray[np.floating[Any]], image_size_px: tuple[int, int]
                  ) -> NDArray[np.float32]:
    """Bilinear upsampling of (Hg, Wg, K) grid values to (H, W, K) float32, no normalisation.

    Uses the cell centres of :func:`sample_grid`. Meant for per-cell scores: because cosine
    scores are linear in the features, ``argmax`` of upsampled scores equals ``argmax`` over
    classes of the re-normalised :func:`sample_grid` features at every pixel, at a fraction of
    the cost (K classes instead of D channels).
    """
    grid = np.asarray(values, dtype=np.float32)
    if grid.ndim != 3:
        raise TeacherError(f'upsample_grid: expected (Hg, Wg, K) values, got shape {grid.shape}')
    width_px, height_px = image_size_px
    along_v = _interpolation_matrix(height_px, grid.shape[0])  # (H, Hg)
    along_u = _interpolation_matrix(width_px, grid.shape[1])  # (W, Wg)
    rows = np.tensordot(along_v, grid, axes=(1, 0))  # (H, Wg, K)
    return np.einsum('wc,hck->hwk', along_u, rows, optimize=True)


def make_teacher_id(name: str, config: Any, *extra: str) -> str:
    """``'<name>-<12 hex>'``: a hash of the resolved config (JSON) and ``extra`` strings
    (weights digests, library versions), stable across processes and machines."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for item in extra:
        digest.update(b'\0' + item.encode())
    return f'{name}-{digest.hexdigest()[:12]}'


class Teacher(abc.ABC):
    """A frozen 2D teacher: dense image features and text embeddings in one space.

    ``teacher_id`` is stable for a given config and weights (it goes into dataset manifests and
    checkpoints); ``feature_dim`` is D of both :meth:`image_features` and :meth:`text_features`.
    """

    teacher_id: str
    feature_dim: int

    @abc.abstractmethod
    def image_features(self, images: Sequence[TeacherImage]) -> list[FeatureGrid]:
        """One :class:`FeatureGrid` per image, in order, each (Hg, Wg, D) L2-normalised."""

    @abc.abstractmethod
    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]:
        """(C, D) float32 L2-normalised embeddings, one per vocabulary entry, in order."""

    # --- the frozen guard: the torch.nn.Module API a training loop would call --------------------

    @property
    def training(self) -> bool:
        """Always False: a teacher is never in training mode."""
        return False

    def train(self, mode: bool = True) -> Teacher:
        """``train(False)`` is a no-op; ``train(True)`` raises TeacherError."""
        if mode:
            raise TeacherError(
                f'teacher {self.teacher_id} is frozen: train(True) is not allowed; distil from it '
                'in eval mode (train(False)/eval()) and train the student instead'
            )
        return self

    def eval(self) -> Teacher:
        """A no-op: the teacher is always in eval mode."""
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Teacher:
        """``requires_grad_(False)`` is a no-op; ``requires_grad_(True)`` raises TeacherError."""
        if requires_grad:
            raise TeacherError(
                f'teacher {self.teacher_id} is frozen: requires_grad_(True) is not allowed; only '
                'the student has trainable parameters'
            )
        return self

    def _check_images(self, images: Sequence[TeacherImage]) -> None:
        for i, image in enumerate(images):
            rgb = image.rgb
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise TeacherError(
                    f'{self.teacher_id}: image {i} ({image.camera}, t_ns={image.t_ns}): expected '
                    f'rgb of shape (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}'
                )
