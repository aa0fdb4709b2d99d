"""``relkd-synth``: write a synthetic driving log as a ROS 2 bag.

Example::

    relkd-synth --out drive_0 --rig nuscenes --frames 40 --seed 0 --storage mcap

``--layout nuscenes|semantickitti`` writes the same drive in that dataset's own folder layout
instead of a bag (what ``relkd-convert`` reads; see :mod:`relkd_core.sim.native`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from relkd_core.atomic import make_staging_dir
from relkd_core.cli.common import EXIT_OK, UsageError, positive_int, run
from relkd_core.errors import ConfigError
from relkd_core.outputs import claim_output, replace_output
from relkd_core.sim.drive import SimFrame, SyntheticDrive
from relkd_core.sim.native import write_nuscenes, write_semantickitti
from relkd_core.sim.record import SYNTH_BAG_KIND, RecordSummary, record_drive
from relkd_core.sim.rig import RIGS, RigConfig, load_rig
from relkd_core.taxonomy import NUM_CLASSES, label_name


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be non-negative, got {value}')
    return value


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT such as 400x224, got {text!r}'
                                         ) from None
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise argparse.ArgumentTypeError(f'width and height must be in 8..4096, got {text!r}')
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-synth',
        description='Render a synthetic drive (lidar, cameras, ground truth, tf) into a '
                    'ROS 2 bag.')
    parser.add_argument('--out', required=True, type=Path,
                        help='bag folder to create (must not exist unless --overwrite)')
    parser.add_argument('--rig', default='nuscenes',
                        help=f'sensor rig: one of {", ".join(RIGS)} or a rig YAML file '
                             '(default: nuscenes)')
    parser.add_argument('--frames', type=positive_int, default=20,
                        help='number of lidar scans (default: 20)')
    parser.add_argument('--seed', type=_seed, default=0,
                        help='scene and noise seed; same arguments give identical bags')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--layout', choices=('bag', 'nuscenes', 'semantickitti'), default='bag',
                        help='bag (default), or the drive as a nuScenes dataset folder (one '
                             'scene) or a SemanticKITTI dataset folder (one sequence)')
    parser.add_argument('--scene-name', default=None,
                        help="nuscenes layout: the scene's name (default: scene-0001); "
                             'semantickitti layout: the sequence (default: 00)')
    parser.add_argument('--keyframe-every', type=positive_int, default=1, metavar='N',
                        help='nuscenes layout: every N-th scan is a keyframe with labels, the '
                             'others sweeps (default: 1)')
    parser.add_argument('--image-format', choices=('raw', 'jpeg'), default='raw',
                        help='raw: sensor_msgs/Image rgb8; jpeg: sensor_msgs/CompressedImage')
    parser.add_argument('--image-size', type=_image_size, default=None, metavar='WxH',
                        help="resize every camera (default: the rig's size)")
    parser.add_argument('--no-cameras', action='store_true',
                        help='lidar and tf only (much faster)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it is a bag relkd-synth wrote (only once the new '
                             'bag is complete; nothing else is ever replaced)')
    parser.add_argument('--verbose', action='store_true')
    return parser


def format_summary(summary: RecordSummary, rig: RigConfig, elapsed_s: float) -> str:
    """The one-screen summary printed at the end."""
    counts = summary.points_per_scan
    lines = [
        f'wrote {summary.path}: {summary.frames} frames, {summary.duration_s:.2f} s of driving '
        f'(rig {rig.name}, {rig.frame_rate_hz:g} Hz) in {elapsed_s:.1f} s '
        f'({summary.frames / max(elapsed_s, 1e-9):.2f} frames/s)',
        f'points/scan: mean {sum(counts) / len(counts):.0f}, min {min(counts)}, '
        f'max {max(counts)}',
        'topics:',
    ]
    # Camera topics are grouped by suffix (one line for all cameras) to keep one screen.
    cameras = [c.name for c in rig.cameras]
    grouped: dict[str, tuple[str, list[int]]] = {}
    for topic, (msgtype, count) in summary.topics.items():
        parts = topic.split('/', 2)
        if len(parts) == 3 and parts[1] in cameras:
            key = f'/<camera>/{parts[2]}'
            grouped.setdefault(key, (msgtype, []))[1].append(count)
        else:
            lines.append(f'  {topic:<36} {msgtype:<32} {count:>6}')
    for key, (msgtype, counts) in grouped.items():
        lines.append(f'  {key:<36} {msgtype:<32} {counts[0]:>6} × {len(counts)} cameras')
    if cameras:
        lines.append(f'  cameras: {", ".join(cameras)}')
    total = max(int(summary.label_histogram.sum()), 1)
    lines.append('lidar points per class:')
    for label in range(NUM_CLASSES + 1):
        n = int(summary.label_histogram[label])
        bar = '#' * round(40 * n / total)
        lines.append(f'  {label:>2} {label_name(label):<21} {100 * n / total:6.2f}%  {bar}')
    return '\n'.join(lines)


def _synth(args: argparse.Namespace) -> int:
    try:
        rig = load_rig(args.rig)
    except ConfigError as err:
        raise UsageError(f'--rig: {err}') from err
    if args.image_size is not None:
        rig = rig.with_image_size(*args.image_size)
    out: Path = args.out
    if args.layout != 'bag':
        return _synth_native(args, rig)
    rig_file = [Path(args.rig)] if Path(args.rig).is_file() else []
    claim_output(out, kind=SYNTH_BAG_KIND, overwrite=args.overwrite, inputs=rig_file)
    drive = SyntheticDrive(rig, args.frames, args.seed, cameras=not args.no_cameras)
    # Replacing records into a hidden folder first; the bag inside keeps the final name,
    # because rosbags names the storage file after its folder.
    staging = make_staging_dir(out) if out.exists() else None
    target = staging / out.name if staging is not None else out
    started = time.perf_counter()
    try:
        summary = _record(drive, target, args, rig)
        if staging is not None:  # swap only once the new bag is complete
            replace_output(target, out)
            summary.path = str(out)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    print(format_summary(summary, rig, time.perf_counter() - started))
    return EXIT_OK


def _record(drive: SyntheticDrive, target: Path, args: argparse.Namespace,
            rig: RigConfig) -> RecordSummary:
    with tqdm(total=args.frames, unit='frame', desc=f'relkd-synth {rig.name}',
              disable=None, file=sys.stderr) as bar:

        def advance(frame: SimFrame) -> None:
            bar.update(1)
            bar.set_postfix(points=len(frame.points))

        return record_drive(drive, target, storage=args.storage,
                            image_format=args.image_format, on_frame=advance)


def _synth_native(args: argparse.Namespace, rig: RigConfig) -> int:
    """--layout nuscenes|semantickitti: a dataset folder (a SemanticKITTI root may hold other
    sequences already; the new sequence folder must not exist)."""
    out: Path = args.out
    if args.overwrite:
        raise UsageError('--overwrite is not supported with --layout; remove --out first')
    if args.layout == 'nuscenes' or not (out / 'sequences').is_dir():
        claim_output(out, kind=f'synth-{args.layout}-layout', overwrite=False)
    drive = SyntheticDrive(rig, args.frames, args.seed, cameras=not args.no_cameras)
    started = time.perf_counter()
    with tqdm(total=args.frames, unit='frame', desc=f'relkd-synth {args.layout}',
              disable=None, file=sys.stderr) as bar:
        if args.layout == 'nuscenes':
            written = write_nuscenes([(args.scene_name or 'scene-0001', drive)], args.out,
                                     keyframe_every=args.keyframe_every,
                                     on_frame=lambda _: bar.update(1))
        else:
            written = write_semantickitti(drive, args.out, args.scene_name or '00',
                                          on_frame=lambda _: bar.update(1))
    print(f'wrote {written}: {args.frames} frames of rig {drive.rig.name} in the {args.layout} '
          f'layout in {time.perf_counter() - started:.1f} s')
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-synth``; returns the exit code."""
    return run(build_parser(), _synth, argv)


if __name__ == '__main__':
    sys.exit(main())
