"""Evaluate a distilled student on a prepared dataset: zero-shot, linear probe, fine-tune, gap.

Every protocol scores points against the dataset's ground-truth lidar labels with the
conventions of :mod:`relkd_core.metrics` (ignore label 0 skipped; classes absent from ground
truth and prediction left out of the mean). Percentages in the returned metrics.

- ``zero-shot``: each point gets ``vocabulary.labels[argmax_c cos(f, text_c)]`` from the
  student's teacher-space features. Scored over all points and over the camera-visible points
  (those with a point-pixel pair), where the 2D teacher's own zero-shot prediction (its
  feature at the point's pixel, first camera that sees it) is scored alongside: the reference
  the 3D student is measured against. The structural gap on those points is reported too.
- ``linear-probe``: a linear classifier on the frozen backbone features, fit on the labelled
  k% of the scans (:func:`~relkd_core.eval.fewshot.select_scans`).
- ``finetune``: backbone + new classifier trained on those scans.
  The labelled scans come from ``train_data`` (default: the evaluated dataset itself, in which
  case they are left out of the evaluation).
- ``gap``: linear CKA and mean |KKᵀ − QQᵀ| between student and teacher features on visible
  points (sampling in :mod:`relkd_core.eval.gap`), with the zero-shot mIoU beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from numpy.typing import NDArray

from relkd_core.data.prepared import PreparedDataset, PreparedFrame
from relkd_core.errors import CheckpointError, ConfigError, DataError
from relkd_core.eval.fewshot import (
    FewShotConfig,
    finetune,
    labelled_points,
    select_scans,
    train_linear_probe,
)
from relkd_core.eval.gap import sample_rows, structural_gap
from relkd_core.eval.teacher_scores import first_pairs, predicted_counts
from relkd_core.infer.labeler import CheckpointText, stored_vocabulary, teacher_text_encoder
from relkd_core.metrics import confusion_matrix
from relkd_core.models.distilled import DistilledStudent, StudentCheckpoint, load_checkpoint
from relkd_core.models.distilled import scan_features as student_features
from relkd_core.taxonomy import NUSCENES16, Taxonomy, load_taxonomy
from relkd_core.teachers.evaluate import ZeroShotResult, predict_labels
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = ['PROTOCOLS', 'BevSample', 'EvalConfig', 'EvalResult', 'Protocol', 'checkpoint_text',
           'dataset_taxonomy', 'evaluate', 'file_sha256']

LOG = logging.getLogger(__name__)

Protocol = Literal['zero-shot', 'linear-probe', 'finetune', 'gap']
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        protocol: one of :data:`PROTOCOLS`.
        label_fraction: share of labelled scans for linear-probe and finetune (0.01 = 1%).
        vocabulary: closed-set vocabulary for zero-shot (every entry needs a label of the
            data's taxonomy); None: the checkpoint's own on nuScenes-16 data, else every class
            of the data's taxonomy with its prompts (SemanticKITTI's 19 names, say).
        train_data: prepared dataset the labelled scans come from; None: the evaluated one.
        max_gap_pairs: pairs sampled for the structural gap.
        fewshot: optimisation of the few-shot protocols (its seed also picks the scans).
        device: torch device of the student.
    """

    protocol: Protocol
    label_fraction: float = 0.01
    vocabulary: Vocabulary | None = None
    train_data: Path | None = None
    max_gap_pairs: int = 4096
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    device: str = 'cpu'


@dataclass(frozen=True)
class BevSample:
    """One evaluated scan for a bird's-eye view: (N, 2) xy metres, (N,) true and predicted
    uint16 labels."""

    key: str
    xy_m: NDArray[np.float32]
    true_labels: NDArray[np.uint16]
    predicted_labels: NDArray[np.uint16]


@dataclass(frozen=True)
class EvalResult:
    """``metrics`` is JSON-safe (what metrics.json holds); ``confusion`` the (17, 17) confusion
    matrix of the headline mIoU; ``teacher_confusion`` the teacher's on visible points."""

    metrics: dict[str, Any]
    confusion: NDArray[np.int64]
    bev: BevSample | None
    teacher_confusion: NDArray[np.int64] | None = None


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_text(checkpoint: StudentCheckpoint, vocabulary: Vocabulary | None = None
                    ) -> tuple[Vocabulary, NDArray[np.float32]]:
    """The vocabulary and its (C, teacher_dim) unit text embeddings for ``checkpoint``.

    ``None``: the checkpoint's stored vocabulary. Embedded as the Labeler embeds it
    (:class:`~relkd_core.infer.labeler.CheckpointText`): stored rows for the entries whose
    prompts the checkpoint stored, the checkpoint's own teacher text side for the others.
    """
    if vocabulary is None:
        vocabulary = stored_vocabulary(checkpoint)
        if vocabulary is None:
            raise CheckpointError('the checkpoint stores no vocabulary; pass one')
    text = CheckpointText(checkpoint, lambda: teacher_text_encoder(checkpoint))
    return vocabulary, text.embed(vocabulary).numpy()


def _closed_set(vocabulary: Vocabulary, taxonomy: Taxonomy) -> None:
    unknown = [n for n, label in zip(vocabulary.names, vocabulary.labels, strict=True)
               if not 1 <= label <= taxonomy.num_classes]
    if unknown:
        raise ConfigError(f'closed-set evaluation needs every vocabulary entry to stand for a '
                          f'class of the data\'s taxonomy {taxonomy.name}; {unknown} do not '
                          f'(taxonomy names: {list(taxonomy.names)}, or give a label: in a '
                          'vocabulary YAML)')


def dataset_taxonomy(dataset: PreparedDataset | str | os.PathLike[str]) -> Taxonomy:
    """The taxonomy of a prepared dataset's labels (a :class:`PreparedDataset` or its folder):
    its preset's; nuScenes-16 for datasets prepared before presets named one, and for a
    folder without a readable manifest (opening it reports that)."""
    if isinstance(dataset, PreparedDataset):
        manifest, root = dataset.manifest, dataset.root
    else:
        root = Path(dataset)
        try:
            manifest = json.loads((root / 'manifest.json').read_text())
        except (OSError, ValueError):
            return NUSCENES16
    preset = manifest.get('preset') if isinstance(manifest, dict) else None
    name = (preset.get('taxonomy') if isinstance(preset, dict) else None) or NUSCENES16.name
    try:
        return load_taxonomy(name)
    except ConfigError as err:
        raise DataError(f'{root}: {err}') from err


def _open_dataset(root: Path, *, labels: bool) -> PreparedDataset:
    dataset = PreparedDataset(root, features=True)
    if len(dataset) == 0:
        raise DataError(f'{root}: the prepared dataset holds no frames')
    if labels and dataset[0].labels is None:
        raise DataError(f'{root}: the prepared dataset has no ground-truth labels; evaluation '
                        'needs bags with a lidar label field')
    return dataset


def _check_teacher(checkpoint: StudentCheckpoint, dataset: PreparedDataset, *,
                   required: bool) -> bool:
    """Whether the dataset's teacher features are comparable with the student's."""
    if dataset.teacher_id is None:
        if required:
            raise DataError(f'{dataset.root}: prepared without a teacher, but the gap needs '
                            'teacher features; prepare with --teacher')
        return False
    if dataset.feature_dim != checkpoint.teacher_dim:
        raise CheckpointError(
            f'the checkpoint projects to {checkpoint.teacher_dim}-d ({checkpoint.teacher_id}) '
            f'but {dataset.root} holds {dataset.feature_dim}-d features of {dataset.teacher_id};'
            ' evaluate on data prepared with the checkpoint\'s teacher')
    if dataset.teacher_id != checkpoint.teacher_id:
        if required:
            raise CheckpointError(f'the checkpoint was distilled from {checkpoint.teacher_id} '
                                  f'but {dataset.root} holds features of {dataset.teacher_id}')
        LOG.warning('teacher of %s (%s) differs from the checkpoint\'s (%s): no teacher column',
                    dataset.root, dataset.teacher_id, checkpoint.teacher_id)
        return False
    return True


def _scores(confusion: NDArray[np.int64], taxonomy: Taxonomy) -> dict[str, Any]:
    summary = ZeroShotResult.from_confusion(confusion).to_dict(taxonomy.names)
    return {'miou': summary['miou_pct'], 'per_class_iou': summary['per_class_iou_pct'],
            'num_points': summary['num_samples'],
            'predicted_points': predicted_counts(confusion, taxonomy.names)}


def _labels(frame: PreparedFrame) -> NDArray[np.uint16]:
    if frame.labels is None:
        raise DataError(f'frame {frame.key} has no ground-truth labels')
    return frame.labels


def _visible(frame: PreparedFrame) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Camera-visible points and, for each, its first pair (row of the frame's pairs)."""
    return first_pairs(frame.pair_point)


class _Evaluator:
    def __init__(self, checkpoint: StudentCheckpoint, model: DistilledStudent,
                 config: EvalConfig, progress: Progress | None) -> None:
        self.checkpoint, self.model, self.config = checkpoint, model, config
        self.progress = progress

    def _tick(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)

    def features(self, points: NDArray[np.float32], *, head: bool = True) -> torch.Tensor:
        return student_features(self.model, [torch.from_numpy(points)], head=head)[0].cpu()

    def zero_shot(self, dataset: PreparedDataset, *, with_gap: bool) -> EvalResult:
        taxonomy = dataset_taxonomy(dataset)
        wanted = self.config.vocabulary
        if wanted is None and taxonomy.name != NUSCENES16.name:
            wanted = Vocabulary.from_taxonomy(taxonomy)  # the data's own class names
        if wanted is not None:
            _closed_set(wanted, taxonomy)  # before embedding it: fail fast
        vocabulary, text = checkpoint_text(self.checkpoint, wanted)
        _closed_set(vocabulary, taxonomy)
        teacher = _check_teacher(self.checkpoint, dataset, required=False)
        size = taxonomy.num_classes + 1
        classes = taxonomy.num_classes
        all_points = np.zeros((size, size), np.int64)
        student_visible, teacher_visible, teacher_projected = (
            np.zeros((size, size), np.int64) for _ in range(3))
        pairs_k: list[NDArray[np.float32]] = []
        pairs_q: list[NDArray[np.float32]] = []
        bev = None
        per_frame = max(2, -(-self.config.max_gap_pairs // len(dataset)))
        for i in range(len(dataset)):
            frame = dataset[i]
            labels = _labels(frame)
            feats = self.features(frame.points).numpy()
            predicted = predict_labels(feats, text, vocabulary)
            all_points += confusion_matrix(labels, predicted, classes)
            if bev is None:
                bev = BevSample(frame.key, frame.points[:, :2].copy(), labels.copy(), predicted)
            visible, first = _visible(frame)
            student_visible += confusion_matrix(labels[visible], predicted[visible], classes)
            if teacher and frame.pair_features is not None and len(visible):
                teacher_feats = frame.pair_features[first]
                teacher_pairs = predict_labels(frame.pair_features, text, vocabulary)
                teacher_visible += confusion_matrix(labels[visible], teacher_pairs[first], classes)
                teacher_projected += confusion_matrix(
                    labels[frame.pair_point.astype(np.int64)], teacher_pairs, classes)
                if with_gap:
                    rows = sample_rows(len(visible), per_frame, self.config.fewshot.seed + i)
                    pairs_k.append(feats[visible[rows]])
                    pairs_q.append(teacher_feats[rows])
            self._tick('zero-shot', i + 1, len(dataset))
        metrics: dict[str, Any] = {**_scores(all_points, taxonomy),
                                   'vocabulary': list(vocabulary.names),
                                   'visible': _scores(student_visible, taxonomy)}
        if teacher:
            # The teacher on the student's visible points (teacher_miou, kept under its old
            # name too) and on every point-pixel pair; see relkd_core.eval.teacher_scores.
            teacher_scores = _scores(teacher_visible, taxonomy)
            metrics['teacher_miou'] = teacher_scores['miou']
            metrics['teacher_per_class_iou'] = teacher_scores['per_class_iou']
            metrics['teacher_visible'] = teacher_scores
            metrics['teacher_projected'] = _scores(teacher_projected, taxonomy)
        else:
            metrics['teacher_miou'] = None
        if pairs_k:
            metrics['gap'] = self._gap(np.concatenate(pairs_k), np.concatenate(pairs_q))
        return EvalResult(metrics, all_points, bev, teacher_visible if teacher else None)

    def _gap(self, k: NDArray[np.float32], q: NDArray[np.float32]) -> dict[str, Any]:
        gap = structural_gap(k, q, max_pairs=self.config.max_gap_pairs,
                             seed=self.config.fewshot.seed)
        return {'cka': round(gap.cka, 4), 'relational_gap': round(gap.relational_gap, 4),
                'num_pairs': gap.num_pairs,
                'sampling': (f'one pair per camera-visible point (first camera), up to '
                             f'{self.config.max_gap_pairs} pairs drawn uniformly '
                             f'without replacement (seed {self.config.fewshot.seed})')}

    def gap(self, dataset: PreparedDataset) -> EvalResult:
        _check_teacher(self.checkpoint, dataset, required=True)
        result = self.zero_shot(dataset, with_gap=True)
        if 'gap' not in result.metrics:
            raise DataError(f'{dataset.root}: no camera-visible points with teacher features')
        metrics = {**result.metrics, 'miou_protocol': 'zero-shot'}
        return EvalResult(metrics, result.confusion, result.bev, result.teacher_confusion)

    def few_shot(self, dataset: PreparedDataset, source: PreparedDataset, same: bool
                 ) -> EvalResult:
        cfg = self.config
        taxonomy = dataset_taxonomy(dataset)
        source_taxonomy = dataset_taxonomy(source)
        if source_taxonomy.name != taxonomy.name:
            raise DataError(f'{source.root} is labelled in {source_taxonomy.name} but '
                            f'{dataset.root} in {taxonomy.name}; few-shot needs one taxonomy')
        classes = taxonomy.num_classes
        chosen = select_scans(len(source), cfg.label_fraction, cfg.fewshot.seed)
        labelled = [source[int(i)] for i in chosen]
        held = set(chosen.tolist()) if same else set()
        evaluated = [i for i in range(len(dataset)) if i not in held]
        if not evaluated:
            raise DataError(f'{dataset.root}: every scan is labelled, none left to evaluate; '
                            'pass separate training data (--train-data)')
        predict: Callable[[NDArray[np.float32]], NDArray[np.uint16]]
        if cfg.protocol == 'linear-probe':
            feats = [self.features(f.points, head=False) for f in labelled]
            probe = train_linear_probe(*labelled_points(feats, [_labels(f) for f in labelled]),
                                       cfg.fewshot, num_classes=classes)

            def predict_probe(points: NDArray[np.float32]) -> NDArray[np.uint16]:
                with torch.no_grad():
                    logits = probe(self.features(points, head=False))
                return (logits.argmax(dim=1) + 1).numpy().astype(np.uint16)

            predict = predict_probe
        else:
            student = copy.deepcopy(self.model)
            predict = finetune(student, [f.points for f in labelled],
                               [_labels(f) for f in labelled],
                               cfg.fewshot, num_classes=classes, on_step=lambda s, _: self._tick(
                                   'finetune', s + 1, cfg.fewshot.finetune_steps))
        size = classes + 1
        confusion = np.zeros((size, size), np.int64)
        bev = None
        for done, i in enumerate(evaluated):
            frame = dataset[i]
            labels = _labels(frame)
            predicted = predict(frame.points)
            confusion += confusion_matrix(labels, predicted, classes)
            if bev is None:
                bev = BevSample(frame.key, frame.points[:, :2].copy(), labels.copy(), predicted)
            self._tick(cfg.protocol, done + 1, len(evaluated))
        metrics = {**_scores(confusion, taxonomy), 'label_fraction': cfg.label_fraction,
                   'labelled_scans': [f.key for f in labelled],
                   'labelled_from': str(source.root), 'evaluated_scans': len(evaluated),
                   'fewshot': {'probe_epochs': cfg.fewshot.probe_epochs,
                               'probe_lr': cfg.fewshot.probe_lr,
                               'finetune_steps': cfg.fewshot.finetune_steps,
                               'finetune_lr': cfg.fewshot.finetune_lr,
                               'seed': cfg.fewshot.seed}}
        return EvalResult(metrics, confusion, bev)


def evaluate(checkpoint_path: str | os.PathLike[str], data: str | os.PathLike[str],
             config: EvalConfig, progress: Progress | None = None) -> EvalResult:
    """Run ``config.protocol`` for the checkpoint on the prepared dataset ``data``.

    ``progress(what, done, total)`` is called as scans are processed. Raises CheckpointError
    (unreadable checkpoint, teacher mismatch), DataError (empty or unlabelled data) or
    ConfigError (bad protocol options, vocabulary entries without a taxonomy class).
    """
    if config.protocol not in PROTOCOLS:
        raise ConfigError(f'unknown protocol {config.protocol!r}; expected one of '
                          f'{list(PROTOCOLS)}')
    if config.max_gap_pairs < 2:
        raise ConfigError(f'max_gap_pairs must be at least 2, got {config.max_gap_pairs}')
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model(config.device)
    root = Path(data)
    dataset = _open_dataset(root, labels=True)
    evaluator = _Evaluator(checkpoint, model, config, progress)
    if config.protocol == 'zero-shot':
        result = evaluator.zero_shot(dataset, with_gap=True)
    elif config.protocol == 'gap':
        result = evaluator.gap(dataset)
    else:
        train_root = Path(config.train_data) if config.train_data is not None else root
        same = train_root.resolve() == root.resolve()
        source = dataset if same else _open_dataset(train_root, labels=True)
        result = evaluator.few_shot(dataset, source, same)
    manifest = dataset.manifest
    header = {'protocol': config.protocol,
              'data': {'path': str(root), 'frames': len(dataset),
                       'preset': manifest.get('preset', {}).get('name'),
                       'taxonomy': dataset_taxonomy(dataset).name,
                       'teacher_id': dataset.teacher_id},
              'checkpoint': {'path': str(checkpoint_path),
                             'sha256': file_sha256(checkpoint_path),
                             'teacher_id': checkpoint.teacher_id, 'step': checkpoint.step,
                             'code_version': checkpoint.code_version,
                             'losses': checkpoint.run_config.get('loss', {}).get('weights')}}
    return EvalResult({**header, **result.metrics}, result.confusion, result.bev,
                      result.teacher_confusion)
