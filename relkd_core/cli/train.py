"""``relkd-train``: distil a 2D teacher into the 3D student.

Examples::

    relkd-train --config config/train/synth_relational.yaml
    relkd-train --config config/train/synth_relational.yaml --set steps=50 --set seed=1
    relkd-train --config config/train/synth_relational.yaml --resume     # continue from last.pt
    torchrun --nproc_per_node 4 $(which relkd-train) \\
        --config config/train/nuscenes_openclip_relational.yaml

The config names a prepared dataset (``data.prepared``) or bags (``data.bags`` + ``preset``),
which are prepared into ``data.cache_dir`` first. Ctrl-C or SIGTERM writes a checkpoint and
exits with 130; ``--resume`` continues from it. A run folder (``out_dir``) that already holds
checkpoints is refused without ``--resume`` (exit 2), and one that another trainer is using is
refused with its pid (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from tqdm import tqdm

from relkd_core.cli.common import EXIT_INTERRUPTED, EXIT_OK, UsageError, run
from relkd_core.config import load_config
from relkd_core.errors import ConfigError
from relkd_core.models.distilled import StudentCheckpoint, TeacherRef, load_checkpoint
from relkd_core.train.config import TrainConfig
from relkd_core.train.distributed import DistContext, init_distributed
from relkd_core.train.run_folder import CHECKPOINTS_NAME, own_run_folder
from relkd_core.train.trainer import (
    LAST_NAME,
    StepReport,
    TextSide,
    Trainer,
    check_resumable,
)

__all__ = ['main']


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-train',
        description='Distil a frozen 2D teacher into the 3D lidar student (contrastive, '
                    'similarity or relational losses); runs under torchrun for DDP.')
    parser.add_argument('--config', type=Path, default=None,
                        help='training config YAML (config/train/*.yaml); optional with '
                             '--resume CKPT, which carries its own')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        dest='overrides', help='override a config key, e.g. --set steps=100 '
                                               '--set loss.weights={relational: 1.0}')
    parser.add_argument('--resume', nargs='?', const='', default=None, metavar='CKPT',
                        help='continue a run: from CKPT, or from <out_dir>/last.pt when no path '
                             'is given')
    parser.add_argument('--verbose', action='store_true')
    return parser


class _StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        self.signal = signum
        print(f'\nrelkd-train: {signal.Signals(signum).name}: finishing the step and writing a '
              'checkpoint (again to abort)', file=sys.stderr)

    def __call__(self) -> bool:
        return self.signal is not None


def _load_config(args: argparse.Namespace) -> tuple[TrainConfig, StudentCheckpoint | None]:
    resume: StudentCheckpoint | None = None
    if args.resume:  # an explicit checkpoint, which may also provide the config
        resume = load_checkpoint(args.resume)
    try:
        if args.config is not None:
            config = load_config(TrainConfig, args.config, args.overrides)
        elif resume is not None:
            from relkd_core.config import config_from_dict

            config = config_from_dict(TrainConfig, resume.run_config,
                                      source=f'{args.resume}:run_config')
            if args.overrides:
                config = _override(config, args.overrides)
        else:
            raise UsageError('--config is required (unless --resume CKPT names a checkpoint)')
    except ConfigError as err:
        raise UsageError(str(err)) from err
    if args.resume == '':
        last = config.out_dir / LAST_NAME
        if not last.exists():
            # A run killed after writing its first step file but before linking last.pt to it:
            # that step file is complete (written atomically), so nothing is lost.
            steps = sorted((config.out_dir / CHECKPOINTS_NAME).glob('step_*.pt'))
            if not steps:
                raise UsageError(f'--resume: {last} does not exist; nothing to resume (start '
                                 'without --resume, or name a checkpoint)')
            last = steps[-1]
            print(f'relkd-train: {LAST_NAME} is missing; resuming from {last}', file=sys.stderr)
        resume = load_checkpoint(last)
    if resume is not None:
        check_resumable(resume.run_config, config)
    return config, resume


def _override(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    import tempfile

    import yaml

    from relkd_core.config import config_to_dict

    with tempfile.NamedTemporaryFile('w', suffix='.yaml') as stream:
        yaml.safe_dump(config_to_dict(config), stream)
        stream.flush()
        return load_config(TrainConfig, stream.name, overrides)


def _dataset(config: TrainConfig, ctx: DistContext, teacher: Any) -> Path:
    """The prepared dataset's folder; bags are prepared first (rank 0 while others wait)."""
    data = config.data
    if data.prepared is not None:
        if not (data.prepared / 'manifest.json').exists():
            raise UsageError(f'data.prepared: {data.prepared} is not a complete prepared '
                             'dataset (no manifest.json); run relkd-prepare first')
        return data.prepared
    cache = data.cache_dir or config.out_dir / 'prepared'
    if ctx.is_main:
        from relkd_core.cli.prepare import format_report
        from relkd_core.data.prepare import PrepareOptions, prepare_dataset
        from relkd_core.data.preset import load_preset
        from relkd_core.data.teacher_adapter import teacher_spec

        assert data.preset is not None  # DataConfig.validate
        preset = load_preset(data.preset)
        spec = teacher_spec(teacher)
        options = PrepareOptions(frames_per_shard=data.frames_per_shard,
                                 superpixels=data.superpixels)
        with tqdm(unit='scan', desc='preparing', disable=None, file=sys.stderr) as bar:
            report = prepare_dataset(data.bags, preset, cache, teacher_factory=lambda: spec,
                                     options=options, progress=bar.update,
                                     on_plan=lambda todo, _done: bar.reset(total=todo))
        print(format_report(report, cache), file=sys.stderr)
    ctx.barrier()
    return cache


def _text_side(config: TrainConfig, teacher: Any) -> TextSide:
    from relkd_core.resources import find_named_config
    from relkd_core.teachers import load_vocabulary

    vocabulary = load_vocabulary(find_named_config('vocabularies', config.vocabulary))
    embeddings = torch.as_tensor(teacher.text_features(vocabulary), dtype=torch.float32)
    return TextSide(vocabulary, embeddings)


def _train(args: argparse.Namespace) -> int:
    config, resume = _load_config(args)
    # Rank 0 writes the run folder, so it alone claims and locks it, before any work.
    owner = (own_run_folder(config, resuming=resume is not None)
             if int(os.environ.get('RANK', '0')) == 0 else contextlib.nullcontext())
    with owner:
        return _run(config, resume)


def _run(config: TrainConfig, resume: StudentCheckpoint | None) -> int:
    ctx = init_distributed(config.device)
    try:
        from relkd_core.teachers import build_teacher

        # Every rank builds the frozen teacher: its id guards against distilling into the
        # wrong space, and its text side fills the checkpoints (rank 0 writes them).
        teacher = build_teacher(config.data.teacher, config.data.teacher_config)
        root = _dataset(config, ctx, teacher)
        text = _text_side(config, teacher) if ctx.is_main else None
        data = config.data
        ref = TeacherRef(name=data.teacher, id=teacher.teacher_id,
                         config=str(data.teacher_config) if data.teacher_config else None)
        trainer = Trainer(config, ctx, root, ref, text, resume)
        del teacher
        if ctx.is_main:
            print(f'relkd-train: {len(trainer.frames)} frames, {trainer.steps_per_epoch} '
                  f'steps/epoch on {ctx.world_size} process(es), device {ctx.device}, '
                  f'teacher {trainer.teacher_id} ({trainer.teacher_dim}-d), losses '
                  f'{config.loss.weights}; writing to {config.out_dir}', file=sys.stderr)
        with _StopFlag() as stop, tqdm(total=config.steps, initial=trainer.step, unit='step',
                                       desc='relkd-train', disable=None if ctx.is_main else True,
                                       file=sys.stderr) as bar:

            def on_step(report: StepReport) -> None:
                bar.update(1)
                shown = {k: f'{v:.3g}' for k, v in report.parts.items() if '/' not in k}
                bar.set_postfix(loss=f'{report.loss:.4f}', **shown,
                                scans_s=f'{report.scans_per_s:.2f}', refresh=False)

            result = trainer.run(on_step, stop)
        if ctx.is_main:
            if result.interrupted:
                print(f'relkd-train: stopped at step {result.steps_done}; checkpoint '
                      f'{result.last_checkpoint}; continue with --resume', file=sys.stderr)
            else:
                print(f'relkd-train: done, {result.steps_done} steps; student '
                      f'{result.final_checkpoint}', file=sys.stderr)
        return EXIT_INTERRUPTED if result.interrupted else EXIT_OK
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-train``; returns the exit code."""
    return run(build_parser(), _train, argv)


if __name__ == '__main__':
    sys.exit(main())
