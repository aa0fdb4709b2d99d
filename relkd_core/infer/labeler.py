"""Open-vocabulary labels for lidar scans: the distilled student against text embeddings.

A :class:`Labeler` holds a student and the text embeddings of one vocabulary. Each point gets
the vocabulary entry whose embedding is most similar (cosine) to the point's teacher-space
feature: ``labels`` index the vocabulary entries (0..C-1, uint16) and ``scores`` are those
similarities. Points that are not labelled (non-finite, outside the range limits, or scoring
below ``score_threshold``) get :data:`UNLABELED`.

Text embeddings come from the checkpoint when possible: every entry whose prompts the
checkpoint stored is reused as is, so the labeler needs no teacher model for the vocabulary it
was trained with (or any subset of it). Entries with new prompts need the teacher's text side,
built on first use only: by default the checkpoint's teacher (its TeacherRef), checked to be the
very teacher the student was distilled from (same teacher id).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import numpy as np
import torch
from numpy.typing import NDArray

from relkd_core.data.scan import finite_rows, point_ranges
from relkd_core.errors import CheckpointError, ConfigError, DataError, RelkdError
from relkd_core.memory import retain_freed_memory
from relkd_core.models.distilled import StudentCheckpoint, load_checkpoint
from relkd_core.models.export import check_scan
from relkd_core.models.inference import best_entries, check_precision
from relkd_core.taxonomy import NUSCENES16, Taxonomy, load_taxonomy
from relkd_core.teachers.vocabulary import Vocabulary, load_vocabulary

__all__ = ['UNLABELED', 'CheckpointText', 'LabelLimits', 'LabelResult', 'Labeler', 'TextEncoder',
           'VocabularyEmbedding', 'resolve_vocabulary', 'stored_vocabulary', 'teacher_text_encoder']

_LOG = logging.getLogger(__name__)

#: Label of a point that got no vocabulary entry (uint16 maximum, never a valid entry index).
UNLABELED: Final = 0xFFFF


class TextEncoder(Protocol):
    """The text side of a teacher: ``text_features(vocabulary)`` gives (C, D) float32 unit rows,
    and ``teacher_id`` names the teacher (it must equal the checkpoint's)."""

    teacher_id: str

    def text_features(self, vocabulary: Vocabulary) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class VocabularyEmbedding:
    """A vocabulary and its text embeddings: ``embeddings`` is (C, D) float32, unit rows, on
    the labeler's device, one row per vocabulary entry."""

    vocabulary: Vocabulary
    embeddings: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class LabelLimits:
    """Which points :meth:`Labeler.label` labels: those whose Euclidean distance (sensor
    frame) lies in [``min_range_m``, ``max_range_m``] and whose best cosine similarity reaches
    ``score_threshold``; a scan with more than ``max_points`` such points is refused (bounds
    memory and latency; None: no bound). Immutable, so one scan is labelled with one set of
    limits however often they are replaced. Raises ConfigError when a value is out of range.
    """

    score_threshold: float = -1.0
    min_range_m: float = 0.0
    max_range_m: float = math.inf
    max_points: int | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f'score_threshold: expected a cosine similarity in [-1, 1], got '
                              f'{self.score_threshold}')
        if not 0.0 <= self.min_range_m < self.max_range_m:
            raise ConfigError(f'min_range_m, max_range_m: expected 0 <= min < max, got '
                              f'{self.min_range_m} and {self.max_range_m}')
        if self.max_points is not None and self.max_points < 1:
            raise ConfigError(f'max_points: expected at least 1 (or None), got '
                              f'{self.max_points}')


@dataclass(frozen=True)
class LabelResult:
    """Per-point output of :meth:`Labeler.label` for a scan of N points.

    ``labels``: (N,) uint16 vocabulary entry index, or :data:`UNLABELED`.
    ``scores``: (N,) float32 cosine similarity of the point to its best entry (NaN for points
    not fed to the model: non-finite or outside the range limits).
    ``features``: (N, D) float32 unit teacher-space features (NaN rows for points not fed to the
    model), or None when not asked for.
    """

    labels: NDArray[np.uint16]
    scores: NDArray[np.float32]
    features: NDArray[np.float32] | None = None


def teacher_text_encoder(checkpoint: StudentCheckpoint) -> TextEncoder:
    """The text side of the checkpoint's teacher (its :class:`TeacherRef`), built here and
    checked to have the checkpoint's teacher id.

    Raises CheckpointError when the teacher's config file is not on this machine, the teacher
    cannot be built here, or it is not the teacher the student was distilled from.
    """
    from relkd_core.teachers import build_teacher

    ref = checkpoint.teacher
    if ref.config and not os.path.isfile(ref.config):
        raise CheckpointError(
            f'the checkpoint\'s teacher config {ref.config} is not on this machine; copy it '
            'there, or pass a text encoder built from it')
    try:
        # An unknown name is the registry's one-line ConfigError, not a type error.
        teacher = build_teacher(cast(Any, ref.name), ref.config)
    except RelkdError as err:
        raise CheckpointError(f'cannot build the checkpoint\'s teacher {ref.name!r} to embed '
                              f'new text: {err}') from err
    if teacher.teacher_id != ref.id:
        raise CheckpointError(
            f'the {ref.name!r} teacher built here has id {teacher.teacher_id}, but the student '
            f'was distilled from {ref.id}; its text embeddings would not match the student '
            '(different weights, config or library version)')
    return teacher


def _as_vocabulary(vocabulary: Vocabulary | Sequence[str]) -> Vocabulary:
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    try:
        return Vocabulary.from_names(vocabulary)
    except RelkdError as err:
        raise ConfigError(f'vocabulary: {err}') from err


def stored_vocabulary(checkpoint: StudentCheckpoint) -> Vocabulary | None:
    """The vocabulary whose text embeddings the checkpoint stores (None when it has none)."""
    return checkpoint.vocabulary


class CheckpointText:
    """The one text-embedding path for a checkpoint, used by the :class:`Labeler` and by
    relkd-eval: every entry whose prompts the checkpoint stored gets its stored row, the others
    are embedded by the teacher's text side (``text_encoder``: an encoder, a zero-argument
    factory called on first need, or None for :func:`teacher_text_encoder`), checked to be the
    teacher the student was distilled from. Thread-safe.

    Raises CheckpointError when the stored rows do not match the stored vocabulary.
    """

    def __init__(self, checkpoint: StudentCheckpoint,
                 text_encoder: TextEncoder | Callable[[], TextEncoder] | None = None) -> None:
        self.checkpoint = checkpoint
        self._source = text_encoder
        self._encoder: TextEncoder | None = None
        self._lock = threading.Lock()
        self._stored: dict[tuple[str, ...], torch.Tensor] = {}
        stored = checkpoint.vocabulary
        if stored is not None and checkpoint.text_embeddings is not None:
            rows = checkpoint.text_embeddings.float()
            if tuple(rows.shape) != (len(stored), checkpoint.teacher_dim):
                raise CheckpointError(
                    f'the checkpoint stores {tuple(rows.shape)} text embeddings for '
                    f'{len(stored)} vocabulary entries of dimension '
                    f'{checkpoint.teacher_dim}')
            for prompts, row in zip(stored.prompts, rows, strict=True):
                self._stored[prompts] = row

    def embed(self, vocabulary: Vocabulary) -> torch.Tensor:
        """(C, D) float32 unit rows on the CPU, one per entry of ``vocabulary``."""
        missing = [i for i, prompts in enumerate(vocabulary.prompts)
                   if prompts not in self._stored]
        rows: dict[int, torch.Tensor] = {}
        if missing:
            subset = Vocabulary(names=tuple(vocabulary.names[i] for i in missing),
                                prompts=tuple(vocabulary.prompts[i] for i in missing),
                                labels=tuple(vocabulary.labels[i] for i in missing))
            rows = dict(zip(missing, self._encode(subset), strict=True))
        return torch.stack([rows[i] if i in rows else self._stored[prompts]
                            for i, prompts in enumerate(vocabulary.prompts)])

    def _encode(self, vocabulary: Vocabulary) -> torch.Tensor:
        names = list(vocabulary.names)
        with self._lock:
            encoder = self._encoder or self._build_encoder(names)
            self._encoder = encoder
            if encoder.teacher_id != self.checkpoint.teacher_id:
                raise CheckpointError(
                    f'text encoder {encoder.teacher_id} is not the teacher the student was '
                    f'distilled from ({self.checkpoint.teacher_id})')
            features = np.asarray(encoder.text_features(vocabulary), dtype=np.float32)
        expected = (len(vocabulary), self.checkpoint.teacher_dim)
        if features.shape != expected:
            raise CheckpointError(f'text encoder {encoder.teacher_id} gave embeddings of shape '
                                  f'{features.shape}, expected {expected}')
        _LOG.info('embedded %d new vocabulary entries with %s', len(names), encoder.teacher_id)
        return torch.nn.functional.normalize(torch.from_numpy(features), dim=1)

    def _build_encoder(self, names: list[str]) -> TextEncoder:
        source = self._source
        try:
            if source is None:
                return teacher_text_encoder(self.checkpoint)
            if hasattr(source, 'text_features'):
                return source  # type: ignore[return-value]
            return source()
        except CheckpointError as err:
            stored = self.checkpoint.vocabulary
            raise CheckpointError(
                f'vocabulary entries {names} are not stored in the checkpoint and need a text '
                f'encoder: {err}. Stored entries: '
                f'{list(stored.names) if stored is not None else []}') from err


def resolve_vocabulary(names: Sequence[str] = (), file: str | os.PathLike[str] | None = None,
                       checkpoint: StudentCheckpoint | None = None) -> Vocabulary:
    """The one rule for the vocabulary to label with, used by the node, relkd-label and the
    :class:`Labeler`: ``names`` (class names or free text) when given, else the vocabulary YAML
    ``file``, else the checkpoint's stored vocabulary, else :meth:`Vocabulary.default`.

    Raises ConfigError for both ``names`` and ``file``, an invalid name list or a bad file.
    """
    if names and file:
        raise ConfigError('vocabulary: give class names or a vocabulary file, not both')
    if names:
        return _as_vocabulary(names)
    if file:
        return load_vocabulary(file)
    stored = checkpoint.vocabulary if checkpoint is not None else None
    return stored if stored is not None else Vocabulary.default()


class Labeler:
    """Labels every point of a scan with an entry of an open vocabulary.

    Args:
        checkpoint: a student checkpoint (object or path to a ``relkd-train`` file).
        vocabulary: entries to label with: a :class:`Vocabulary` or a list of names (see
            :meth:`Vocabulary.from_names`); None: the checkpoint's stored vocabulary (or the
            default 16 classes when it stored none).
        device: torch device of the student and the embeddings.
        text_encoder: embeds text the checkpoint did not store: an encoder, a zero-argument
            factory called on first need, or None for :func:`teacher_text_encoder`.
        score_threshold: points whose best cosine similarity is below it are :data:`UNLABELED`.
        min_range_m, max_range_m: points nearer or farther (Euclidean, sensor frame) are not fed
            to the model and are :data:`UNLABELED`.
        max_points: a scan with more valid points raises DataError (bounds memory and latency).
        precision: ``float32`` or ``bfloat16`` (the student's arithmetic; see
            :mod:`relkd_core.models.inference`: bfloat16 is slower on CPUs without bfloat16
            instructions).

    :meth:`label` may run in one thread while :meth:`set_vocabulary` is called in another: a
    scan is labelled with the vocabulary current when it started.
    """

    def __init__(self, checkpoint: StudentCheckpoint | str | os.PathLike[str],
                 vocabulary: Vocabulary | Sequence[str] | None = None,
                 device: str | torch.device = 'cpu', *,
                 text_encoder: TextEncoder | Callable[[], TextEncoder] | None = None,
                 score_threshold: float = -1.0, min_range_m: float = 0.0,
                 max_range_m: float = math.inf, max_points: int | None = None,
                 precision: str = 'float32') -> None:
        self.precision = check_precision(precision)
        retain_freed_memory()  # per-scan tensors reuse pages instead of faulting them in
        if not isinstance(checkpoint, StudentCheckpoint):
            checkpoint = load_checkpoint(checkpoint)
        try:
            self.device = torch.device(device)
        except RuntimeError as err:
            raise ConfigError(f'device: {device!r} is not a torch device (e.g. cpu, cuda:0)'
                              ) from err
        self.checkpoint = checkpoint
        #: The taxonomy of the training labels (colours of stored entries follow it).
        self.taxonomy = checkpoint_taxonomy(checkpoint)
        self.limits = self.check_limits(score_threshold=score_threshold, min_range_m=min_range_m,
                                        max_range_m=max_range_m, max_points=max_points)
        self._text = CheckpointText(checkpoint, text_encoder)
        self.model = checkpoint.build_model(self.device)
        self._table = self.embed(resolve_vocabulary(checkpoint=checkpoint)
                                 if vocabulary is None else vocabulary)

    def warm_up(self, points: int = 2000) -> float:
        """Label one small synthetic scan (:func:`~relkd_core.models.export.check_scan`) so
        that the first real scan pays no one-time cost: building or loading the compiled sparse
        kernels (see :mod:`relkd_core.models.sparse.native_fast`), folding the batch norms,
        first allocations. Returns the seconds it took."""
        started = time.perf_counter()
        self.label(check_scan(points).numpy(), limits=LabelLimits())
        return time.perf_counter() - started

    @staticmethod
    def check_limits(*, score_threshold: float = -1.0, min_range_m: float = 0.0,
                     max_range_m: float = math.inf, max_points: int | None = None
                     ) -> LabelLimits:
        """Validate labelling limits without touching any labeler: the :class:`LabelLimits`
        to pass to :meth:`label` or :meth:`configure`; raises ConfigError when out of range."""
        return LabelLimits(score_threshold=float(score_threshold),
                           min_range_m=float(min_range_m), max_range_m=float(max_range_m),
                           max_points=max_points)

    def configure(self, *, score_threshold: float, min_range_m: float, max_range_m: float,
                  max_points: int | None) -> None:
        """Set the default labelling limits (see the class doc); raises ConfigError when out
        of range. For a labeler in use on another thread, pass limits to :meth:`label`."""
        self.limits = self.check_limits(score_threshold=score_threshold,
                                        min_range_m=min_range_m, max_range_m=max_range_m,
                                        max_points=max_points)

    # --- vocabulary -------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary that scans are labelled with now."""
        return self._table.vocabulary

    @property
    def embedding(self) -> VocabularyEmbedding:
        """:attr:`vocabulary` with its embeddings, as :meth:`embed` gives them."""
        return self._table

    @property
    def embeddings(self) -> torch.Tensor:
        """(C, D) float32 text embeddings of :attr:`vocabulary`."""
        return self._table.embeddings

    def embed(self, vocabulary: Vocabulary | Sequence[str]) -> VocabularyEmbedding:
        """Text embeddings of ``vocabulary`` without switching to it (stored rows where the
        checkpoint has the entry's prompts, the text encoder for the rest).

        Raises ConfigError for an invalid vocabulary and CheckpointError when new text needs an
        encoder that cannot be had.
        """
        vocabulary = _as_vocabulary(vocabulary)
        embeddings = self._text.embed(vocabulary)
        return VocabularyEmbedding(vocabulary, embeddings.to(self.device))

    def set_vocabulary(self, vocabulary: Vocabulary | Sequence[str] | VocabularyEmbedding
                       ) -> None:
        """Label the next scans with ``vocabulary`` (embedded first unless already)."""
        table = vocabulary if isinstance(vocabulary, VocabularyEmbedding) else self.embed(
            vocabulary)
        self._table = table

    # --- labelling --------------------------------------------------------------------------

    def label(self, points: NDArray[Any], *, with_features: bool = False,
              embedding: VocabularyEmbedding | None = None, limits: LabelLimits | None = None
              ) -> LabelResult:
        """Labels of one scan.

        ``points``: (N, 4) ``x, y, z, intensity`` or (N, 3) ``x, y, z`` (intensity 0), metres in
        the sensor frame, any real dtype (cast to float32). ``embedding``: label with this
        vocabulary (from :meth:`embed`) instead of the current one; ``limits``: with these
        instead of :attr:`limits`. Raises DataError for another shape or dtype, and for more
        than ``max_points`` valid points.
        """
        table = self._table if embedding is None else embedding
        limits = self.limits if limits is None else limits
        scan = self._validated(points)
        count = len(scan)
        labels = np.full(count, UNLABELED, dtype=np.uint16)
        scores = np.full(count, np.nan, dtype=np.float32)
        dim = self.checkpoint.teacher_dim
        features = np.full((count, dim), np.nan, dtype=np.float32) if with_features else None
        valid = finite_rows(scan)
        distance = point_ranges(scan)
        valid &= (distance >= limits.min_range_m) & (distance <= limits.max_range_m)
        num_valid = int(valid.sum())
        if limits.max_points is not None and num_valid > limits.max_points:
            raise DataError(f'scan has {num_valid} valid points, more than max_points '
                            f'{limits.max_points}; raise max_points or lower max_range_m')
        if num_valid == 0:
            return LabelResult(labels, scores, features)
        selected = torch.from_numpy(scan if num_valid == count else scan[valid])
        best = best_entries(self.model, selected, table.embeddings, precision=self.precision,
                            with_features=features is not None)
        best_score_np = best.score.cpu().numpy().astype(np.float32)
        best_np = best.index.cpu().numpy().astype(np.uint16)
        best_np[best_score_np < limits.score_threshold] = UNLABELED
        labels[valid] = best_np
        scores[valid] = best_score_np
        if features is not None and best.features is not None:
            features[valid] = best.features.cpu().numpy()
        return LabelResult(labels, scores, features)

    def _validated(self, points: NDArray[Any]) -> NDArray[np.float32]:
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] not in (3, 4):
            raise DataError(f'points must be (N, 4) x, y, z, intensity or (N, 3) x, y, z, got '
                            f'shape {array.shape}')
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise DataError(f'points must be real numbers, got dtype {array.dtype}')
        if array.shape[1] == 4 and array.dtype == np.float32 and array.flags.c_contiguous:
            return array  # read only from here on: no copy needed
        scan = np.zeros((len(array), 4), dtype=np.float32)
        scan[:, : array.shape[1]] = array
        return scan


def checkpoint_taxonomy(checkpoint: StudentCheckpoint) -> Taxonomy:
    """The taxonomy a checkpoint records; nuScenes-16 when it records none (format 1) or when
    the one it names cannot be loaded here (a user taxonomy file left behind; logged)."""
    if not checkpoint.taxonomy:
        return NUSCENES16
    try:
        return load_taxonomy(checkpoint.taxonomy)
    except ConfigError as err:
        _LOG.warning('the checkpoint\'s taxonomy cannot be loaded (%s); colours follow %s',
                     err, NUSCENES16.name)
        return NUSCENES16
