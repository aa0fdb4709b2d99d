"""``relkd-export``: write a checkpoint's student as one TorchScript file for deployment.

Example::

    relkd-export --checkpoint run/student.pt --out run/student.torchscript

The file runs without Python packages beyond torch (or from C++ with libtorch): its
``forward(points)`` maps one (N, 4) float32 ``x, y, z, intensity`` scan to (N, D) per-point
features, voxelization included; ``relkd.json`` inside it holds the teacher, the student config
and the stored vocabulary with its text embeddings. The file is checked after writing: the
command prints the largest difference from the eager model on a synthetic scan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relkd_core.cli.common import EXIT_OK, positive_int, run
from relkd_core.models.distilled import load_checkpoint
from relkd_core.models.export import EXPORT_KIND, export_checkpoint, is_export_file
from relkd_core.outputs import claim_output
from relkd_core.precision import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-export',
        description="Write a checkpoint's student (voxelization, MinkUNet, head) as one "
                    'TorchScript file that runs without relkd.')
    parser.add_argument('--checkpoint', required=True, type=Path,
                        help='student checkpoint written by relkd-train (student.pt)')
    parser.add_argument('--out', required=True, type=Path, help='TorchScript file to write')
    parser.add_argument('--backbone-only', action='store_true',
                        help="export the backbone's own features instead of the teacher-space "
                             'features of the head')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help="the backbone's arithmetic in the file (default: float32); "
                             'bfloat16 halves the weights and is faster only where the CPU or '
                             'GPU has native bfloat16; the check prints its label agreement')
    parser.add_argument('--check-points', type=positive_int, default=20_000,
                        help='points of the synthetic scan the written file is checked on')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out written by relkd-export (nothing else '
                             'is ever replaced)')
    return parser


def _export(args: argparse.Namespace) -> int:
    claim_output(args.out, kind=EXPORT_KIND, overwrite=args.overwrite, inputs=[args.checkpoint],
                 file=True, recognise=is_export_file)
    checkpoint = load_checkpoint(args.checkpoint)
    report = export_checkpoint(checkpoint, args.out, head=not args.backbone_only,
                               check_points=args.check_points, precision=args.precision)
    agreement = ('' if report.label_agreement is None else
                 f' and {100 * report.label_agreement:.2f} % of its points keep the float32 '
                 'label')
    print(f'wrote {report.path}: forward(points (N, 4) float32) -> (N, {report.out_dim}) '
          f'features in {report.precision}; on a {report.check_points}-point check scan the '
          f'largest difference from the float32 eager model is '
          f'{report.max_abs_difference:.2e}{agreement} '
          f'(eager {report.eager_ms:.0f} ms, TorchScript {report.scripted_ms:.0f} ms)')
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-export``; returns the exit code."""
    return run(build_parser(), _export, argv)


if __name__ == '__main__':
    sys.exit(main())
