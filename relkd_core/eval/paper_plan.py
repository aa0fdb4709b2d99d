"""The paper's protocols on its real datasets, as a chain of ``relkd-*`` commands.

:func:`dataset_plan` lists every step from the dataset folders to the table: convert
nuScenes (train and val scenes) and SemanticKITTI (train and val sequences, lidar only) to
bags; prepare nuScenes with the open_clip teacher and SemanticKITTI without one; train one
student per loss with the paper-scale config; evaluate each zero-shot on nuScenes val,
with 1% and 10% linear probes and fine-tuning on nuScenes, with 1% linear probe and
fine-tuning on SemanticKITTI (out of distribution) and zero-shot on SemanticKITTI's 19
classes. :func:`collect_run` turns one student's evaluation reports into the row the
synthetic comparison uses (:mod:`relkd_core.eval.paper`), so both print the same table.

Every step names the output it leaves; a step whose output exists is skipped on a rerun.
"""

from __future__ import annotations

import glob
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ['EVALUATIONS', 'PaperStep', 'collect_run', 'dataset_plan']

#: Scans of each split (facts of the datasets; the cost estimates scale with them).
SCANS = {('nuscenes', 'train'): 28130, ('nuscenes', 'val'): 6019,
         ('semantickitti', 'train'): 19130, ('semantickitti', 'val'): 4071}
PAPER_CONFIG = 'config/train/nuscenes_openclip_relational.yaml'
TEACHER_CONFIG = 'config/teachers/openclip-vit-b-16.yaml'

#: (key, protocol, evaluated data, labelled data, label fraction) of every evaluation; the
#: keys of :mod:`relkd_core.eval.paper`'s table plus the 10% and fine-tuning figures.
EVALUATIONS: tuple[tuple[str, str, str, str | None, float | None], ...] = (
    ('zero_shot', 'zero-shot', 'nuscenes_val', None, None),
    ('probe_in', 'linear-probe', 'nuscenes_val', 'nuscenes_train', 0.01),
    ('probe_in_10', 'linear-probe', 'nuscenes_val', 'nuscenes_train', 0.10),
    ('finetune_in', 'finetune', 'nuscenes_val', 'nuscenes_train', 0.01),
    ('finetune_in_10', 'finetune', 'nuscenes_val', 'nuscenes_train', 0.10),
    ('probe_ood', 'linear-probe', 'semantickitti_val', 'semantickitti_train', 0.01),
    ('finetune_ood', 'finetune', 'semantickitti_val', 'semantickitti_train', 0.01),
    ('zero_shot_ood', 'zero-shot', 'semantickitti_val', None, None),
)


#: An argv item ``BAGS + folder`` stands for ``--bag <bag>`` for every bag in the folder.
BAGS = '@bags:'


@dataclass(frozen=True)
class PaperStep:
    """One command of the chain: ``argv`` (program first), what it leaves at ``output``, and
    its expected cost in words."""

    name: str
    argv: tuple[str, ...]
    output: Path
    cost: str

    def command(self) -> str:
        """The command line for a POSIX shell (bag folders expand to one ``--bag`` each)."""
        parts = []
        for item in self.argv:
            if item.startswith(BAGS):
                folder = shlex.quote(item[len(BAGS):])
                parts.append(f"$(printf -- '--bag %s ' {folder}/*)")
            else:
                parts.append(shlex.quote(item))
        return ' '.join(parts)

    def expanded(self) -> list[str]:
        """``argv`` with every bag folder expanded (for running the step here)."""
        out: list[str] = []
        for item in self.argv:
            if item.startswith(BAGS):
                for bag in sorted(glob.glob(glob.escape(item[len(BAGS):]) + '/*')):
                    out += ['--bag', bag]
            else:
                out.append(item)
        return out


def _rate(scans: int, per_s: float | None, what: str) -> str:
    if per_s is None:
        return f'{scans} scans ({what}: no measured rate)'
    return (f'{scans} scans, about {scans / per_s / 60:.0f} min at the {per_s:g} scans/s '
            f'measured for {what} on 2 CPU cores')


def dataset_plan(out: Path, *, nuscenes_root: Path, version: str = 'v1.0-trainval',
                 semantickitti_root: Path | None = None, losses: Sequence[str] = (
                     'contrastive', 'similarity', 'relational'),
                 gpus: int = 1, workers: int = 2, teacher: str = 'openclip',
                 teacher_config: str = TEACHER_CONFIG,
                 train_config: str = PAPER_CONFIG, steps: int | None = None,
                 convert_rate: float | None = None, prepare_rate: float | None = None
                 ) -> list[PaperStep]:
    """Every step of the paper's protocols on nuScenes (and SemanticKITTI when
    ``semantickitti_root`` is given), in order. Rates (scans/s) fill in the cost of the CPU
    stages; GPU stages state their volume. ``teacher`` is the paper's open_clip teacher (with
    ``teacher_config``); tests run the chain with ``'none'``."""
    steps_out: list[PaperStep] = []
    bags, prepared = out / 'bags', out / 'prepared'
    for split in ('train', 'val'):
        scans = SCANS[('nuscenes', split)]
        steps_out.append(PaperStep(
            f'convert nuScenes {split}',
            ('relkd-convert', 'nuscenes', '--dataroot', str(nuscenes_root), '--version',
             version, '--split', split, '--out', str(bags / f'nuscenes_{split}'),
             '--workers', str(workers)),
            bags / f'nuscenes_{split}',
            _rate(scans, convert_rate, 'relkd-convert nuscenes')
            + ' from cached files (the disk\'s read rate bounds it: 1.7 MB per keyframe)'))
    if semantickitti_root is not None:
        for split in ('train', 'val'):
            steps_out.append(PaperStep(
                f'convert SemanticKITTI {split}',
                ('relkd-convert', 'semantickitti', '--dataroot', str(semantickitti_root),
                 '--split', split, '--no-images', '--out', str(bags / f'semantickitti_{split}'),
                 '--workers', str(workers)),
                bags / f'semantickitti_{split}',
                f'{SCANS[("semantickitti", split)]} scans, lidar and labels only'))
    for split in ('train', 'val'):
        scans = SCANS[('nuscenes', split)]
        steps_out.append(PaperStep(
            f'prepare nuScenes {split} ({teacher} teacher)',
            ('relkd-prepare', BAGS + str(bags / f'nuscenes_{split}'), '--preset',
             'nuscenes-lidarseg', '--teacher', teacher,
             *(('--teacher-config', teacher_config) if teacher != 'none' else ()),
             '--out', str(prepared / f'nuscenes_{split}'), '--workers', str(workers)),
            prepared / f'nuscenes_{split}',
            f'{scans} scans × 6 images through ViT-B/16 on the GPU (teacher time not measured '
            f'here); pairing alone: {_rate(scans, prepare_rate, "relkd-prepare")}'))
    if semantickitti_root is not None:
        for split in ('train', 'val'):
            scans = SCANS[('semantickitti', split)]
            steps_out.append(PaperStep(
                f'prepare SemanticKITTI {split} (no teacher)',
                ('relkd-prepare', BAGS + str(bags / f'semantickitti_{split}'),
                 '--preset', 'semantickitti-lidar', '--out',
                 str(prepared / f'semantickitti_{split}'), '--workers', str(workers)),
                prepared / f'semantickitti_{split}',
                _rate(scans, prepare_rate, 'relkd-prepare')))
    launcher: tuple[str, ...] = (
        ('torchrun', '--nproc_per_node', str(gpus), '-m', 'relkd_core.cli.train') if gpus > 1
        else ('relkd-train',))
    for loss in losses:
        run_dir = out / 'runs' / loss
        overrides = [f'out_dir={run_dir}', f'data.prepared={prepared / "nuscenes_train"}',
                     f'loss.weights={{{loss}: 1.0}}']
        if steps is not None:
            overrides.append(f'steps={steps}')
        steps_out.append(PaperStep(
            f'train {loss}',
            (*launcher, '--config', train_config,
             *(item for o in overrides for item in ('--set', o))),
            run_dir / 'student.pt',
            f'{steps or 87500} steps of batch {2 * gpus} (SLidR\'s schedule: 50 epochs of '
            f'28k scans at batch 16) on {gpus} GPU(s); GPU time not measured here'))
        for key, protocol, data, labelled, fraction in EVALUATIONS:
            if 'semantickitti' in data and semantickitti_root is None:
                continue
            argv = ['relkd-eval', '--checkpoint', str(run_dir / 'student.pt'), '--data',
                    str(prepared / data), '--protocol', protocol, '--out',
                    str(out / 'eval' / loss / key), '--device', 'cuda']
            if labelled is not None and fraction is not None:
                argv += ['--train-data', str(prepared / labelled), '--label-fraction',
                         f'{fraction:g}']
            dataset, part = data.split('_')
            steps_out.append(PaperStep(
                f'evaluate {loss}: {key}', tuple(argv), out / 'eval' / loss / key,
                f'{SCANS[(dataset, part)]} scans scored'
                + (f', {fraction:.0%} of {labelled} labelled' if fraction else '')))
    return steps_out


def collect_run(out: Path, loss: str, seed: int = 0) -> dict[str, Any]:
    """One student's figures from its evaluation reports (``metrics.json`` of each
    :data:`EVALUATIONS` entry; a missing report leaves its figure None), keyed as the
    synthetic comparison's runs."""
    run: dict[str, Any] = {'loss': loss, 'seed': seed}
    for key, _, _, _, _ in EVALUATIONS:
        path = out / 'eval' / loss / key / 'metrics.json'
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        run[key] = metrics.get('miou')
        if key == 'zero_shot':
            run['teacher'] = metrics.get('teacher_miou')
            gap = metrics.get('gap') or {}
            run['cka'], run['gap'] = gap.get('cka'), gap.get('relational_gap')
    return run
