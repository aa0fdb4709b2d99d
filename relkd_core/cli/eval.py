"""``relkd-eval``: score distilled students on a prepared dataset and write a report.

    relkd-eval --checkpoint RUN/student.pt --data PREPARED --protocol zero-shot --out DIR
    relkd-eval --checkpoint A.pt B.pt C.pt --data PREPARED --protocol gap --out DIR

Protocols: zero-shot, linear-probe, finetune, gap (see :mod:`relkd_core.eval.evaluate`).
DIR receives metrics.json, report.md, report.html and the plots. With several checkpoints the
same protocol runs on each and the report adds the structural gap against mIoU. DIR is checked
before any work: it must be new (or empty), or a report of relkd-eval with ``--overwrite``; the
report appears only when complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from relkd_core.atomic import make_staging_dir
from relkd_core.cli.common import EXIT_OK, UsageError, positive_int, run
from relkd_core.errors import ConfigError
from relkd_core.eval.evaluate import (
    PROTOCOLS,
    EvalConfig,
    EvalResult,
    dataset_taxonomy,
    evaluate,
)
from relkd_core.eval.fewshot import FewShotConfig
from relkd_core.eval.report import REPORT_KIND, is_eval_report, write_report
from relkd_core.outputs import claim_output, mark_output, replace_output
from relkd_core.taxonomy import NUSCENES16, Taxonomy
from relkd_core.teachers.vocabulary import Vocabulary


def parse_vocabulary(text: str | None, taxonomy: Taxonomy = NUSCENES16) -> Vocabulary | None:
    """``None``; a vocabulary name (config/vocabularies) or YAML path; or comma-separated class
    names (``car,truck,driveable_surface``). Class names of ``taxonomy`` (the data's) get its
    labels."""
    if text is None:
        return None
    from relkd_core.resources import find_named_config
    from relkd_core.teachers.vocabulary import load_vocabulary

    if ',' in text:
        return Vocabulary.from_names([n.strip() for n in text.split(',') if n.strip()],
                                     taxonomy)
    return load_vocabulary(find_named_config('vocabularies', text), taxonomy)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number such as 0.01, got {text!r}') from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be in (0, 1] (0.01 = 1%), got {value}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-eval',
        description='Evaluate distilled lidar students: zero-shot, linear probe, fine-tuning '
                    'with k%% of labelled scans, structural gap.')
    parser.add_argument('--checkpoint', nargs='+', required=True, type=Path,
                        help='student checkpoint(s) written by relkd-train (student.pt)')
    parser.add_argument('--data', required=True, type=Path,
                        help='prepared dataset to evaluate on (relkd-prepare output)')
    parser.add_argument('--protocol', required=True, choices=PROTOCOLS)
    parser.add_argument('--out', required=True, type=Path, help='report folder')
    parser.add_argument('--label-fraction', type=_fraction, default=0.01,
                        help='share of labelled scans for linear-probe/finetune (default 0.01)')
    parser.add_argument('--train-data', type=Path, default=None,
                        help='prepared dataset the labelled scans come from (default: --data, '
                             'leaving the labelled scans out of the evaluation)')
    parser.add_argument('--vocabulary', default=None,
                        help='closed-set vocabulary for zero-shot: a name in config/vocabularies,'
                             ' a YAML file, or comma-separated taxonomy names (default: the '
                             "checkpoint's own)")
    parser.add_argument('--max-gap-pairs', type=positive_int, default=4096,
                        help='pairs sampled for the structural gap (default 4096)')
    parser.add_argument('--probe-epochs', type=positive_int, default=FewShotConfig.probe_epochs)
    parser.add_argument('--finetune-steps', type=positive_int,
                        default=FewShotConfig.finetune_steps)
    parser.add_argument('--seed', type=int, default=0,
                        help='seeds the labelled-scan selection and the few-shot training')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it is a report relkd-eval wrote (only once the '
                             'new report is complete; nothing else is ever replaced)')
    parser.add_argument('--verbose', action='store_true')
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    for path in args.checkpoint:
        if not path.is_file():
            raise UsageError(f'--checkpoint {path}: no such file')
    if args.max_gap_pairs < 2:
        raise UsageError('--max-gap-pairs must be at least 2')
    for flag, path in (('--data', args.data), ('--train-data', args.train_data)):
        if path is not None and not path.is_dir():
            raise UsageError(f'{flag} {path}: no such prepared dataset folder')
    inputs = [*args.checkpoint, args.data, *([args.train_data] if args.train_data else [])]
    if args.vocabulary is not None and Path(args.vocabulary).is_file():
        inputs.append(Path(args.vocabulary))
    claim_output(args.out, kind=REPORT_KIND, overwrite=args.overwrite, inputs=inputs,
                 recognise=is_eval_report)
    try:
        vocabulary = parse_vocabulary(args.vocabulary, dataset_taxonomy(args.data))
    except ConfigError as err:
        raise UsageError(f'--vocabulary: {err}') from err
    config = EvalConfig(protocol=args.protocol, label_fraction=args.label_fraction,
                        vocabulary=vocabulary,
                        train_data=args.train_data, max_gap_pairs=args.max_gap_pairs,
                        fewshot=FewShotConfig(probe_epochs=args.probe_epochs,
                                              finetune_steps=args.finetune_steps, seed=args.seed),
                        device=args.device)
    results: list[EvalResult] = []
    for path in args.checkpoint:
        bars: dict[str, tqdm] = {}

        def progress(what: str, done: int, total: int, bars: dict[str, tqdm] = bars,
                     name: str = path.name) -> None:
            if what not in bars:
                bars[what] = tqdm(total=total, desc=f'{name} {what}', leave=False,
                                  unit='step' if what == 'finetune' else 'scan')
            bars[what].update(done - bars[what].n)

        try:
            results.append(evaluate(path, args.data, config, progress))
        finally:
            for bar in bars.values():
                bar.close()
        metrics = results[-1].metrics
        line = f"{path}: {args.protocol} mIoU {metrics['miou']}%"
        if metrics.get('teacher_miou') is not None:
            line += (f" (visible points: student {metrics['visible']['miou']}%, "
                     f"2D teacher {metrics['teacher_miou']}%)")
        if metrics.get('gap'):
            line += (f"; gap: CKA {metrics['gap']['cka']}, "
                     f"|KKᵀ−QQᵀ| {metrics['gap']['relational_gap']}")
        print(line)
    # Built beside --out and swapped in whole: never a mix of an old and a new report.
    staging = make_staging_dir(args.out)
    try:
        write_report(staging / args.out.name, results)
        mark_output(staging / args.out.name, REPORT_KIND)
        replace_output(staging / args.out.name, args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f'report: {args.out / "report.md"} (+ report.html, metrics.json)')
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-eval``; returns the exit code."""
    return run(build_parser(), _evaluate, argv)


if __name__ == '__main__':
    sys.exit(main())
