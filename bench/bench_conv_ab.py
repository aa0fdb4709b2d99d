"""The compiled sparse kernels of two revisions, timed against each other in one process.

    .venv/bin/python bench/bench_conv_ab.py --base d6b6462 [--scans nuscenes kitti]
        [--repeats 21] [--labels 24]

On a shared machine the speed of the same code drifts by tens of percent within minutes, so two
separately run benchmarks cannot show a 5-10 % change. Here ``native_fast.cpp`` of ``--base``
(a git revision) and of the working tree are both built (``torch.utils.cpp_extension``, under
op namespaces of their own, cached by torch like the fast path's own build) and loaded into one
process, and every timing alternates between them, so drift falls on both alike.

- Convolutions: every compiled convolution of one ``Labeler.label`` call of each bench student
  (``bench_node``'s ``default`` and ``small``, random weights) on each bench scan is recorded
  with its inputs and replayed with both builds, ``--repeats`` times each, alternating; the
  minimum per call, and the outputs' largest difference.
- Labels (``--labels N``, 0 to skip): whole ``Labeler.label`` calls of each student and scan,
  N per build, alternating, with ``native_fast.fast_ops`` pointed at one build or the other.
  The Python side is the working tree's for both, so this isolates the kernels.

Results: ``bench/results/conv_ab.json``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_node import MODELS, bench_scan, write_checkpoint
from common import ROOT, alternating_ms, machine_info, revision_file, write_results

from relkd_core.infer.labeler import Labeler
from relkd_core.models.sparse import native_fast

SOURCE = 'relkd_core/models/sparse/native_fast.cpp'


def build(source: str, namespace: str, folder: Path) -> Any:
    """``source`` (the kernels' C++) built with the fast path's flags and loaded as
    ``torch.ops.<namespace>``."""
    from torch.utils import cpp_extension

    path = folder / f'{namespace}.cpp'
    path.write_text(source.replace('TORCH_LIBRARY(relkd_native,', f'TORCH_LIBRARY({namespace},'))
    cpp_extension.load(name=namespace, sources=[str(path)],
                       extra_cflags=list(native_fast.CFLAGS),
                       extra_ldflags=list(native_fast.LDFLAGS), is_python_module=False,
                       verbose=False)
    return getattr(torch.ops, namespace)


def recorded_convolutions(labeler: Labeler, scan: np.ndarray) -> list[dict[str, Any]]:
    """The inputs of every compiled convolution of one label of ``scan``."""
    calls: list[dict[str, Any]] = []
    original = native_fast.subm_conv

    def record(ops: Any, features: torch.Tensor, weight: torch.Tensor, table: torch.Tensor,
               bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
               relu: bool = False) -> torch.Tensor:
        calls.append({'features': features.contiguous(), 'weight': weight.contiguous(),
                      'table': table, 'bias': bias, 'residual': residual, 'relu': relu})
        return original(ops, features, weight, table, bias, residual, relu)

    native_fast.subm_conv = record  # type: ignore[assignment]
    try:
        labeler.label(scan)
    finally:
        native_fast.subm_conv = original  # type: ignore[assignment]
    return calls


def replay(ops: Any, call: dict[str, Any]) -> torch.Tensor:
    return native_fast.subm_conv(ops, call['features'], call['weight'], call['table'],
                                 call['bias'], call['residual'], call['relu'])


def compare_convolutions(builds: dict[str, Any], calls: list[dict[str, Any]],
                         repeats: int) -> list[dict[str, Any]]:
    rows = []
    for call in calls:
        outputs = {name: replay(ops, call) for name, ops in builds.items()}
        times = alternating_ms({name: functools.partial(replay, ops, call)
                                for name, ops in builds.items()}, repeats)
        weight, table = call['weight'], call['table']
        best = {name: min(values) for name, values in times.items()}
        rows.append({
            'offsets': int(weight.shape[0]), 'c_in': int(weight.shape[1]),
            'c_out': int(weight.shape[2]), 'rows': int(table.shape[0]),
            'neighbours_per_row': round(float((table >= 0).sum()) / max(1, table.shape[0]), 2),
            'ms_min': {name: round(value, 3) for name, value in best.items()},
            'head_over_base': round(best['head'] / best['base'], 3),
            'largest_difference': float((outputs['head'] - outputs['base']).abs().max()),
        })
    return rows


def compare_labels(builds: dict[str, Any], labeler: Labeler, scan: np.ndarray,
                   count: int) -> dict[str, Any]:
    original = native_fast.fast_ops
    current = ['base']
    native_fast.fast_ops = lambda: builds[current[0]]  # type: ignore[assignment]
    try:
        labels = {}
        for name in builds:
            current[0] = name
            labels[name] = labeler.label(scan).labels

        def label_with(name: str) -> None:
            current[0] = name
            labeler.label(scan)

        times = alternating_ms({name: functools.partial(label_with, name) for name in builds},
                               count)
    finally:
        native_fast.fast_ops = original  # type: ignore[assignment]
    median = {name: statistics.median(values) for name, values in times.items()}
    return {'ms_median': {name: round(value, 1) for name, value in median.items()},
            'ms_min': {name: round(min(values), 1) for name, values in times.items()},
            'head_over_base_median': round(median['head'] / median['base'], 3),
            'labels_equal': float(np.mean(labels['head'] == labels['base']))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='git revision to compare the tree with')
    parser.add_argument('--scans', nargs='+', default=['nuscenes', 'kitti'])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--repeats', type=int, default=21)
    parser.add_argument('--labels', type=int, default=24, help='labels per build (0: skip)')
    parser.add_argument('--out', type=Path, default=ROOT / 'bench' / 'results' / 'conv_ab.json')
    args = parser.parse_args()
    base_source = revision_file(args.base, SOURCE)
    revision = subprocess.run(['git', 'rev-parse', '--short', args.base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    torch.set_num_threads(1)
    results: dict[str, Any] = {'machine': machine_info(), 'base': revision, 'threads': 1,
                               'repeats': args.repeats, 'labels': args.labels, 'cases': []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        builds = {'base': build(base_source, 'relkd_ab_base', folder),
                  'head': build((ROOT / SOURCE).read_text(), 'relkd_ab_head', folder)}
        for model in args.models:
            checkpoint = folder / f'{model}.pt'
            write_checkpoint(checkpoint, MODELS[model][0], 'native')
            labeler = Labeler(checkpoint, min_range_m=1.0, max_range_m=120.0)
            for scan_name in args.scans:
                scan = bench_scan(scan_name)
                rows = compare_convolutions(builds, recorded_convolutions(labeler, scan),
                                            args.repeats)
                total = {name: sum(row['ms_min'][name] for row in rows) for name in builds}
                case: dict[str, Any] = {
                    'model': model, 'scan': scan_name, 'convolutions': rows,
                    'convolutions_ms_sum': {name: round(v, 2) for name, v in total.items()},
                    'convolutions_head_over_base': round(total['head'] / total['base'], 3)}
                if args.labels:
                    case['labels'] = compare_labels(builds, labeler, scan, args.labels)
                results['cases'].append(case)
                line = (f'{model} {scan_name}: convolutions {total["base"]:.1f} -> '
                        f'{total["head"]:.1f} ms ({case["convolutions_head_over_base"]:.2f}x)')
                if args.labels:
                    labels = case['labels']
                    line += (f', label median {labels["ms_median"]["base"]} -> '
                             f'{labels["ms_median"]["head"]} ms '
                             f'({labels["head_over_base_median"]:.2f}x), labels equal '
                             f'{labels["labels_equal"]:.4f}')
                print(line, flush=True)
    write_results(args.out, results)


if __name__ == '__main__':
    main()
