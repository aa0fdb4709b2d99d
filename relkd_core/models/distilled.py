"""The distilled student (MinkUNet + projection head) and its one-file checkpoint.

A checkpoint is a plain dict of tensors, numbers and strings, loadable with
``torch.load(path, weights_only=True)`` (never unpickled code)::

    format            'relkd-checkpoint/3' (formats 1 and 2 still load, upgraded: see below)
    student_config    JSON of the StudentConfig (the model is rebuilt from this, never from the
                      config that happens to be current)
    teacher           JSON of the TeacherRef {name, config, id}: the teacher the head's output
                      space belongs to, and how to build its text side again
    teacher_id        the teacher's id again (readers of older formats); teacher_dim its width
    state_dict        weights of DistilledStudent (backbone.* and head.*)
    vocabulary        JSON {names, prompts, labels} of the Vocabulary of the stored text
                      embeddings ('' when none)
    text_embeddings   (C, teacher_dim) float32 unit rows, the teacher's text side for that
                      vocabulary, so zero-shot labelling needs no teacher model
    scan_input        JSON of the ScanInput the training scans were read with (intensity field
                      and scale, range limits, NaN policy; '' when unknown): what consumers read
                      scans with unless told otherwise
    taxonomy          name of the taxonomy of the training data's labels ('' when unknown)
    run_config        JSON of the whole resolved training config (provenance only: no consumer
                      reads settings from it)
    code_version      package version (+ git commit when run from a checkout)
    step              optimisation steps done
    training          optional: optimizer, scheduler, RNG and data position, for --resume;
                      absent from the final ``student.pt``

Older formats load upgraded, with one warning: the TeacherRef is rebuilt from the run config's
``data.teacher`` and ``data.teacher_config`` (a checkpoint whose run config lacks them is
refused, naming the field); a stored ScanInput without a NaN policy gets ``'drop'`` (training
always dropped non-finite points); a format-1 checkpoint (written before ``scan_input`` and
``taxonomy`` existed) has both None, and consumers read scans with their own settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from relkd_core.atomic import write_atomic
from relkd_core.config import config_from_dict, config_to_dict
from relkd_core.data.scan import ScanInput
from relkd_core.errors import CheckpointError, ConfigError, RelkdError
from relkd_core.geometry.voxel import devoxelize
from relkd_core.models.batch import VoxelBatch, voxelize_batch
from relkd_core.models.config import StudentConfig
from relkd_core.models.minkunet import build_student
from relkd_core.teachers.vocabulary import Vocabulary

__all__ = [
    'CHECKPOINT_FORMAT',
    'DistilledStudent',
    'StudentCheckpoint',
    'TeacherRef',
    'code_version',
    'load_checkpoint',
    'save_checkpoint',
    'scan_features',
]

CHECKPOINT_FORMAT = 'relkd-checkpoint/3'
#: Older formats :func:`load_checkpoint` still reads (upgraded, see the module doc).
_FORMAT_1, _FORMAT_2 = 'relkd-checkpoint/1', 'relkd-checkpoint/2'

log = logging.getLogger(__name__)


class DistilledStudent(nn.Module):
    """MinkUNet backbone and a linear head from its ``out_dim`` to the teacher's dimension.

    ``forward(batch, points)`` gives the (unnormalised) teacher-space features of the input
    points ``points`` ((M,) int64 rows of the concatenated scans; None: every point).
    """

    def __init__(self, config: StudentConfig, teacher_dim: int) -> None:
        super().__init__()
        self.config = config
        self.teacher_dim = teacher_dim
        self.backbone = build_student(config)
        self.head = nn.Linear(config.out_dim, teacher_dim)

    def forward(self, batch: VoxelBatch, points: torch.Tensor | None = None) -> torch.Tensor:
        features: torch.Tensor = self.backbone(batch)
        if points is not None:
            features = features[points]
        result: torch.Tensor = self.head(features)
        return result


@torch.no_grad()
def scan_features(model: DistilledStudent, scans: list[torch.Tensor], *,
                  device: torch.device | str | None = None, head: bool = True
                  ) -> list[torch.Tensor]:
    """Features of every point of each scan, without gradients.

    ``scans``: (N_i, 4) float32 ``x, y, z, intensity`` in the lidar frame (metres). Returns one
    float32 tensor per scan, on ``device`` (default: the model's device): with ``head``, the
    L2-normalised (N_i, teacher_dim) teacher-space features; without, the backbone's own
    (N_i, out_dim) features (what a linear probe reads). The one path from scans to features
    shared by evaluation and the labeler.
    """
    target = torch.device(device) if device is not None else next(model.parameters()).device
    if not scans:
        return []
    batch = voxelize_batch(scans, model.config, device=target)
    if head:
        # Head and normalisation per voxel, then devoxelized: the points of a voxel share its
        # row, so this equals model(batch) normalised per point, with voxels ≪ points rows.
        voxels = model.head(model.backbone.forward_voxels(batch))
        features = devoxelize(nn.functional.normalize(voxels.float(), dim=1),
                              batch.point_to_voxel)
    else:
        features = model.backbone(batch).float()
    return batch.split_points(features)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TeacherRef:
    """The frozen teacher a student was distilled from: its ``name`` in the teacher registry
    (``synthetic``, ``openclip``, ...), the teacher YAML ``config`` it was built with (a path
    as given to relkd-train; None: the teacher's defaults) and its ``id``, which a teacher
    built again must have for its text embeddings to fit the student."""

    name: str
    config: str | None
    id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudentCheckpoint:
    """Everything a checkpoint holds (see the module doc); ``training`` is None in a final one."""

    student_config: StudentConfig
    teacher: TeacherRef
    teacher_dim: int
    state_dict: dict[str, torch.Tensor]
    vocabulary: Vocabulary | None = None
    text_embeddings: torch.Tensor | None = None
    run_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    scan_input: ScanInput | None = None
    taxonomy: str | None = None
    code_version: str = ''
    step: int = 0
    training: dict[str, Any] | None = None

    @property
    def teacher_id(self) -> str:
        """The id of the teacher the head's output space belongs to (``teacher.id``)."""
        return self.teacher.id

    def build_model(self, device: torch.device | str = 'cpu') -> DistilledStudent:
        """The model with these weights, in eval mode, on ``device``."""
        model = DistilledStudent(self.student_config, self.teacher_dim)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as err:
            raise CheckpointError(f'checkpoint weights do not fit the model its own config '
                                  f'describes: {err}') from err
        return model.to(device).eval()

    def without_training_state(self) -> StudentCheckpoint:
        return dataclasses.replace(self, training=None)


def code_version() -> str:
    """``relkd_ros <version>`` and, when running from a git checkout, ``+g<commit>``."""
    from importlib import metadata

    try:
        version = metadata.version('relkd_ros')
    except metadata.PackageNotFoundError:
        version = 'unknown'
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=root,
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return f'relkd_ros {version}'
    return f'relkd_ros {version}+g{commit.strip()}'


def save_checkpoint(path: str | os.PathLike[str], checkpoint: StudentCheckpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (a crash leaves the old file or the new)."""
    payload: dict[str, Any] = {
        'format': CHECKPOINT_FORMAT,
        'student_config': json.dumps(config_to_dict(checkpoint.student_config)),
        'teacher': json.dumps(dataclasses.asdict(checkpoint.teacher)),
        'teacher_id': checkpoint.teacher_id,
        'teacher_dim': int(checkpoint.teacher_dim),
        'state_dict': {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        'vocabulary': _vocabulary_json(checkpoint.vocabulary),
        'run_config': json.dumps(checkpoint.run_config),
        'scan_input': (json.dumps(dataclasses.asdict(checkpoint.scan_input))
                       if checkpoint.scan_input is not None else ''),
        'taxonomy': checkpoint.taxonomy or '',
        'code_version': checkpoint.code_version,
        'step': int(checkpoint.step),
    }
    if checkpoint.text_embeddings is not None:
        payload['text_embeddings'] = checkpoint.text_embeddings.detach().float().cpu()
    if checkpoint.training is not None:
        payload['training'] = checkpoint.training
    write_atomic(path, lambda stream: torch.save(payload, stream))


_REQUIRED = ('student_config', 'teacher_id', 'teacher_dim', 'state_dict', 'step')
#: Keys a current-format checkpoint must hold besides ``_REQUIRED``.
_REQUIRED_3 = ('teacher', 'vocabulary', 'scan_input')
_ZIP_MAGIC = b'PK\x03\x04'


def _check_archive(path: Path) -> None:
    """Refuse what cannot be a checkpoint before torch reads it: an empty file, or one that is
    not the zip archive ``torch.save`` writes (a pickle, a text file), which torch would hand
    to its legacy unpickler."""
    try:
        with path.open('rb') as stream:
            head = stream.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f'{path}: cannot read the checkpoint: {err.strerror}') from err
    if not head:
        raise CheckpointError(f'{path}: the file is empty (0 bytes), not a relkd checkpoint; '
                              'was it written or copied completely?')
    if head != _ZIP_MAGIC:
        raise CheckpointError(f'{path}: not a relkd checkpoint (a torch.save zip archive was '
                              f'expected; the file starts with {head!r})')
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f'{path}: damaged or truncated checkpoint (its zip directory '
                              f'cannot be read: {err})') from err
    if any(name.endswith('/constants.pkl') for name in names):
        raise CheckpointError(f'{path}: a TorchScript file (what relkd-export writes), not a '
                              'relkd checkpoint; give the student.pt it was exported from')


def _load_failure(err: Exception) -> str:
    """torch.load's reason in one line, without its advice to retry with weights_only=False
    (which would run code stored in the file: never for a file from elsewhere)."""
    text = str(err)
    if 'weights_only' in text or 'Weights only' in text:
        noise = ('weights_only', 'Weights only', 'Check the documentation', 'Please file an issue',
                 'pytorch.org')
        reason = ' '.join(line.strip().removeprefix('WeightsUnpickler error:').strip()
                          for line in text.splitlines()
                          if line.strip() and not any(n in line for n in noise))
        return ('refused: it holds objects other than tensors, numbers and strings'
                f'{f" ({reason})" if reason else ""}; relkd never runs code stored in a file')
    first = text.split('. ')[0].splitlines()[0] if text else type(err).__name__
    return f'not a readable relkd checkpoint (damaged or truncated? {first})'


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = 'cpu'
                    ) -> StudentCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only``: no code runs).

    Raises CheckpointError for a missing, truncated or foreign file, naming what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f'{path}: {_load_failure(err)}') from err
    formats = (CHECKPOINT_FORMAT, _FORMAT_2, _FORMAT_1)
    if not isinstance(payload, dict) or payload.get('format') not in formats:
        found = payload.get('format') if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f'{path}: expected format {CHECKPOINT_FORMAT!r}, got {found!r}; '
                              'is this a relkd-train checkpoint?')
    current = payload['format'] == CHECKPOINT_FORMAT
    missing = [key for key in _REQUIRED + (_REQUIRED_3 if current else ()) if key not in payload]
    if missing:
        raise CheckpointError(f'{path}: checkpoint lacks {missing}')
    try:
        student_config = config_from_dict(StudentConfig, json.loads(payload['student_config']),
                                          source=f'{path}:student_config')
    except (ConfigError, json.JSONDecodeError) as err:
        raise CheckpointError(f'{path}: stored student config is invalid: {err}') from err
    run_config = json.loads(payload.get('run_config') or '{}')
    if current:
        teacher = _stored_teacher(path, payload['teacher'])
    else:
        teacher = _upgraded_teacher(path, payload['format'], run_config,
                                    str(payload['teacher_id']))
        log.warning('%s: a %s checkpoint, upgraded on reading to %s (teacher %s from its run '
                    'config%s); write it again with relkd-train to record the contract itself',
                    path, payload['format'], CHECKPOINT_FORMAT, teacher.name,
                    '; it does not record how scans were read nor the taxonomy, so readers use '
                    'their own settings' if payload['format'] == _FORMAT_1 else '')
    if teacher.id != str(payload['teacher_id']):
        raise CheckpointError(f'{path}: the stored teacher has id {teacher.id!r} but '
                              f'teacher_id is {payload["teacher_id"]!r}; the file was altered')
    return StudentCheckpoint(
        student_config=student_config,
        teacher=teacher,
        teacher_dim=int(payload['teacher_dim']),
        state_dict=payload['state_dict'],
        vocabulary=_stored_vocabulary(path, payload.get('vocabulary')),
        text_embeddings=payload.get('text_embeddings'),
        run_config=run_config,
        scan_input=_stored_scan_input(path, payload.get('scan_input')),
        taxonomy=str(payload.get('taxonomy') or '') or None,
        code_version=str(payload.get('code_version', '')),
        step=int(payload['step']),
        training=payload.get('training'),
    )


def _vocabulary_json(vocabulary: Vocabulary | None) -> str:
    if vocabulary is None:
        return ''
    return json.dumps({'names': list(vocabulary.names),
                       'prompts': [list(p) for p in vocabulary.prompts],
                       'labels': list(vocabulary.labels)})


def _stored_vocabulary(path: Path, stored: Any) -> Vocabulary | None:
    if not stored:
        return None
    try:
        values = json.loads(stored)
        return Vocabulary(names=tuple(str(n) for n in values['names']),
                          prompts=tuple(tuple(str(p) for p in ps) for ps in values['prompts']),
                          labels=tuple(int(label) for label in values['labels']))
    except (TypeError, ValueError, KeyError, RelkdError) as err:
        raise CheckpointError(f'{path}: stored vocabulary is invalid ({type(err).__name__}: '
                              f'{err}); expected names, prompts and labels') from err


def _stored_teacher(path: Path, stored: Any) -> TeacherRef:
    try:
        values = json.loads(stored)
        config = values['config']
        return TeacherRef(name=str(values['name']), id=str(values['id']),
                          config=None if config is None else str(config))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f'{path}: stored teacher is invalid ({type(err).__name__}: '
                              f'{err}); expected name, config and id') from err


def _upgraded_teacher(path: Path, found: str, run_config: Any, teacher_id: str) -> TeacherRef:
    """The TeacherRef of a format-1/2 checkpoint, from the run config relkd-train wrote."""
    data = run_config.get('data') if isinstance(run_config, dict) else None
    name = data.get('teacher') if isinstance(data, dict) else None
    if not name:
        raise CheckpointError(f'{path}: a {found} checkpoint without run_config data.teacher '
                              f'cannot be upgraded to {CHECKPOINT_FORMAT} (the teacher\'s name '
                              'is missing); retrain, or write it again with a teacher')
    config = data.get('teacher_config')  # type: ignore[union-attr]
    return TeacherRef(name=str(name), config=str(config) if config else None, id=teacher_id)


def _stored_scan_input(path: Path, stored: Any) -> ScanInput | None:
    if not stored:
        return None
    try:
        values = json.loads(stored)
        return ScanInput(intensity_field=str(values['intensity_field']),
                         intensity_scale=float(values['intensity_scale']),
                         min_range_m=float(values['min_range_m']),
                         max_range_m=float(values['max_range_m']),
                         # Formats 1 and 2 did not record it: training always dropped them.
                         nan_policy=str(values.get('nan_policy', 'drop')))
    except (TypeError, ValueError, KeyError, ConfigError) as err:
        raise CheckpointError(f'{path}: stored scan_input is invalid ({type(err).__name__}: '
                              f'{err}); expected intensity_field, intensity_scale, min_range_m, '
                              'max_range_m and nan_policy') from err
