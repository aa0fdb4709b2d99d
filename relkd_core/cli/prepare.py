"""``relkd-prepare``: turn ROS 2 bags into a prepared distillation dataset.

Example::

    relkd-prepare --bag drive_0 --bag drive_1 --preset synth-nuscenes --teacher synthetic \\
        --out prepared/ --workers 2

Running the same command again after an interruption resumes where it stopped. ``--shard i/n``
lets n machines (or processes) share one output folder. ``--out`` must be new, empty, or a
preparation (of the same bags and options) to continue; nothing else is ever written into.
A run that yields no usable frame writes no manifest, says why on stderr, exits 1 and removes
the folder if it created it.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from relkd_core.cli.common import EXIT_OK, UsageError, positive_int, run
from relkd_core.data.prepare import PrepareOptions, PrepareReport, prepare_dataset
from relkd_core.data.prepared import PREPARED_KIND, SHARDS, is_prepared_dataset
from relkd_core.data.preset import TopicPreset, load_preset
from relkd_core.data.teacher_adapter import camera_teacher_spec
from relkd_core.errors import ConfigError, DataError
from relkd_core.outputs import claim_output

TEACHERS = ('none', 'synthetic', 'openclip', 'precomputed', 'learned')


def _shard_group(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split('/'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected i/n such as 0/4, got {text!r}') from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f'expected 0 <= i < n, got {text!r}')
    return index, count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-prepare',
        description='Pair lidar points with camera pixels (and teacher features) from ROS 2 '
                    'bags into a sharded, memory-mappable dataset.')
    parser.add_argument('--bag', action='append', required=True, type=Path, metavar='PATH',
                        help='bag folder, .mcap, .db3 or ROS 1 .bag (repeat for several)')
    parser.add_argument('--preset', required=True,
                        help='topic preset: synth-nuscenes, synth-kitti, nuscenes, kitti or a '
                             'YAML file')
    parser.add_argument('--teacher', choices=TEACHERS, default='none',
                        help='2D teacher whose feature grids are stored (default: none)')
    parser.add_argument('--teacher-config', type=Path, default=None,
                        help='teacher config YAML (default: the teacher\'s defaults)')
    parser.add_argument('--out', required=True, type=Path, help='dataset folder')
    parser.add_argument('--workers', type=positive_int, default=1,
                        help='processes working on shards in parallel (default: 1)')
    parser.add_argument('--shard', type=_shard_group, default=(0, 1), metavar='i/n',
                        help='do only shards k with k %% n == i (default: 0/1, all)')
    parser.add_argument('--frames-per-shard', type=positive_int, default=32)
    parser.add_argument('--superpixels', type=positive_int, default=None, metavar='N',
                        help='also store each pair\'s SLIC superpixel, N segments per image '
                             '(SLidR: 150; needs scikit-image; default: off)')
    parser.add_argument('--verbose', action='store_true')
    return parser


def format_report(report: PrepareReport, out: Path) -> str:
    """The one-screen summary printed at the end."""
    done = report.shards_written + report.shards_resumed
    rate = report.scans / report.seconds if report.seconds else 0.0
    lines = [f'{out}: {report.frames_written} frames in {report.shards_total} shards '
             f'({report.shards_written} written now, {report.shards_resumed} already there); '
             f'{report.seconds:.1f} s, {rate:.1f} scans/s planned+processed',
             f'points {report.points}, images {report.images}, point-pixel pairs '
             f'{report.pairs} ({report.pairs / max(report.frames_written, 1):.0f} per frame)']
    if report.dropped:
        lines.append('dropped frames: ' + ', '.join(f'{n} {why}' for why, n in
                                                    sorted(report.dropped.items())))
    if report.nan_points:
        lines.append(f'non-finite points dropped: {report.nan_points}')
    missing = {k: v for k, v in report.unpaired.items() if v}
    if missing:
        lines.append('scans without an image within the tolerance: ' + ', '.join(
            f'{camera} {n}' for camera, n in sorted(missing.items())))
    if report.camera_problems:
        lines.append('images dropped: ' + ', '.join(
            f'{camera} {n}' for camera, n in sorted(report.camera_problems.items())))
    lines.extend(f'problem: {p}' for p in report.problems)
    if report.complete:
        lines.append(f'complete: manifest written to {out / "manifest.json"}')
    elif report.frames_written == 0 and done == report.shards_total:
        lines.append('no manifest: not one usable frame')
    else:
        lines.append(f'incomplete: {done} of {report.shards_total} shards of this group done; '
                     'the run that finishes the last shard writes the manifest')
    return '\n'.join(lines)


def failure_reason(report: PrepareReport) -> str:
    """Why a preparation has no usable frame, in one line."""
    reasons = list(report.problems)
    if report.dropped:
        reasons.append('dropped frames: ' + ', '.join(
            f'{n} {why}' for why, n in sorted(report.dropped.items())))
    if not reasons and not report.scans:
        reasons.append('the bags hold no scan on the preset\'s lidar topic')
    return '; '.join(reason.rstrip('.') for reason in reasons)


def _prepare(args: argparse.Namespace) -> int:
    try:
        preset = load_preset(args.preset)
    except ConfigError as err:
        raise UsageError(f'--preset: {err}') from err
    for bag in args.bag:
        if not bag.exists():
            raise UsageError(f'--bag {bag}: no such bag file or folder')
    inputs = [*args.bag, *(p for p in (args.teacher_config, Path(args.preset))
                           if p is not None and p.is_file())]
    claim_output(args.out, kind=PREPARED_KIND, overwrite=False, resumable=True, inputs=inputs,
                 recognise=is_prepared_dataset)
    created = not args.out.exists() or not any(args.out.iterdir())
    try:
        report = _run_prepare(args, preset)
    except BaseException:
        # An interrupted or failed run keeps its completed shards, which a rerun resumes from.
        if created and not _completed_shards(args.out):
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    if report.usable_frames == 0:
        if created and args.shard == (0, 1):  # nothing of value, and nobody else works here
            shutil.rmtree(args.out, ignore_errors=True)
        raise DataError(f'no usable frame in the given bags: {failure_reason(report)}; no '
                        'dataset written')
    return EXIT_OK


def _completed_shards(out: Path) -> list[Path]:
    return [p for p in (out / SHARDS).glob('*') if not p.name.startswith('.')]


def _run_prepare(args: argparse.Namespace, preset: TopicPreset) -> PrepareReport:
    factory = None
    if args.teacher != 'none':
        factory = functools.partial(camera_teacher_spec, args.teacher, args.teacher_config)
    options = PrepareOptions(frames_per_shard=args.frames_per_shard, workers=args.workers,
                             shard_group=args.shard, superpixels=args.superpixels)
    with tqdm(unit='scan', desc='relkd-prepare', disable=None, file=sys.stderr) as bar:

        def planned(todo: int, done: int) -> None:
            bar.reset(total=todo)
            if done:
                bar.write(f'resuming: {done} scans already prepared')

        report = prepare_dataset(args.bag, preset, args.out, teacher_factory=factory,
                                 options=options, progress=bar.update, on_plan=planned)
    print(format_report(report, args.out))
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-prepare``; returns the exit code."""
    return run(build_parser(), _prepare, argv)


if __name__ == '__main__':
    sys.exit(main())
