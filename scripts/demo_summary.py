"""Print the summary of `make demo` from what its steps wrote under the demo folder.

Run: ``.venv/bin/python scripts/demo_summary.py demo_out``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.1f}%'


def _labeler_latency_ms(checkpoint: Path, prepared: Path) -> tuple[float, int, int] | None:
    """Median wall time of labelling the first held-back scan (after one warm-up call)."""
    if not checkpoint.is_file() or not (prepared / 'manifest.json').is_file():
        return None
    import time

    import torch

    from relkd_core.data.prepared import PreparedDataset
    from relkd_core.infer import Labeler

    points = PreparedDataset(prepared, features=False)[0].points
    labeler = Labeler(checkpoint, None, 'cpu')
    labeler.label(points)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        labeler.label(points)
        times.append(1000.0 * (time.perf_counter() - start))
    return sorted(times)[2], len(points), torch.get_num_threads()


def summary(root: Path) -> list[str]:
    """The summary lines (missing steps are named, never guessed)."""
    lines = [f'relkd_ros demo: {root}/']
    zero = _load(root / 'eval_zero_shot' / 'metrics.json')
    probe = _load(root / 'eval_linear_probe' / 'metrics.json')
    train = root / 'train_relational'
    metrics = train / 'metrics.jsonl'
    if metrics.is_file():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        if records:
            last = records[-1]
            lines.append(f"  training     {last['step']} steps of relational distillation, "
                         f"final loss {last['loss']:.3f}, zero-shot accuracy of the paired "
                         f"points {100 * last['zero_shot_accuracy']:.1f}%  "
                         f'({train / "student.pt"})')
    if zero is not None:
        lines.append(f"  zero-shot    3D student mIoU {_pct(zero['miou'])} on all points of the "
                     f"held-back drive; on camera-visible points student "
                     f"{_pct(zero['visible']['miou'])} vs the 2D teacher "
                     f"{_pct(zero['teacher_miou'])} (teacher_visible)")
        per_class = zero.get('per_class_iou') or {}
        predicted = zero.get('predicted_points') or {}
        scored = [n for n, iou in per_class.items() if iou]
        if per_class:
            lines.append(f'  per class    student IoU > 0 on {len(scored)} of {len(per_class)} '
                         'classes; ' + ', '.join(
                             f'{n} {per_class[n]:.0f}% ({predicted.get(n, 0)} pts predicted)'
                             for n in sorted(scored, key=lambda n: -per_class[n])))
        if zero.get('gap'):
            lines.append(f"  gap          CKA {zero['gap']['cka']:.3f}, mean |KKᵀ − QQᵀ| "
                         f"{zero['gap']['relational_gap']:.3f}")
    else:
        lines.append('  zero-shot    not evaluated')
    if probe is not None:
        lines.append(f"  linear probe {_pct(probe['miou'])} mIoU with "
                     f"{len(probe['labelled_scans'])} labelled scan(s) "
                     f"({100 * probe['label_fraction']:g}% of the training drive)")
    latency = _labeler_latency_ms(train / 'student.pt', root / 'prepared_nuscenes_val')
    if latency is not None:
        lines.append(f'  latency      {latency[0]:.0f} ms per {latency[1]}-point scan to label '
                     f'(Labeler, median of 5, {latency[2]} torch threads, this CPU)')
    if (root / 'labeled_val').is_dir():
        lines.append(f"  labeled bag  {root / 'labeled_val'} (replay it with relkd-play and "
                     'RViz: config/relkd.rviz)')
    if (root / 'student.torchscript').is_file():
        lines.append(f"  exported     {root / 'student.torchscript'} (TorchScript: "
                     'torch.jit.load(path)(points) without relkd, or libtorch from C++)')
    for name in ('eval_zero_shot', 'eval_linear_probe'):
        if (root / name / 'report.html').is_file():
            lines.append(f'  report       {root / name / "report.html"}')
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', type=Path, nargs='?', default=Path('demo_out'))
    args = parser.parse_args(argv)
    print('\n'.join(summary(args.root)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
