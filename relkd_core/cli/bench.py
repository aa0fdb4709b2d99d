"""``relkd-bench paper``: the paper's comparison, reproduced on the synthetic world.

    relkd-bench paper --seeds 3 --out bench/results/paper

1. Records three synthetic drives: ``train`` and ``val`` with the nuScenes-like rig from
   different scene seeds (a split by scene), and ``ood`` with the KITTI-like rig.
2. Prepares them with the simulated VLM (``synthetic`` teacher).
3. Trains a contrastive, a similarity and a relational student per seed on ``train``
   (the ``config/train/synth_*.yaml`` configs, ``--steps`` each, one subprocess per run,
   ``--jobs`` of them at once while this process evaluates the finished ones).
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
from concurrent.futures import Future, ThreadPoolExecutor
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
#: Teachers of the sensitivity study: name -> (teacher, shipped config name or None).
STUDY_TEACHERS: dict[str, tuple[str, str | None]] = {
    'synthetic': ('synthetic', None),
    'synthetic-orthogonal-gap': ('synthetic', 'synthetic-orthogonal-gap'),
    'synthetic-no-gap': ('synthetic', 'synthetic-no-gap'),
    'learned': ('learned', None),
}


def _seed_list(text: str) -> list[int]:
    return [int(t) for t in text.split(',') if t.strip()]


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
    paper.add_argument('--teachers', default='synthetic',
                       help='comma-separated teachers of the study: ' + ', '.join(
                           STUDY_TEACHERS) + ' (default: synthetic)')
    paper.add_argument('--curve-steps', default='150,300,600,1200',
                       help="learning curves: training lengths, evaluated on snapshots of one "
                            "run of the longest per loss ('none': no curves)")
    paper.add_argument('--curve-teacher', default=None,
                       help='teacher of the learning curves (default: the first of --teachers)')
    paper.add_argument('--only-seeds', default=None,
                       help='comma-separated seeds this process trains (another process may '
                            'run the others; the report takes every run on disk)')
    paper.add_argument('--curves-only', action='store_true',
                       help='run only the learning curves (then the report)')
    paper.add_argument('--no-curves', action='store_true',
                       help='skip the learning curves in this process')
    paper.add_argument('--snapshots-on-disk', action='store_true',
                       help='train nothing: evaluate the learning-curve checkpoints already '
                            'written (of runs still training or cut short), then the report')
    paper.add_argument('--import-runs', type=Path, default=None,
                       help='paper.json of an earlier synthetic-teacher comparison (one teacher, '
                            'same steps, frames and label fraction): its runs are taken as the '
                            "'synthetic' teacher's runs instead of retraining them")
    paper.add_argument('--at-step', type=positive_int, default=None,
                       help='evaluate the step-N checkpoint of each run instead of training it '
                            '(a snapshot of a run cut short; cached as paper_eval_stepN.json)')
    paper.add_argument('--snapshot-steps', type=_seed_list, default=[],
                       help='comma-separated steps: a run without a final evaluation is '
                            'reported from its snapshot at the first of these evaluated')
    paper.add_argument('--report-only', action='store_true',
                       help='train and evaluate nothing: write the report from what is on disk')
    paper.add_argument('--threads', type=positive_int, default=None,
                       help="torch CPU threads of training and evaluation (default: torch's); 1 "
                            'keeps the figures steady when other work shares the cores')
    paper.add_argument('--jobs', type=positive_int, default=1,
                       help='training runs at once (each its own process); this process '
                            'evaluates the finished ones meanwhile')
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
    learned = sub.add_parser(
        'learned-teacher', help='train the learned 2D teacher (bit-for-bit from --seed) and '
        'score it zero-shot on a held-out drive')
    learned.add_argument('--out', type=Path, default=Path('config/teachers/learned.pt'),
                         help='weights file to write (default: the shipped one)')
    learned.add_argument('--results', type=Path,
                         default=Path('bench/results/learned_teacher.json'),
                         help='where the held-out zero-shot scores go')
    learned.add_argument('--seed', type=int, default=0)
    learned.add_argument('--steps', type=positive_int, default=None,
                         help='training steps (default: LearnedTrainConfig.steps)')
    learned.add_argument('--held-out-frames', type=positive_int, default=8)
    learned.add_argument('--widths', default=None,
                         help='comma-separated stage widths (default: LearnedTrainConfig)')
    learned.add_argument('--input-downsample', type=positive_int, default=None)
    learned.add_argument('--sweep-every', type=positive_int, default=None,
                         help='also score the weights every N steps on the held-out drive '
                              '(the record of how training length sets the quality) and write '
                              'them beside --out as <name>.step<N>.pt, the same bytes as a run '
                              'of --steps N')
    learned.add_argument('--verbose', action='store_true')
    return parser


def _learned_teacher(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np
    import torch

    from relkd_core.teachers import TeacherImage
    from relkd_core.teachers.evaluate import zero_shot_pixels
    from relkd_core.teachers.learned import (
        LearnedTeacher,
        LearnedTeacherConfig,
        parameter_count,
        save_weights,
    )
    from relkd_core.teachers.learned_train import (
        HELD_OUT_SEED,
        LearnedTrainConfig,
        concept_embeddings,
        render_images,
        train_learned_teacher,
        training_record,
    )
    from relkd_core.teachers.minilm import SentenceEncoder
    from relkd_core.teachers.vocabulary import Vocabulary

    config = LearnedTrainConfig(seed=args.seed)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if args.widths is not None:
        config = dataclasses.replace(config, widths=tuple(
            int(w) for w in args.widths.split(',')))
    if args.input_downsample is not None:
        config = dataclasses.replace(config, input_downsample=args.input_downsample)
    encoder = SentenceEncoder()
    images = [TeacherImage(rgb=rgb, camera='held-out', t_ns=i, semantic=semantic)
              for i, (rgb, semantic) in enumerate(render_images(
                  config.rig, HELD_OUT_SEED, args.held_out_frames, config.frame_stride))]
    vocabulary = Vocabulary.default()
    text = np.stack([teacher_row for teacher_row in concept_embeddings(encoder)[1:]])
    sweep: list[dict[str, Any]] = []
    from relkd_core.sim.rig import RIGS

    num_images = len(config.drive_seeds) * config.frames_per_drive * len(
        RIGS[config.rig].cameras)

    def held_out_miou(model: Any) -> float | None:
        # The teacher's zero-shot on the held-out pixels with the weights as they are now.
        import torch as _torch

        from relkd_core.metrics import confusion_matrix
        from relkd_core.teachers.base import FeatureGrid
        from relkd_core.teachers.evaluate import ZeroShotResult, predict_grid_labels

        model.eval()
        confusion = np.zeros((17, 17), np.int64)
        with _torch.no_grad():
            for image in images:
                grid = model(_torch.from_numpy(image.rgb).permute(2, 0, 1)[None].float())[0]
                features = grid.permute(1, 2, 0).numpy()
                labels = predict_grid_labels(FeatureGrid(features, image.size_px), text,
                                             vocabulary)
                assert image.semantic is not None
                confusion += confusion_matrix(image.semantic, labels)
        model.train()
        miou = ZeroShotResult.from_confusion(confusion).miou
        return None if np.isnan(miou) else round(100 * miou, 2)

    started = time.perf_counter()
    with tqdm(total=config.steps, desc='learned teacher', unit='step', file=sys.stderr) as bar:
        def tick(step: int, loss: float, model: Any) -> None:
            bar.update()
            bar.set_postfix(loss=f'{loss:.3f}')
            if args.sweep_every and step % args.sweep_every == 0:
                snapshot = args.out.with_name(f'{args.out.stem}.step{step}{args.out.suffix}')
                save_weights(snapshot, model, training_record(
                    dataclasses.replace(config, steps=step), loss, num_images, encoder))
                sweep.append({'steps': step, 'loss': round(loss, 4), 'weights': str(snapshot),
                              'held_out_miou_pct': held_out_miou(model)})
                tqdm.write(f'step {step}: held-out mIoU {sweep[-1]["held_out_miou_pct"]}%',
                           file=sys.stderr)

        model, record = train_learned_teacher(config, encoder, tick)
    seconds = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(args.out, model, record)
    teacher = LearnedTeacher(LearnedTeacherConfig(weights=str(args.out)), encoder)
    scores = zero_shot_pixels(teacher, vocabulary, images).to_dict()
    results = {'teacher_id': teacher.teacher_id, 'weights': str(args.out),
               'weights_bytes': args.out.stat().st_size,
               'parameters': parameter_count(model), 'training': record,
               'train_seconds': round(seconds, 1), 'torch': torch.__version__,
               'held_out': {'rig': config.rig, 'scene_seed': HELD_OUT_SEED,
                            'frames': args.held_out_frames, 'frame_stride': config.frame_stride,
                            'vocabulary': 'default (nuScenes 16)',
                            'teacher_pixels': scores},
               'length_sweep': sweep,
               'command': 'relkd-bench learned-teacher ' + ' '.join(sys.argv[2:])}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.results, json.dumps(results, indent=2) + '\n')
    print(f"learned teacher {teacher.teacher_id}: {results['parameters']} parameters, "
          f"{results['weights_bytes']} bytes, trained in {seconds:.0f} s; held-out 2D "
          f"zero-shot mIoU {scores['miou_pct']}% (pixels of drive {HELD_OUT_SEED})")
    for name, iou in scores['per_class_iou_pct'].items():
        print(f'  {name:22s} {iou}')
    return EXIT_OK


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


def _teacher_config(teacher: str) -> Path | None:
    config = STUDY_TEACHERS[teacher][1]
    return None if config is None else find_named_config('teachers', config)


def _prepare(out: Path, teacher: str, name: str, bag: Path, rig: str) -> Path:
    from relkd_core.cli.prepare import main as prepare

    prepared = out / 'prepared' / teacher / name
    if not (prepared / 'manifest.json').exists():
        config = _teacher_config(teacher)
        argv = ['--bag', str(bag), '--preset', PRESETS[rig], '--teacher',
                STUDY_TEACHERS[teacher][0], '--out', str(prepared)]
        if config is not None:
            argv += ['--teacher-config', str(config)]
        prepared.parent.mkdir(parents=True, exist_ok=True)
        code = prepare(argv)
        if code:
            raise RelkdError(f'preparing {prepared} failed (exit {code})')
    return prepared


def _train(run_dir: Path, teacher: str, loss: str, seed: int, train_data: Path, steps: int,
           threads: int | None, checkpoint_every: int | None = None) -> Path:
    student = run_dir / 'student.pt'
    if student.exists():
        return student
    config = yaml.safe_load(find_named_config('train', f'synth_{loss}').read_text())
    every = checkpoint_every or max(1, steps // 3)
    # A learning-curve run (checkpoint_every given) keeps every checkpoint: its snapshots are
    # the curve, and each stop (SIGTERM, then --resume) writes one more that must not push the
    # oldest snapshot out.
    config.update(out_dir=str(run_dir), steps=steps, seed=seed, checkpoint_every=every,
                  keep_checkpoints=max(3, steps // every) if checkpoint_every is None else steps)
    teacher_config = _teacher_config(teacher)
    config['data'] = {'prepared': str(train_data), 'teacher': STUDY_TEACHERS[teacher][0]}
    if teacher_config is not None:
        config['data']['teacher_config'] = str(teacher_config)
    config['optim']['warmup_steps'] = min(config['optim'].get('warmup_steps', 0), steps // 10)
    config_path = run_dir.parent / f'{run_dir.name}.config.yaml'
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


def _scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-class part of an evaluation: IoU and predicted-class counts."""
    return {'per_class_iou': metrics.get('per_class_iou'),
            'predicted_points': metrics.get('predicted_points')}


def _evaluate(run_dir: Path, teacher: str, loss: str, seed: int, data: dict[str, Path],
              label_fraction: float, at_step: int | None = None) -> dict[str, Any]:
    """The four evaluations of a run's student (``at_step``: of its step checkpoint
    instead, cached separately)."""
    from relkd_core.eval.evaluate import EvalConfig, evaluate
    from relkd_core.eval.fewshot import FewShotConfig

    cached = run_dir / _eval_name(at_step)
    if cached.exists():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result
    started = time.perf_counter()
    student = run_dir / 'student.pt' if at_step is None else _snapshot_path(run_dir, at_step)
    if not student.exists():
        raise RelkdError(f'{student} is missing (a run keeps its last three step checkpoints)')
    fewshot = FewShotConfig(seed=seed)
    zero = evaluate(student, data['val'], EvalConfig(protocol='zero-shot', fewshot=fewshot))
    probe_in = evaluate(student, data['val'], EvalConfig(
        protocol='linear-probe', label_fraction=label_fraction, train_data=data['train'],
        fewshot=fewshot))
    probe_ood = evaluate(student, data['ood'], EvalConfig(
        protocol='linear-probe', label_fraction=label_fraction, fewshot=fewshot))
    zero_ood = evaluate(student, data['ood'], EvalConfig(protocol='zero-shot', fewshot=fewshot))
    gap = zero.metrics['gap']
    result = {'teacher_setup': teacher, 'loss': loss, 'seed': seed, 'checkpoint': str(student),
              'zero_shot': zero.metrics['miou'], 'teacher': zero.metrics['teacher_miou'],
              'probe_in': probe_in.metrics['miou'], 'probe_ood': probe_ood.metrics['miou'],
              'zero_shot_ood': zero_ood.metrics['miou'], 'teacher_ood':
              zero_ood.metrics['teacher_miou'], 'cka': gap['cka'], 'gap': gap['relational_gap'],
              'gap_pairs': gap['num_pairs'],
              'labelled_scans': {'in': probe_in.metrics['labelled_scans'],
                                 'ood': probe_ood.metrics['labelled_scans']},
              'per_class': {'zero_shot': _scores(zero.metrics),
                            'visible': _scores(zero.metrics['visible']),
                            'teacher_visible': _scores(zero.metrics.get('teacher_visible') or {}),
                            'probe_in': _scores(probe_in.metrics),
                            'probe_ood': _scores(probe_ood.metrics),
                            'zero_shot_ood': _scores(zero_ood.metrics)},
              'eval_seconds': round(time.perf_counter() - started, 1)}
    if at_step is not None:
        result['step'] = at_step
    write_text_atomic(cached, json.dumps(result, indent=2) + '\n')
    return result


def _eval_name(at_step: int | None) -> str:
    return 'paper_eval.json' if at_step is None else f'paper_eval_step{at_step}.json'


def _snapshot_path(run_dir: Path, step: int) -> Path:
    return run_dir / 'checkpoints' / f'step_{step:07d}.pt'


def _evaluate_snapshot(run_dir: Path, teacher: str, loss: str, step: int,
                       data: dict[str, Path], label_fraction: float) -> dict[str, Any]:
    """Zero-shot and 1% probe (in distribution) of the step-``step`` checkpoint of a
    learning-curve run."""
    from relkd_core.eval.evaluate import EvalConfig, evaluate
    from relkd_core.eval.fewshot import FewShotConfig

    cached = run_dir / f'curve_eval_step{step}.json'
    if cached.exists():
        result: dict[str, Any] = json.loads(cached.read_text())
        return result
    snapshot = _snapshot_path(run_dir, step)
    if not snapshot.exists():
        raise RelkdError(f'{snapshot} is missing: the learning-curve run keeps every '
                         'checkpoint; delete {run_dir} to retrain it')
    fewshot = FewShotConfig(seed=0)
    zero = evaluate(snapshot, data['val'], EvalConfig(protocol='zero-shot', fewshot=fewshot))
    probe_in = evaluate(snapshot, data['val'], EvalConfig(
        protocol='linear-probe', label_fraction=label_fraction, train_data=data['train'],
        fewshot=fewshot))
    result = {'teacher_setup': teacher, 'loss': loss, 'seed': 0, 'step': step,
              'zero_shot': zero.metrics['miou'], 'probe_in': probe_in.metrics['miou'],
              'cka': zero.metrics['gap']['cka'], 'gap': zero.metrics['gap']['relational_gap'],
              'per_class': {'zero_shot': _scores(zero.metrics),
                            'probe_in': _scores(probe_in.metrics)}}
    write_text_atomic(cached, json.dumps(result, indent=2) + '\n')
    return result


def _teacher_figures(out: Path, teacher: str, data: dict[str, Path],
                     drives: dict[str, tuple[str, int, int]]) -> dict[str, Any]:
    """The three named teacher figures on the val and ood drives (cached per teacher)."""
    from relkd_core.data.prepared import PreparedDataset
    from relkd_core.eval.teacher_scores import teacher_pixels, teacher_projected, teacher_visible
    from relkd_core.sim.drive import SyntheticDrive
    from relkd_core.sim.rig import RIGS
    from relkd_core.teachers import TeacherImage, Vocabulary, build_teacher

    cached = out / 'prepared' / teacher / 'teacher_figures.json'
    if cached.exists():
        loaded: dict[str, Any] = json.loads(cached.read_text())
        return loaded
    name, config = STUDY_TEACHERS[teacher][0], _teacher_config(teacher)
    built = build_teacher(name, config)  # type: ignore[arg-type]
    vocabulary = Vocabulary.default()
    text = built.text_features(vocabulary)
    figures: dict[str, Any] = {'teacher_id': built.teacher_id}
    for split in ('val', 'ood'):
        rig, seed, frames = drives[split]
        drive = SyntheticDrive(RIGS[rig], frames, seed)
        images = [TeacherImage(rgb=s.images.rgb, camera=s.camera.name, t_ns=s.t_ns,
                               semantic=s.images.semantic, instance=s.images.instance)
                  for i in range(frames) for s in drive.frame(i).shots]
        dataset = PreparedDataset(data[split], features=True)
        figures[split] = {
            'teacher_pixels': teacher_pixels(built, vocabulary, images).to_dict(),
            'teacher_projected': teacher_projected(dataset, text, vocabulary).to_dict(),
            'teacher_visible': teacher_visible(dataset, text, vocabulary).to_dict()}
    write_text_atomic(cached, json.dumps(figures, indent=2) + '\n')
    return figures


def _write(out: Path, runs: list[dict[str, Any]], settings: dict[str, Any],
           curves: list[dict[str, Any]] | None = None,
           teacher_figures: dict[str, Any] | None = None) -> Path:
    from relkd_core.eval.paper import write_study

    return write_study(out, runs, settings, curves or [], teacher_figures or {})


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


def _import_runs(out: Path, path: Path, args: argparse.Namespace) -> str:
    """Write the runs of an earlier comparison's ``paper.json`` as the cached evaluations of
    the ``synthetic`` teacher's runs; returns the note the report prints."""
    try:
        previous = json.loads(path.read_text())
        settings, runs = previous['settings'], previous['runs']
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f'--import-runs {path}: not a paper.json of relkd-bench paper') from err
    if 'teachers' in settings:
        raise UsageError(f'--import-runs {path}: a study of several teachers; import only the '
                         'one-teacher comparison of the synthetic teacher')
    wanted = {'steps': args.steps, 'train_frames': args.train_frames,
              'eval_frames': args.eval_frames, 'label_fraction': args.label_fraction}
    differs = {k: (settings.get(k), v) for k, v in wanted.items() if settings.get(k) != v}
    if differs:
        raise UsageError(f'--import-runs {path}: settings differ (theirs, ours): {differs}')
    for earlier in runs:
        run_dir = out / 'runs' / 'synthetic' / f"{earlier['loss']}_seed{earlier['seed']}"
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / 'paper_eval.json', json.dumps(
            {**earlier, 'teacher_setup': 'synthetic', 'imported_from': str(path)}, indent=2) + '\n')
    return f'{len(runs)} synthetic-teacher runs from {path}'


def _paper(args: argparse.Namespace) -> int:
    if not 0.0 < args.label_fraction <= 1.0:
        raise UsageError(f'--label-fraction must be in (0, 1], got {args.label_fraction}')
    if args.dataset != 'synthetic':
        return _paper_datasets(args)
    if args.dry_run:
        raise UsageError('--dry-run prints the chain of a real dataset: pass --dataset nuscenes')
    teachers = [t.strip() for t in args.teachers.split(',') if t.strip()]
    unknown = [t for t in teachers if t not in STUDY_TEACHERS]
    if not teachers or unknown:
        raise UsageError(f'--teachers: unknown {unknown}; expected names from '
                         f'{sorted(STUDY_TEACHERS)}, comma-separated')
    curve_steps = [] if args.curve_steps in ('', 'none') else sorted(
        {int(v) for v in args.curve_steps.split(',')})
    if curve_steps and any(s <= 0 or s % curve_steps[0] for s in curve_steps):
        raise UsageError(f'--curve-steps: positive multiples of the smallest, got '
                         f'{args.curve_steps}')
    curve_teacher = args.curve_teacher or teachers[0]
    if curve_steps and curve_teacher not in STUDY_TEACHERS:
        raise UsageError(f'--curve-teacher: unknown {curve_teacher!r}')
    run_seeds = set(range(args.seeds)) if args.only_seeds is None else set(
        _seed_list(args.only_seeds))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.import_runs is not None:
        _import_runs(out, args.import_runs, args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    drives: dict[str, tuple[str, int, int]] = {}
    bags: dict[str, Path] = {}
    for name, rig, seed in SPLITS:
        frames = args.train_frames if name == 'train' else args.eval_frames
        drives[name] = (rig, seed, frames)
        bags[name] = _record(out, rig, seed, frames)
    data: dict[str, dict[str, Path]] = {}
    work = [] if args.report_only or args.snapshots_on_disk else [
        (teacher, loss, seed) for teacher in teachers for seed in range(args.seeds)
        if seed in run_seeds and not args.curves_only for loss in args.losses]
    curve_work = [] if args.report_only or not curve_steps or args.no_curves else [
        (curve_teacher, loss) for loss in args.losses]
    needed = {t for t, _, _ in work} | {t for t, _ in curve_work} | set(teachers)
    for teacher in sorted(needed):
        data[teacher] = {name: _prepare(out, teacher, name, bags[name], drives[name][0])
                         for name in bags}
    # Training runs go to --jobs processes at once (started in study order); this process
    # evaluates each run, in the same order, as soon as its training is done.
    with tqdm(total=len(work) + len(curve_work), desc='relkd-bench paper', unit='run',
              file=sys.stderr) as bar, ThreadPoolExecutor(max_workers=args.jobs) as pool:
        grid = [(teacher, loss, seed, out / 'runs' / teacher / f'{loss}_seed{seed}')
                for teacher, loss, seed in work]
        curve_runs = [(teacher, loss, out / 'runs' / teacher / f'curve_{loss}')
                      for teacher, loss in curve_work]
        trained: dict[Path, Future[Path]] = {}
        for teacher, loss, seed, run_dir in grid:
            if args.at_step is None and not (run_dir / 'paper_eval.json').exists():
                trained[run_dir] = pool.submit(_train, run_dir, teacher, loss, seed,
                                               data[teacher]['train'], args.steps, args.threads)
        if not args.snapshots_on_disk:
            for teacher, loss, run_dir in curve_runs:
                trained[run_dir] = pool.submit(_train, run_dir, teacher, loss, 0,
                                               data[teacher]['train'], curve_steps[-1],
                                               args.threads, checkpoint_every=curve_steps[0])
        try:
            for teacher, loss, seed, run_dir in grid:
                bar.set_postfix(run=f'{teacher} {loss} seed {seed}')
                if args.at_step is not None:  # a snapshot of a run trained (or training) already
                    _evaluate(run_dir, teacher, loss, seed, data[teacher], args.label_fraction,
                              args.at_step)
                elif run_dir in trained:
                    trained[run_dir].result()
                    _evaluate(run_dir, teacher, loss, seed, data[teacher], args.label_fraction)
                bar.update()
            for teacher, loss, run_dir in curve_runs:
                bar.set_postfix(run=f'{teacher} {loss} learning curve')
                if run_dir in trained:
                    trained[run_dir].result()
                for step in curve_steps:
                    if args.snapshots_on_disk and not _snapshot_path(run_dir, step).exists():
                        continue  # not trained that far yet: reported as missing
                    _evaluate_snapshot(run_dir, teacher, loss, step, data[teacher],
                                       args.label_fraction)
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the runs not started yet; those started finish
            raise
    # The report: every run of the asked teachers and seeds found on disk (a run done by
    # another process of the same study counts; a missing one is listed).
    runs, missing = [], []
    for teacher in teachers:
        for seed in range(args.seeds):
            for loss in args.losses:
                run_dir = out / 'runs' / teacher / f'{loss}_seed{seed}'
                cached = run_dir / 'paper_eval.json'
                snapshots = [run_dir / _eval_name(step) for step in args.snapshot_steps]
                found = [p for p in (cached, *snapshots) if p.exists()]
                if found:
                    runs.append({'teacher_setup': teacher, **json.loads(found[0].read_text())})
                else:
                    missing.append(f'{teacher} {loss} seed {seed}')
    curves = []
    if curve_steps:
        for loss in args.losses:
            for step in curve_steps:
                cached = out / 'runs' / curve_teacher / f'curve_{loss}' / \
                    f'curve_eval_step{step}.json'
                if cached.exists():
                    curves.append(json.loads(cached.read_text()))
                else:
                    missing.append(f'{curve_teacher} {loss} learning curve step {step}')
    figures = {teacher: _teacher_figures(out, teacher, data[teacher], drives)
               for teacher in teachers if teacher in data}
    settings = {'teachers': teachers, 'seeds': args.seeds, 'losses': list(args.losses),
                'steps': args.steps, 'train_frames': args.train_frames,
                'eval_frames': args.eval_frames, 'label_fraction': args.label_fraction,
                'threads': args.threads, 'curve_teacher': curve_teacher if curve_steps else None,
                'curve_steps': curve_steps,
                'splits': {name: {'rig': rig, 'scene_seed': seed} for name, rig, seed in SPLITS},
                'teacher_configs': {t: STUDY_TEACHERS[t][1] for t in teachers},
                'missing': missing,
                'imported': sorted({str(r['imported_from']) for r in runs
                                    if r.get('imported_from')}),
                'seconds_this_process': round(time.perf_counter() - started, 1)}
    report = _write(out, runs, settings, curves, figures)
    print(report.read_text())
    print(f'written: {report} (+ paper.html, paper.json); '
          f'{settings["seconds_this_process"]:.0f} s')
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-bench``; returns the exit code."""
    def body(args: argparse.Namespace) -> int:
        return _learned_teacher(args) if args.bench == 'learned-teacher' else _paper(args)

    return run(build_parser(), body, argv)


if __name__ == '__main__':
    sys.exit(main())
