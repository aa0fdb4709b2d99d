"""The configuration of one ``relkd-train`` run (YAML in ``config/train/``).

Relative paths in a config are resolved against the current working directory, as for every
command-line path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from relkd_core.config import bounded
from relkd_core.errors import ConfigError
from relkd_core.losses import LossConfig
from relkd_core.models.config import StudentConfig

__all__ = ['AugmentConfig', 'DataConfig', 'OptimConfig', 'TrainConfig']


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the pairs come from: a prepared dataset, or bags prepared into a cache first.

    Fields:
        prepared: a folder written by ``relkd-prepare`` (exclusive with ``bags``).
        bags: recorded bags; they are prepared into ``cache_dir`` (default ``<out>/prepared``)
            with ``preset`` and the teacher, and a rerun reuses what is there.
        preset: topic preset of ``bags`` (name or YAML file).
        teacher: the frozen 2D teacher (``synthetic``, ``openclip``, ``precomputed``). It gives
            the text embeddings stored in checkpoints and must be the teacher the dataset was
            prepared with (checked by teacher id).
        teacher_config: teacher YAML (None: the teacher's defaults).
        cache_dir: where bags are prepared.
        frames_per_shard: shard size when preparing bags.
        superpixels: SLIC segments per image when preparing bags (None: none).
        loader_workers: DataLoader worker processes per rank.
        max_frames: use only the first frames of the dataset (None: all); for quick runs.
    """

    prepared: Path | None = None
    bags: tuple[Path, ...] = ()
    preset: str | None = None
    teacher: Literal['synthetic', 'openclip', 'precomputed', 'learned'] = 'synthetic'
    teacher_config: Path | None = None
    cache_dir: Path | None = None
    frames_per_shard: int = bounded(32, min=1)
    superpixels: int | None = bounded(None, min=1)
    loader_workers: int = bounded(0, min=0)
    max_frames: int | None = bounded(None, min=1)

    def validate(self) -> None:
        if (self.prepared is None) == (not self.bags):
            raise ConfigError('data: give either prepared (a relkd-prepare folder) or bags '
                              '(with preset), not both and not neither')
        if self.bags and self.preset is None:
            raise ConfigError('data.preset: bags need a topic preset (e.g. synth-nuscenes)')


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Per-scan augmentations. They move or drop points only, so every kept point keeps its
    pixel: the pairs stay correct by construction.

    Fields:
        rotate_z_deg: uniform rotation about the lidar's z axis in [-r, r] degrees.
        flip_x / flip_y: mirror x (resp. y) with probability 1/2.
        scale_range: uniform scale factor range (min, max).
        point_dropout: fraction of points dropped at random (their pairs go with them).
    """

    rotate_z_deg: float = bounded(180.0, min=0.0, max=180.0)
    flip_x: bool = True
    flip_y: bool = True
    scale_range: tuple[float, float] = bounded((0.95, 1.05), min=0.01, max=100.0)
    point_dropout: float = bounded(0.0, min=0.0, max=0.95)

    def validate(self) -> None:
        if self.scale_range[0] > self.scale_range[1]:
            raise ConfigError(f'augment.scale_range: min > max in {list(self.scale_range)}')


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine to ``min_lr_ratio``).

    Fields:
        name: ``adamw`` or ``sgd`` (with Nesterov momentum, as SLidR).
        lr, weight_decay, momentum: as in torch.optim (momentum for SGD only).
        warmup_steps: steps of linear warm-up from 0.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip_norm: clip the global gradient norm (None: no clipping).
    """

    name: Literal['adamw', 'sgd'] = 'adamw'
    lr: float = bounded(1e-3, min=0.0)
    weight_decay: float = bounded(1e-4, min=0.0)
    momentum: float = bounded(0.9, min=0.0, max=1.0)
    warmup_steps: int = bounded(0, min=0)
    min_lr_ratio: float = bounded(0.0, min=0.0, max=1.0)
    grad_clip_norm: float | None = bounded(10.0, min=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One distillation run.

    Fields:
        out_dir: run folder: resolved ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
            ``last.pt``, the final ``student.pt`` and optional ``tensorboard/``.
        steps: optimisation steps in total (epochs follow from the dataset size).
        batch_size: scans per step and rank.
        seed: seeds the model init, the data order, augmentations and pair sampling.
        deterministic: deterministic algorithms only; with it, a resumed run repeats the losses
            of an uninterrupted one exactly.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss
            scaling); ignored on CPU.
        vocabulary: vocabulary name (``config/vocabularies``) or YAML whose text embeddings go
            into every checkpoint.
        log_every: steps between metric records (and progress-bar refreshes).
        checkpoint_every: steps between ``last.pt`` checkpoints.
        keep_checkpoints: step checkpoints kept in ``checkpoints/`` (the oldest are removed).
        tensorboard: also write TensorBoard events (needs the ``tensorboard`` package).
    """

    out_dir: Path
    data: DataConfig
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    steps: int = bounded(1000, min=1)
    batch_size: int = bounded(2, min=1)
    seed: int = 0
    deterministic: bool = False
    device: str = 'auto'
    amp: bool = True
    vocabulary: str = 'nuscenes'
    log_every: int = bounded(10, min=1)
    checkpoint_every: int = bounded(100, min=1)
    keep_checkpoints: int = bounded(3, min=1)
    tensorboard: bool = False

    def validate(self) -> None:
        if not (self.device in ('auto', 'cpu', 'cuda') or self.device.startswith('cuda:')):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")


#: Keys that may differ between a run and its resume: they change how often or where things
#: are written or how data is loaded, not what is computed (a moved run folder resumes).
RESUMABLE_KEYS = frozenset({
    'steps', 'log_every', 'checkpoint_every', 'keep_checkpoints', 'tensorboard', 'out_dir',
    'data.loader_workers', 'device',
})
