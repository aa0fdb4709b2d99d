"""The distillation loop: student + head against frozen teacher features, one process per rank.

What a run writes (rank 0 only) under ``config.out_dir``::

    config.yaml            the resolved config
    metrics.jsonl          one JSON record every ``log_every`` steps (loss, parts, lr, scans/s)
    checkpoints/step_NNNNNNN.pt   every ``checkpoint_every`` steps, the newest
                           ``keep_checkpoints`` kept
    last.pt                the newest step checkpoint (a hard link), what --resume reads
    student.pt             the final model without training state, what the labeler loads
    tensorboard/           when ``tensorboard: true``

Resuming restores the weights, optimizer, scheduler, loss scaler, RNG and the data position
(the step; the data order and every augmentation follow from ``(seed, epoch, frame)``), so a
deterministic run continues with exactly the losses it would have had.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from relkd_core.atomic import staging_prefix, write_text_atomic
from relkd_core.config import config_to_dict, save_config
from relkd_core.data.prepared import rank_indices
from relkd_core.errors import CheckpointError, ConfigError, DataError
from relkd_core.losses import DistillationLoss
from relkd_core.models.batch import voxelize_batch
from relkd_core.models.distilled import (
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    code_version,
    save_checkpoint,
)
from relkd_core.teachers.vocabulary import Vocabulary
from relkd_core.train.batch import DistillBatch, DistillFrames, collate
from relkd_core.train.config import RESUMABLE_KEYS, TrainConfig
from relkd_core.train.distributed import DistContext
from relkd_core.train.run_folder import FINAL_NAME, LAST_NAME, METRICS_NAME

__all__ = ['StepReport', 'TextSide', 'TrainResult', 'Trainer', 'config_differences']

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class TextSide:
    """The teacher's text embeddings of a vocabulary, stored in every checkpoint.

    ``embeddings`` is (C, D) float32 with unit rows, one per entry of ``vocabulary``.
    """

    vocabulary: Vocabulary
    embeddings: torch.Tensor


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What one optimisation step did: ``loss`` is the mean over ranks on logging steps (this
    rank's otherwise), ``parts`` are this rank's."""

    step: int
    epoch: int
    loss: float
    parts: dict[str, float]
    lr: float
    pairs: int
    scans_per_s: float
    logged: bool


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps_done: int
    interrupted: bool
    last_checkpoint: Path | None
    final_checkpoint: Path | None


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = '') -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        dotted = f'{prefix}{key}'
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in ('weights',):
            out.extend(config_differences(a, b, dotted + '.'))
        elif a != b:
            out.append(dotted)
    return out


class Trainer:
    """Build the model, optimiser and data of one rank, and run the loop.

    Args:
        config: the resolved run config.
        ctx: this process's rank and device.
        dataset_root: the prepared dataset to distil from.
        teacher: the teacher the run's head maps into (its id must equal the dataset's);
            recorded in every checkpoint.
        text: text embeddings stored in checkpoints (None: checkpoints without them).
        resume: a checkpoint with training state to continue from.
    """

    def __init__(self, config: TrainConfig, ctx: DistContext, dataset_root: Path,
                 teacher: TeacherRef, text: TextSide | None = None,
                 resume: StudentCheckpoint | None = None) -> None:
        self.config, self.ctx, self.text = config, ctx, text
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.frames = DistillFrames(str(dataset_root), augment=config.augment,
                                    pairs_per_batch=config.loss.pairs_per_batch,
                                    batch_size=config.batch_size, seed=config.seed,
                                    superpixels=config.loss.superpixels)
        if self.frames.frames.teacher_id != teacher.id:
            raise DataError(f'{dataset_root} holds features of teacher '
                            f'{self.frames.frames.teacher_id!r}, but this run distils '
                            f'{teacher.id!r}; prepare the data with the same teacher and '
                            'teacher config, or change data.teacher/teacher_config')
        self.teacher = teacher
        self.teacher_id = teacher.id
        self.teacher_dim = self.frames.frames.feature_dim
        if text is not None and text.embeddings.shape[1] != self.teacher_dim:
            raise ConfigError(f'text embeddings are {text.embeddings.shape[1]}-d but the '
                              f'dataset\'s teacher features are {self.teacher_dim}-d')
        self.num_frames = len(self.frames)
        if config.data.max_frames is not None:
            self.num_frames = min(self.num_frames, config.data.max_frames)
        if self.num_frames == 0:
            raise DataError(f'{dataset_root} holds no frames to train on')
        per_rank = math.ceil(self.num_frames / ctx.world_size)
        self.steps_per_epoch = math.ceil(per_rank / config.batch_size)

        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = DistilledStudent(config.student, self.teacher_dim).to(ctx.device)
        self.loss = DistillationLoss(config.loss)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(ctx.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.step = 0
        if resume is not None:
            self._restore(resume)
        self.ddp: torch.nn.Module = (
            DistributedDataParallel(self.model, device_ids=None if ctx.device.type == 'cpu'
                                    else [ctx.device]) if ctx.distributed else self.model)
        self.out = config.out_dir
        self._vocab_labels = (torch.tensor(text.vocabulary.labels, device=ctx.device)
                              if text is not None else None)
        self._text = text.embeddings.to(ctx.device) if text is not None else None

    # -- set-up ----------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        params = self.model.parameters()
        if optim.name == 'sgd':
            return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                                   weight_decay=optim.weight_decay,
                                   nesterov=optim.momentum > 0)
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)

    def _lr_factor(self, step: int) -> float:
        optim = self.config.optim
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        span = max(1, self.config.steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp or self.ctx.device.type != 'cuda':
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _restore(self, checkpoint: StudentCheckpoint) -> None:
        state = checkpoint.training
        if state is None:
            raise CheckpointError('the checkpoint has no training state (a final student.pt?); '
                                  'resume from last.pt or a checkpoints/step_*.pt file')
        try:
            written_by = int(state['world_size'])
            if written_by != self.ctx.world_size:
                raise CheckpointError(
                    f'the checkpoint was written by {written_by} process(es), this run has '
                    f'{self.ctx.world_size}; resume with the same --nproc_per_node so every '
                    'rank continues its own share of the data')
            steps_per_epoch = state.get('steps_per_epoch', self.steps_per_epoch)
            if int(steps_per_epoch) != self.steps_per_epoch:
                raise CheckpointError(
                    f'the checkpoint was written with {steps_per_epoch} steps per epoch, this '
                    f'run has {self.steps_per_epoch}: the dataset (or data.max_frames) is not '
                    'the one the run started on; resume on the same data, or start a new '
                    'out_dir')
            self.model.load_state_dict(checkpoint.state_dict)
            self.optimizer.load_state_dict(state['optimizer'])
            self.scheduler.load_state_dict(state['scheduler'])
            if state.get('scaler'):
                self.scaler.load_state_dict(state['scaler'])
            torch.set_rng_state(state['rng_torch'])
            if self.ctx.device.type == 'cuda' and state.get('rng_cuda') is not None:
                torch.cuda.set_rng_state(state['rng_cuda'], self.ctx.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            # A checkpoint whose state does not fit this run (edited, or from another model).
            what = f'lacks {err}' if isinstance(err, KeyError) else str(err).splitlines()[0]
            raise CheckpointError(f'cannot resume from this checkpoint: its training state '
                                  f'does not fit this run ({what})') from err
        self.step = checkpoint.step

    # -- data ------------------------------------------------------------------------------

    def _batches(self, epoch: int, first: int) -> Iterator[DistillBatch]:
        """This rank's batches of ``epoch`` from batch ``first`` on."""
        self.frames.set_epoch(epoch)
        order = rank_indices(self.num_frames, self.ctx.rank, self.ctx.world_size,
                             seed=self.config.seed, epoch=epoch)
        subset = Subset(self.frames, order[first * self.config.batch_size:])
        loader = DataLoader(subset, batch_size=self.config.batch_size, shuffle=False,
                            num_workers=self.config.data.loader_workers, collate_fn=collate)
        return iter(loader)

    # -- the loop --------------------------------------------------------------------------

    def run(self, on_step: Callable[[StepReport], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
        """Train up to ``config.steps``; stop early (with a checkpoint) when ``should_stop()``
        turns true on any rank."""
        config, ctx = self.config, self.ctx
        writer = self._open_outputs()
        batches: Iterator[DistillBatch] | None = None
        last: Path | None = None
        interrupted = False
        window_start, window_scans = time.perf_counter(), 0
        try:
            while self.step < config.steps:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                if batches is None or position == 0:
                    batches = self._batches(epoch, position)
                batch = next(batches)
                total, parts, pairs = self._train_step(batch)
                self.step += 1
                window_scans += len(batch.scans) * ctx.world_size
                logged = self.step % config.log_every == 0 or self.step in (1, config.steps)
                if logged:  # a collective: every rank reaches it at the same steps
                    total = ctx.mean(total.reshape(1))[0]
                now = time.perf_counter()
                rate = window_scans / max(now - window_start, 1e-9)
                report = StepReport(
                    step=self.step, epoch=epoch, loss=float(total),
                    parts={k: float(v) for k, v in parts.items()},
                    lr=float(self.scheduler.get_last_lr()[0]), pairs=pairs, scans_per_s=rate,
                    logged=logged)
                if logged:
                    window_start, window_scans = now, 0
                    self._log(report, writer)
                if on_step is not None and ctx.is_main:
                    on_step(report)
                stop = ctx.any(should_stop())
                if stop or self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    last = self._save_step_checkpoint()
                if stop:
                    interrupted = self.step < config.steps
                    break
            final = None
            if not interrupted:
                if last is None and self.step >= config.steps:
                    last = self._save_step_checkpoint()  # resumed a finished run
                final = self._save_final()
            ctx.barrier()
            return TrainResult(self.step, interrupted, last, final)
        finally:
            if writer is not None:
                writer.close()

    def _train_step(self, batch: DistillBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                        int]:
        ctx, model = self.ctx, self.ddp
        model.train()
        scans = [scan.to(ctx.device, non_blocking=True) for scan in batch.scans]
        voxels = voxelize_batch(scans, self.config.student)
        pair_points = batch.pair_points.to(ctx.device)
        autocast = (torch.autocast(ctx.device.type, dtype=self.amp_dtype)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        with autocast:
            features = model(voxels, pair_points)
        features = features.float()
        parts: dict[str, torch.Tensor] = {}
        if batch.num_pairs:
            out = self.loss(features, batch.pair_features.to(ctx.device),
                            None if batch.pair_segments is None
                            else batch.pair_segments.to(ctx.device))
            total, parts = out.total, dict(out.parts)
        else:
            # No pair survived (e.g. all dropped): still run backward, so every rank's
            # gradient all-reduce happens, but with a zero gradient.
            total = features.sum() * 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.optim.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                  self.config.optim.grad_clip_norm)
            parts['grad_norm'] = norm.detach().float()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        with torch.no_grad():
            parts.update(self._zero_shot_accuracy(features, batch))
        parts = {k: v.detach().float().cpu() for k, v in parts.items()}
        return total.detach().float().cpu(), parts, batch.num_pairs

    def _zero_shot_accuracy(self, features: torch.Tensor, batch: DistillBatch
                            ) -> dict[str, torch.Tensor]:
        """Share of labelled pairs whose nearest text embedding names their class."""
        if self._text is None or self._vocab_labels is None or batch.pair_labels is None:
            return {}
        labels = batch.pair_labels.to(features.device)
        labelled = labels > 0
        if not bool(labelled.any()):
            return {}
        scores = torch.nn.functional.normalize(features[labelled], dim=1) @ self._text.T
        predicted = self._vocab_labels[scores.argmax(dim=1)]
        return {'zero_shot_accuracy': (predicted == labels[labelled]).float().mean()}

    # -- outputs ---------------------------------------------------------------------------

    def _open_outputs(self) -> Any:
        if not self.ctx.is_main:
            return None
        (self.out / 'checkpoints').mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out / 'config.yaml')
        self._truncate_metrics()
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError('tensorboard: true needs the tensorboard package '
                              '(pip install tensorboard, or the [tensorboard] extra)') from err
        return SummaryWriter(str(self.out / 'tensorboard'), purge_step=self.step + 1)

    def _truncate_metrics(self) -> None:
        """Drop records past the resumed step: the interrupted run's steps after its last
        checkpoint are redone and logged again."""
        path = self.out / METRICS_NAME
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)['step'] <= self.step]
        write_text_atomic(path, ''.join(line + '\n' for line in kept))

    def _log(self, report: StepReport, writer: Any) -> None:
        if not self.ctx.is_main:
            return
        record = {'step': report.step, 'epoch': report.epoch, 'lr': report.lr,
                  'loss': report.loss, **report.parts, 'pairs': report.pairs,
                  'scans_per_s': round(report.scans_per_s, 3), 'time': time.time()}
        with (self.out / METRICS_NAME).open('a') as stream:
            stream.write(json.dumps(record) + '\n')
        if writer is not None:
            writer.add_scalar('loss/total', report.loss, report.step)
            for name, value in report.parts.items():
                writer.add_scalar(f'loss/{name}', value, report.step)
            writer.add_scalar('lr', report.lr, report.step)
            writer.add_scalar('scans_per_s', report.scans_per_s, report.step)

    def _checkpoint(self, training: bool) -> StudentCheckpoint:
        state: dict[str, Any] | None = None
        if training:
            state = {'optimizer': self.optimizer.state_dict(),
                     'scheduler': self.scheduler.state_dict(),
                     'scaler': self.scaler.state_dict(),
                     'rng_torch': torch.get_rng_state(),
                     'rng_cuda': (torch.cuda.get_rng_state(self.ctx.device)
                                  if self.ctx.device.type == 'cuda' else None),
                     'world_size': self.ctx.world_size,
                     'steps_per_epoch': self.steps_per_epoch}
        return StudentCheckpoint(
            student_config=self.config.student, teacher=self.teacher,
            teacher_dim=self.teacher_dim, state_dict=self.model.state_dict(),
            vocabulary=self.text.vocabulary if self.text else None,
            text_embeddings=self.text.embeddings if self.text else None,
            run_config=config_to_dict(self.config),
            scan_input=self.frames.frames.scan_input, taxonomy=self.frames.frames.taxonomy,
            code_version=code_version(), step=self.step, training=state)

    def _save_step_checkpoint(self) -> Path | None:
        if not self.ctx.is_main:
            return None
        folder = self.out / 'checkpoints'
        path = folder / f'step_{self.step:07d}.pt'
        save_checkpoint(path, self._checkpoint(training=True))
        _replace_link(path, self.out / LAST_NAME)
        old = sorted(folder.glob('step_*.pt'))[:-self.config.keep_checkpoints]
        for stale in old:
            stale.unlink(missing_ok=True)
        return path

    def _save_final(self) -> Path | None:
        if not self.ctx.is_main:
            return None
        path = self.out / FINAL_NAME
        save_checkpoint(path, self._checkpoint(training=False))
        return path


def _replace_link(target: Path, link: Path) -> None:
    """Point ``link`` at ``target``'s content atomically (hard link; a copy where links fail)."""
    temporary = link.with_name(f'{staging_prefix(link)}link.tmp')  # swept if we die here
    temporary.unlink(missing_ok=True)
    try:
        os.link(target, temporary)
    except OSError:
        temporary.write_bytes(target.read_bytes())
    os.replace(temporary, link)


def check_resumable(stored: dict[str, Any], current: TrainConfig) -> None:
    """Raise ConfigError when ``current`` changes what a resumed run computes."""
    changed = [key for key in config_differences(stored, config_to_dict(current))
               if key not in RESUMABLE_KEYS]
    if changed:
        raise ConfigError(f'--resume: the config differs from the checkpoint\'s in {changed}; '
                          f'only {sorted(RESUMABLE_KEYS)} may change on resume (or start a new '
                          'out_dir)')
