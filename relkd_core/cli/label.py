"""``relkd-label``: label every lidar scan of a recorded bag offline, without ROS.

Example::

    relkd-label --checkpoint run/student.pt --bag drive_0 --out drive_0_labeled \\
        --preset synth-nuscenes --vocabulary car pedestrian road "traffic cone"

The output bag holds every message of the input unchanged plus what ``segment_node`` publishes
for each scan: the labeled cloud on ``/labeled_points`` (header of its scan) and the legend on
``/legend`` (once per lidar frame). It is written in the input's storage (or ``--storage``) and
appears only when complete; an existing ``--out`` is replaced only when it is a bag that
relkd-label wrote and ``--overwrite`` is given, and never when it is, holds or lies inside the
input.

Exit codes: 0 the bag was labelled. A damaged input (an MCAP file cut short, a message that
cannot be read) is labelled up to the damage: the summary and a warning on stderr say
``read K of N messages``, and the exit code is still 0, as for relkd-prepare, as long as at
least one scan was labelled. 1 nothing could be labelled (nothing is written) or another
failure; 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from relkd_core.cli.common import EXIT_OK, UsageError, run
from relkd_core.data.bag import bag_topics, open_bags
from relkd_core.data.preset import load_preset
from relkd_core.data.scan import NAN_POLICIES
from relkd_core.errors import BagError, ConfigError
from relkd_core.infer.label_bag import (
    LabelBagReport,
    claim_label_output,
    label_bag,
    lidar_topic_of,
)
from relkd_core.infer.labeler import Labeler, resolve_vocabulary
from relkd_core.infer.pipeline import read_settings
from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.models.distilled import load_checkpoint
from relkd_core.precision import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-label',
        description='Label every lidar point of a ROS 2 bag with an open vocabulary: writes a '
                    'copy of the bag plus the labeled clouds and legend segment_node would '
                    'publish.')
    parser.add_argument('--checkpoint', required=True, type=Path,
                        help='student checkpoint written by relkd-train (student.pt)')
    parser.add_argument('--bag', required=True, type=Path,
                        help='ROS 2 bag folder, .mcap or .db3 to label')
    parser.add_argument('--out', required=True, type=Path, help='bag folder to create')
    parser.add_argument('--vocabulary', nargs='+', default=None, metavar='NAME',
                        help='class names or free text to label with (default: the '
                             "checkpoint's own vocabulary)")
    parser.add_argument('--vocabulary-file', type=Path, default=None,
                        help='vocabulary YAML (config/vocabularies layout) instead of '
                             '--vocabulary')
    parser.add_argument('--preset', default=None,
                        help='topic preset (synth-nuscenes, kitti, ... or a YAML file): gives '
                             'the lidar topic, and its intensity field and scale and range '
                             'limits override the checkpoint\'s')
    parser.add_argument('--lidar-topic', default=None,
                        help='PointCloud2 topic to label (default: the preset\'s, else the '
                             'bag\'s only PointCloud2 topic)')
    for flag, kind, text in (
            ('--intensity-field', str, 'field read as intensity'),
            ('--intensity-scale', float, 'factor mapping intensity into the student\'s range'),
            ('--min-range-m', float, 'nearer points are unlabeled'),
            ('--max-range-m', float, 'farther points are unlabeled')):
        parser.add_argument(flag, type=kind, default=None,
                            help=f'{text} (default: the preset\'s, else the checkpoint\'s)')
    parser.add_argument('--nan-policy', choices=NAN_POLICIES, default=None,
                        help='drop: points with a non-finite value are left out of the labeled '
                             'cloud; keep: they stay in place, unlabeled, so organised clouds '
                             'keep their shape (default: the checkpoint\'s, which is drop)')
    parser.add_argument('--score-threshold', type=float, default=-1.0,
                        help='points scoring below this cosine similarity are unlabeled '
                             '(default: -1, every point labelled)')
    parser.add_argument('--labeled-topic', default=f'/{LABELED_TOPIC}',
                        help=f'topic of the labeled clouds (default: /{LABELED_TOPIC})')
    parser.add_argument('--legend-topic', default=f'/{LEGEND_TOPIC}',
                        help=f'topic of the legend MarkerArray (default: /{LEGEND_TOPIC})')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default=None,
                        help='storage of the output bag (default: the input\'s)')
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help="the student's arithmetic (default: float32); bfloat16 keeps at "
                             'least 99.5 %% of the float32 labels and is faster only where the '
                             'CPU or GPU has native bfloat16')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it is a bag relkd-label wrote (only once the '
                             'new bag is complete; nothing else is ever replaced)')
    parser.add_argument('--verbose', action='store_true')
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Lidar topic and distro from the arguments over the preset's, and the intensity and
    range settings the arguments (then the preset) set explicitly, each as (value, origin)."""
    settings: dict[str, Any] = {'lidar_topic': None, 'distro': 'humble'}
    reading: dict[str, tuple[Any, str]] = {key: (None, '') for key in _READING}
    if args.preset is not None:
        try:
            preset = load_preset(args.preset)
        except ConfigError as err:
            raise UsageError(f'--preset: {err}') from err
        settings.update(lidar_topic=preset.lidar.topic, distro=preset.distro)
        reading.update({key: (getattr(preset.lidar.scan_input, key), f'--preset {args.preset}')
                        for key in _READING})
    if args.lidar_topic is not None:
        settings['lidar_topic'] = args.lidar_topic
    for key in _READING:
        if getattr(args, key) is not None:
            reading[key] = (getattr(args, key), '--' + key.replace('_', '-'))
    settings['reading'] = reading
    return settings


#: ScanInput settings the preset and flags may override.
_READING = ('intensity_field', 'intensity_scale', 'min_range_m', 'max_range_m', 'nan_policy')


def _check_paths(args: argparse.Namespace) -> None:
    if not args.checkpoint.is_file():
        raise UsageError(f'--checkpoint {args.checkpoint}: no such file')
    if not args.bag.exists():
        raise UsageError(f'--bag {args.bag}: no such bag')
    others = [p for p in (args.checkpoint, args.vocabulary_file) if p is not None]
    claim_label_output(args.bag, args.out, args.overwrite, tuple(others))


def format_report(report: LabelBagReport) -> str:
    """The one-screen summary printed at the end."""
    lines = [f'wrote {report.path} ({report.storage}): {report.copied} messages copied, '
             f'{report.labeled} of {report.scans} scans of {report.lidar_topic} labelled '
             f'({report.points} points) on {report.labeled_topic}, legend on '
             f'{report.legend_topic}; {report.seconds:.1f} s '
             f'({report.labeled / max(report.seconds, 1e-9):.2f} scans/s)']
    lines.extend(f'dropped {n} scan(s): {reason}' for reason, n in sorted(report.dropped.items()))
    if report.damage is not None:
        lines.append(f'damaged input: {report.damage}')
    return '\n'.join(lines)


def _label(args: argparse.Namespace) -> int:
    _check_paths(args)
    if args.vocabulary and args.vocabulary_file:
        raise UsageError('give --vocabulary or --vocabulary-file, not both')
    settings = _settings(args)
    with open_bags([args.bag], settings['distro']) as reader:
        topics = bag_topics(reader)
        truncated_at = getattr(reader, 'truncated_at', None)
        size_bytes = getattr(reader, 'size_bytes', None)
    try:
        lidar_topic = lidar_topic_of(topics, settings['lidar_topic'])
    except BagError as err:
        if truncated_at is not None:  # the topic may be in the part that was lost
            raise BagError(f'{args.bag} is damaged: the MCAP file ends without its footer '
                           f'(truncated at byte {truncated_at} of {size_bytes}) and what is '
                           f'left has no usable lidar topic: {err}') from err
        raise UsageError(f'--lidar-topic: {err}') from err
    checkpoint = load_checkpoint(args.checkpoint)
    try:
        vocabulary = resolve_vocabulary(args.vocabulary or (), args.vocabulary_file, checkpoint)
    except ConfigError as err:
        raise UsageError(f'--vocabulary: {err}') from err
    try:
        reading = read_settings(checkpoint.scan_input, settings['reading'],
                                score_threshold=args.score_threshold)
        labeler = Labeler(checkpoint, vocabulary, args.device, precision=args.precision)
    except ConfigError as err:
        raise UsageError(str(err)) from err
    for note in reading.notes:
        print(f'relkd-label: {note}', file=sys.stderr)
    with tqdm(unit='msg', desc='relkd-label', disable=None, file=sys.stderr) as bar:
        report = label_bag(
            args.bag, args.out, labeler, lidar_topic=lidar_topic,
            settings=reading,
            labeled_topic=args.labeled_topic,
            legend_topic=args.legend_topic, storage=args.storage, distro=settings['distro'],
            overwrite=args.overwrite, on_start=lambda total: bar.reset(total=total),
            progress=bar.update)
    print(format_report(report))
    if report.damage is not None:
        print(f'relkd-label: warning: {args.bag} is damaged: {report.damage}; {args.out} holds '
              'what was read', file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-label``; returns the exit code."""
    return run(build_parser(), _label, argv)


if __name__ == '__main__':
    sys.exit(main())
