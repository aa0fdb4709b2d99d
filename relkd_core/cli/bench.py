"""``relkd-bench paper``: the paper's comparison, reproduced on the synthetic world.

    relkd-bench paper --seeds 3 --out bench/results/paper

1. Records three synthetic drives: ``train`` and ``val`` with the nuScenes-like rig from
   different scene seeds (a split by scene), and ``ood`` with the KITTI-like rig.
2. Prepares them with the simulated VLM (``synthetic`` teacher).
3. Trains a contrastive, a similarity and a relational student per seed on ``train``
   (the ``config/train/synth_*.yaml`` configs, ``--steps`` each, one subprocess per run).
4. Evaluates each: zero-shot and the structural gap on ``val``; a 1% linear probe fit on
   ``train`` and scored on ``val``; on ``ood`` a 1% linear probe (labelled scans left out of
   the scoring) and zero-shot.
5. Writes ``paper.json``, ``paper.md`` / ``paper.html`` (mean ± std over seeds, the
   correlation of the gap with each quality figure, the paper's claims and whether our
   figures agree) and the plots.

Everything already done (bags, prepared data, trained students, evaluations) is reused on a
rerun; delete a folder to redo it.

On the paper's own datasets (a GPU machine with the open_clip weights)::

    relkd-bench paper --dataset nuscenes --dataroot /data/nuscenes \
        --ood semantickitti --ood-dataroot /data/semantickitti --gpus 8 --out paper_nuscenes

runs the chain of :mod:`relkd_core.eval.paper_plan` (convert, prepare with open_clip, train
the three losses, evaluate zero-shot and 1%/10% few-shot on nuScenes and 1% few-shot on
SemanticKITTI) and writes the same table; ``--dry-run`` prints every command and its expected
cost instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from relkd_core.atomic import write_text_atomic
from relkd_core.cli.common import EXIT_OK, UsageError, positive_int, run
from relkd_core.errors import RelkdError
from relkd_core.resources import find_named_config

LOSSES = ('contrastive', 'similarity', 'relational')
# (name, rig, scene seed): train and val differ by scene, ood by rig.
SPLITS = (('train', 'nuscenes', 100), ('val', 'nuscenes', 200), ('ood', 'kitti', 300))
PRESETS = {'nuscenes': 'synth-nuscenes', 'kitti': 'synth-kitti'}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='relkd-bench', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='bench', required=True)
    paper = sub.add_parser('paper', help='contrastive vs similarity vs relational distillation')
    paper.add_argument('--out', type=Path, default=Path('bench/results/paper'))
    paper.add_argument('--seeds', type=positive_int, default=3)
    paper.add_argument('--losses', nargs='+', choices=LOSSES, default=list(LOSSES))
    paper.add_argument('--train-frames', type=positive_int, default=20)
    paper.add_argument('--eval-frames', type=positive_int, default=8,
                       help='scans of the val and ood drives')
    paper.add_argument('--steps', type=positive_int, default=300,
                       help='training steps per student (batch 2)')
    paper.add_argument('--label-fraction', type=float, default=0.01)
    paper.add_argument('--threads', type=positive_int, default=None,
                       help="torch CPU threads of training and evaluation (default: torch's); 1 "
                            'keeps the figures steady when other work shares the cores')
    paper.add_argument('--dataset', choices=('synthetic', 'nuscenes'), default='synthetic',
                       help="synthetic (default): the synthetic world; nuscenes: the paper's "
                            'protocols on nuScenes from --dataroot')
    paper.add_argument('--dataroot', type=Path, default=None, help='the nuScenes folder')
    paper.add_argument('--version', default='v1.0-trainval',
                       choices=('v1.0-mini', 'v1.0-trainval'))
    paper.add_argument('--ood', choices=('semantickitti',), default=None,
                       help='out-of-distribution dataset for the few-shot protocols')
    paper.add_argument('--ood-dataroot', type=Path, default=None,
                       help='the SemanticKITTI folder (the one holding sequences/)')
    paper.add_argument('--gpus', type=positive_int, default=1,
                       help='GPUs per training run (torchrun when more than 1)')
    paper.add_argument('--workers', type=positive_int, default=2,
                       help='processes of relkd-convert and relkd-prepare')
    paper.add_argument('--dry-run', action='store_true',
                       help='print every command of the chain and its expected cost; run none')
    paper.add_argument('--verbose', action='store_true')
    return parser


def _record(out: Path, rig: str, seed: int, frames: int) -> Path:
    from relkd_core.cli.synth import main as synth

    bag = out / 'bags' / f'{rig}_seed{seed}'
    if not (bag / 'metadata.yaml').exists():
        bag.parent.mkdir(parents=True, exist_ok=True)
        code = synth(['--out', str(bag), '--rig', rig, '--frames', str(frames), '--seed',
                      str(seed), '--storage', 'mcap', '--image-format', 'jpeg', '--overwrite'])
        if code:
            raise RelkdError(f'recording {bag} failed (exit {code})')
    return bag


def _prepare(out: Path, name: str, bag: Path, rig: str) -> Path:
    from relkd_core.cli.prepare import main as prepare

    prepared = out / 'prepared' / name
    if not (prepared / 'manifest.json').exists():
        code = prepare(['--bag', str(bag), '--preset', PRESETS[rig], '--teacher', 'synthetic',
                        '--out', str(prepared)])
        if code:
            raise RelkdError(f'preparing {prepared} failed (exit {code})')
    return prepared


def _train(out: Path, loss: str, seed: int, train_data: Path, steps: int,
           threads: int | None) -> Path:
    run_dir = out / 'runs' / f'{loss}_seed{seed}'
    student = run_dir / 'student.pt'
    if student.exists():
        return student
    config = yaml.safe_load(find_named_config('train', f'synth_{loss}').read_text())
    config.update(out_dir=str(run_dir), steps=steps, seed=seed,
                  checkpoint_every=max(1, steps // 3))
    config['data'] = {'prepared': str(train_data), 'teacher': 'synthetic'}
    config['optim']['warmup_steps'] = min(config['optim'].get('warmup_steps', 0), steps // 10)
    config_path = out / 'configs' / f'{loss}_seed{seed}.yaml'
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, '-m', 'relkd_core.cli.train', '--config', str(config_path)]
    if (run_dir / 'last.pt').exists():
        command.append('--resume')
    env = dict(os.environ)
    if threads is not None:
        env['OMP_NUM_THREADS'] = str(threads)
    # The log lies beside the run folder: relkd-train claims the folder itself.
    log_path = run_dir.with_name(f'{run_dir.name}.train.log')
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'a', encoding='utf-8') as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False,
                              env=env)
    if done.returncode != 0 or not student.exists():
        tail = log_path.read_text(errors='replace')[-2000:]
        raise RelkdError(f'training {run_dir} failed (exit {done.returncode}):\n{tail}')
    return student


def _evaluate(out: Path, loss: str, seed: int, student: Path, data: dict[str, Path],
              label_fraction: float) -> dict[str, Any]:
    from relkd_core.eval.evaluate import EvalConfig, evaluate
    from relkd_core.eval.fewshot import FewShotConfig

    cached = student.parent / 'paper_eval.json'
    if cached.exists():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result
    fewshot = FewShotConfig(seed=seed)
    zero = evaluate(student, data['val'], EvalConfig(protocol='zero-shot', fewshot=fewshot))
    probe_in = evaluate(student, data['val'], EvalConfig(
        protocol='linear-probe', label_fraction=label_fraction, train_data=data['train'],
        fewshot=fewshot))
    probe_ood = evaluate(student, data['ood'], EvalConfig(
        protocol='linear-probe', label_fraction=label_fraction, fewshot=fewshot))
    zero_ood = evaluate(student, data['ood'], EvalConfig(protocol='zero-shot', fewshot=fewshot))
    gap = zero.metrics['gap']
    result = {'loss': loss, 'seed': seed, 'checkpoint': str(student),
              'zero_shot': zero.metrics['miou'], 'teacher': zero.metrics['teacher_miou'],
              'probe_in': probe_in.metrics['miou'], 'probe_ood': probe_ood.metrics['miou'],
              'zero_shot_ood': zero_ood.metrics['miou'], 'teacher_ood':
              zero_ood.metrics['teacher_miou'], 'cka': gap['cka'], 'gap': gap['relational_gap'],
              'gap_pairs': gap['num_pairs'],
              'labelled_scans': {'in': probe_in.metrics['labelled_scans'],
                                 'ood': probe_ood.metrics['labelled_scans']}}
    write_text_atomic(cached, json.dumps(result, indent=2) + '\n')
    return result


def _write(out: Path, runs: list[dict[str, Any]], settings: dict[str, Any]) -> Path:
    from relkd_core.eval.paper import aggregate, claims, correlations, table_markdown
    from relkd_core.eval.report import gap_scatter, write_html

    table = aggregate(runs)
    corr = correlations(runs)
    verdicts = claims(table, corr)
    labelled = [{**r, 'label': r['loss'], 'gap': {'relational_gap': r['gap']},
                 'miou': r['zero_shot']} for r in runs]
    plots = [gap_scatter(labelled, out / 'gap_vs_zero_shot.png'),
             gap_scatter([{**r, 'miou': r['probe_in']} for r in labelled],
                         out / 'gap_vs_probe.png', y_label='1% linear probe mIoU (%)')]
    payload = {'settings': settings, 'runs': runs, 'table': table, 'gap_pearson': corr,
               'claims': verdicts}
    write_text_atomic(out / 'paper.json', json.dumps(payload, indent=2) + '\n')
    lines = ['# Contrastive vs similarity vs relational distillation (synthetic world)', '',
             f"{settings['seeds']} seeds, {settings['steps']} steps per student, "
             f"{settings['train_frames']} training scans; mIoU in % (mean ± std over seeds); "
             'zero-shot and probe on a validation drive of other scenes; "other rig": the '
             '64-beam KITTI-like rig.', '', table_markdown(table), '',
             'Pearson correlation of the gap with: ' + ', '.join(
                 f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in corr.items()), '',
             '| paper claim | agrees here |', '|---|---|']
    verdict = {None: 'n/a', True: 'yes', False: 'no'}
    lines += [f"| {c['claim']} | {verdict[c['agrees']]} |" for c in verdicts]
    lines += [''] + [f'![{p}]({p})' for p in plots] + ['']
    write_text_atomic(out / 'paper.md', '\n'.join(lines))
    write_html(lines, out / 'paper.html', 'relkd paper comparison')
    return out / 'paper.md'


def _measured_rate(path: Path, key: str) -> float | None:
    """scans/s of run ``key`` in a benchmark result file, if it is there."""
    try:
        rate = json.loads(path.read_text())['runs'][key]['scans_per_s']
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(rate)


def _paper_datasets(args: argparse.Namespace) -> int:
    from relkd_core.eval.paper_plan import collect_run, dataset_plan

    if args.dataroot is None:
        raise UsageError('--dataset nuscenes needs --dataroot (the nuScenes folder)')
    if args.ood is not None and args.ood_dataroot is None:
        raise UsageError('--ood semantickitti needs --ood-dataroot (the SemanticKITTI folder)')
    results = Path('bench/results')
    plan = dataset_plan(
        args.out, nuscenes_root=args.dataroot, version=args.version,
        semantickitti_root=args.ood_dataroot if args.ood else None, losses=args.losses,
        gpus=args.gpus, workers=args.workers,
        convert_rate=_measured_rate(results / 'convert.json', 'nuscenes/workers=2'),
        prepare_rate=_measured_rate(results / 'prepare.json', 'synth-nuscenes/jpeg/workers=2'))
    if args.dry_run:
        for number, step in enumerate(plan, start=1):
            print(f'# {number}. {step.name}: {step.cost}')
            print(step.command())
        print(f'# then the table: relkd-bench paper --dataset nuscenes ... (without --dry-run) '
              f'collects {args.out}/eval into {args.out}/paper.md')
        return EXIT_OK
    started = time.perf_counter()
    for step in plan:
        if step.output.exists():
            print(f'reusing {step.output} ({step.name})')
            continue
        step.output.parent.mkdir(parents=True, exist_ok=True)
        argv = step.expanded()
        if step.output.name == 'student.pt' and (step.output.parent / 'last.pt').exists():
            argv.append('--resume')  # an interrupted training step continues
        if argv[0].startswith('relkd-'):
            argv = [sys.executable, '-m', f'relkd_core.cli.{argv[0][len("relkd-"):]}',
                    *argv[1:]]
        print(f'running {step.name}: {step.command()}', flush=True)
        if subprocess.run(argv, check=False).returncode != 0:
            raise RelkdError(f'{step.name} failed; fix it and rerun (finished steps are kept)')
    runs = [collect_run(args.out, loss) for loss in args.losses]
    settings = {'dataset': 'nuscenes', 'version': args.version, 'ood': args.ood,
                'seeds': 1, 'losses': list(args.losses), 'steps': 87500, 'train_frames': None,
                'gpus': args.gpus, 'seconds': round(time.perf_counter() - started, 1)}
    report = _write(args.out, runs, settings)
    print(report.read_text())
    return EXIT_OK


def _paper(args: argparse.Namespace) -> int:
    if not 0.0 < args.label_fraction <= 1.0:
        raise UsageError(f'--label-fraction must be in (0, 1], got {args.label_fraction}')
    if args.dataset != 'synthetic':
        return _paper_datasets(args)
    if args.dry_run:
        raise UsageError('--dry-run prints the chain of a real dataset: pass --dataset nuscenes')
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data: dict[str, Path] = {}
    for name, rig, seed in SPLITS:
        frames = args.train_frames if name == 'train' else args.eval_frames
        data[name] = _prepare(out, name, _record(out, rig, seed, frames), rig)
    plan = [(loss, seed) for seed in range(args.seeds) for loss in args.losses]
    runs = []
    with tqdm(plan, desc='relkd-bench paper', unit='run', file=sys.stderr) as bar:
        for loss, seed in bar:
            bar.set_postfix(run=f'{loss} seed {seed}')
            student = _train(out, loss, seed, data['train'], args.steps, args.threads)
            runs.append(_evaluate(out, loss, seed, student, data, args.label_fraction))
    settings = {'seeds': args.seeds, 'losses': list(args.losses), 'steps': args.steps,
                'train_frames': args.train_frames, 'eval_frames': args.eval_frames,
                'label_fraction': args.label_fraction, 'threads': args.threads,
                'splits': {name: {'rig': rig, 'scene_seed': seed} for name, rig, seed in SPLITS},
                'seconds': round(time.perf_counter() - started, 1)}
    report = _write(out, runs, settings)
    print(report.read_text())
    print(f'written: {report} (+ paper.html, paper.json); {settings["seconds"]:.0f} s')
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-bench``; returns the exit code."""
    return run(build_parser(), _paper, argv)


if __name__ == '__main__':
    sys.exit(main())
