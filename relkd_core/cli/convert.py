"""``relkd-convert``: the paper's datasets, in their own layouts, to one ROS 2 bag per scene.

Examples::

    relkd-convert nuscenes --dataroot /data/nuscenes --version v1.0-trainval --split val \\
        --out bags/nuscenes_val --workers 2
    relkd-convert semantickitti --dataroot /data/semantickitti --sequences 08 \\
        --out bags/semantickitti_08

Then prepare with the matching preset: ``nuscenes-lidarseg`` (``nuscenes`` without labels),
``semantickitti`` (``semantickitti-lidar`` for sequences without images).

Exit codes as every relkd command; a bad dataset folder (missing table, file or folder,
label file of the wrong length, calibration without ``Tr``, unknown scene or sequence) is a
usage error: one line naming the file, exit 2, and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from relkd_core.cli.common import EXIT_OK, EXIT_USAGE, positive_int, run
from relkd_core.datasets.convert import CONVERTED_KIND, ConvertSummary, convert_scenes
from relkd_core.datasets.nuscenes import VERSIONS, NuScenes, select_scenes
from relkd_core.datasets.scene import DatasetError, Scene
from relkd_core.datasets.semantickitti import SPLITS, SemanticKitti
from relkd_core.outputs import claim_output

PROG = 'relkd-convert'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description='Convert nuScenes(-lidarseg) or SemanticKITTI into ROS 2 bags '
                               '(one per scene or sequence) in the layout of their presets.')
    sub = parser.add_subparsers(dest='dataset', required=True, metavar='{nuscenes,semantickitti}')

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument('--dataroot', required=True, type=Path, help='the dataset folder')
        p.add_argument('--out', required=True, type=Path,
                       help='folder to create (with missing parents), one bag per scene inside '
                            '(must not exist unless --overwrite)')
        p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
        p.add_argument('--workers', type=positive_int, default=1,
                       help='bags written in parallel (default: 1)')
        p.add_argument('--overwrite', action='store_true',
                       help='replace --out if relkd-convert wrote it (only once every new bag '
                            'is complete)')
        p.add_argument('--verbose', action='store_true')

    nuscenes = sub.add_parser('nuscenes', help='nuScenes (+ lidarseg) JSON tables',
                              description='One bag per nuScenes scene: /LIDAR_TOP (with a '
                              'nuscenes16 label field when lidarseg is present), six cameras '
                              '(JPEG bytes untouched + CameraInfo), /tf ego poses, /tf_static.')
    common(nuscenes)
    nuscenes.add_argument('--version', choices=VERSIONS, default='v1.0-mini')
    nuscenes.add_argument('--split', choices=('train', 'val', 'test', 'mini_train', 'mini_val'),
                          default=None, help='official scene list (default: every scene)')
    nuscenes.add_argument('--scenes', nargs='+', default=(), metavar='NAME',
                          help='scene names, e.g. scene-0061 (overrides --split)')
    nuscenes.add_argument('--sweeps', action='store_true',
                          help='every reading, not only keyframes (sweeps have label 0)')
    nuscenes.add_argument('--no-labels', action='store_true',
                          help='ignore nuScenes-lidarseg even where present')

    kitti = sub.add_parser('semantickitti', help='SemanticKITTI / KITTI odometry sequences',
                           description='One bag per sequence: /kitti/velo/pointcloud (with '
                           'label and instance fields where labels exist), the colour cameras '
                           'where image_2/image_3 exist, /tf poses, /tf_static.')
    common(kitti)
    kitti.add_argument('--sequences', nargs='+', default=(), metavar='XX',
                       help='sequence names, e.g. 00 08 (overrides --split)')
    kitti.add_argument('--split', choices=sorted(SPLITS), default=None,
                       help='official sequences (default: every sequence present)')
    kitti.add_argument('--labels', choices=('mapped', 'raw', 'none'), default='mapped',
                       help='label field in semantickitti19 (mapped, default), in the raw '
                            'SemanticKITTI ids, or none')
    kitti.add_argument('--no-images', action='store_true', help='lidar-only bags')
    return parser


def _scenes(args: argparse.Namespace) -> list[Scene]:
    scenes: list[Scene] = []
    if args.dataset == 'nuscenes':
        nusc = NuScenes(args.dataroot, args.version, labels=False if args.no_labels else None)
        for name in tqdm(select_scenes(nusc, split=args.split, scenes=args.scenes),
                         desc='checking scenes', unit='scene', disable=None, file=sys.stderr):
            scenes.append(nusc.scene(name, sweeps=args.sweeps))
    else:
        kitti = SemanticKitti(args.dataroot, labels=args.labels, images=not args.no_images)
        for name in kitti.select(split=args.split, sequences=args.sequences):
            scenes.append(kitti.sequence(name))
    return scenes


def format_summary(summary: ConvertSummary, preset: str) -> str:
    """The one-screen summary printed at the end."""
    seconds = max(summary.seconds, 1e-9)
    megabytes = summary.bytes_read / 1e6
    lines = [f'wrote {len(summary.bags)} bags to {summary.out} in {summary.seconds:.1f} s: '
             f'{summary.scans} scans ({summary.labelled_scans} labelled), {summary.images} '
             f'images, {summary.points} points',
             f'{summary.scans / seconds:.1f} scans/s, {megabytes / seconds:.1f} MB/s of sensor '
             f'data ({megabytes:.1f} MB)']
    lines.extend(f'  {bag.path.name}: {bag.scans} scans, {bag.images} images, '
                 f'{bag.duration_s:.1f} s' for bag in summary.bags)
    lines.append(f'prepare with: relkd-prepare --preset {preset} '
                 + ' '.join(f'--bag {b.path}' for b in summary.bags[:2])
                 + (' ...' if len(summary.bags) > 2 else '') + ' --out PREPARED')
    return '\n'.join(lines)


def _preset(args: argparse.Namespace, scenes: list[Scene]) -> str:
    labelled = any(s.labelled for s in scenes)
    if args.dataset == 'nuscenes':
        return 'nuscenes-lidarseg' if labelled else 'nuscenes'
    if not any(s.cameras for s in scenes):
        return 'semantickitti-lidar'
    return 'semantickitti'


def _convert(args: argparse.Namespace) -> int:
    claim_output(args.out, kind=CONVERTED_KIND, overwrite=args.overwrite,
                 inputs=[args.dataroot], parents=True)
    try:
        scenes = _scenes(args)
    except DatasetError as err:
        # A bad dataset folder is the user's input: one line, exit 2, nothing written.
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    with tqdm(total=len(scenes), unit='bag', desc=PROG, disable=None, file=sys.stderr) as bar:
        summary = convert_scenes(scenes, args.out, storage=args.storage, workers=args.workers,
                                 on_bag=lambda _: bar.update(1))
    print(format_summary(summary, _preset(args, scenes)))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-convert``; returns the exit code."""
    return run(build_parser(), _convert, argv)


if __name__ == '__main__':
    sys.exit(main())
