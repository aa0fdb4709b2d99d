"""Benchmark: the evaluation's data paths, the working tree against a base revision.

    .venv/bin/python bench/bench_eval_paths.py --base bef5667 [--frames 2] [--repeats 11]

- Reading a prepared frame with its teacher features (``PreparedDataset.__getitem__``, which
  samples each image's stored teacher grid at the frame's point-pixel pairs with
  ``geometry.grid.sample_grid``): a synthetic drive per rig (nuScenes, KITTI), recorded and
  prepared with the synthetic teacher.
- The linear probe (``eval.fewshot.train_linear_probe``, its default 200 epochs) on the labelled
  points of each frame, with the features of a random-init default student (``bench_node``'s).

``grid.py`` and ``fewshot.py`` of ``--base`` (a git revision) are loaded as modules of their own
beside the tree's, and every timing alternates between the two in one process (the machine's
speed drifts by tens of percent within minutes). Results: ``bench/results/eval_paths.json``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_node import MODELS, TEACHER_DIM
from common import ROOT, alternating_ms, machine_info, revision_file, write_results

from relkd_core.data import prepared
from relkd_core.data.prepare import PrepareOptions, prepare_dataset
from relkd_core.data.preset import load_preset
from relkd_core.data.teacher_adapter import camera_teacher_spec
from relkd_core.eval import fewshot
from relkd_core.geometry import grid
from relkd_core.models.distilled import DistilledStudent, scan_features
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS


def base_module(revision: str, path: str, name: str) -> ModuleType:
    """The file ``path`` of git ``revision``, imported as module ``name``."""
    folder = Path(tempfile.mkdtemp())
    (folder / f'{name}.py').write_text(revision_file(revision, path))
    spec = importlib.util.spec_from_file_location(name, folder / f'{name}.py')
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def alternate(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, Any]]:
    """Median and spread (ms) of each call, timed ``repeats`` times, alternating."""
    return {name: {'median_ms': round(statistics.median(v), 2), 'min_ms': round(min(v), 2),
                   'max_ms': round(max(v), 2)}
            for name, v in alternating_ms(calls, repeats).items()}


def prepared_drive(rig: str, frames: int, folder: Path) -> prepared.PreparedDataset:
    bag = folder / f'{rig}_bag'
    record_drive(SyntheticDrive(RIGS[rig], frames, seed=0), bag, storage='mcap')
    out = folder / f'{rig}_prepared'
    spec = camera_teacher_spec('synthetic', None)
    prepare_dataset([bag], load_preset(f'synth-{rig}'), out, teacher_factory=lambda: spec,
                    options=PrepareOptions(frames_per_shard=frames))
    return prepared.PreparedDataset(out)


def read_with(dataset: prepared.PreparedDataset, index: int,
              sampler: Callable[..., Any]) -> prepared.PreparedFrame:
    """Frame ``index`` of ``dataset`` with its teacher features sampled by ``sampler``."""
    prepared.sample_grid = sampler
    try:
        return dataset[index]
    finally:
        prepared.sample_grid = grid.sample_grid


def frame_case(dataset: prepared.PreparedDataset, index: int, base_grid: ModuleType,
               base_fewshot: ModuleType, student: DistilledStudent, repeats: int
               ) -> dict[str, Any]:
    """Reading frame ``index`` and fitting the probe on it, base against tree."""
    samplers = {'base': base_grid.sample_grid, 'tree': grid.sample_grid}
    base_frame, frame = (read_with(dataset, index, sampler) for sampler in samplers.values())
    assert frame.pair_features is not None and base_frame.pair_features is not None
    assert frame.labels is not None
    reading = alternate({name: functools.partial(read_with, dataset, index, sampler)
                         for name, sampler in samplers.items()}, repeats)
    features = scan_features(student, [torch.from_numpy(frame.points)], head=False)[0]
    points, targets = fewshot.labelled_points([features], [frame.labels])
    config = fewshot.FewShotConfig()
    fits = {'base': functools.partial(base_fewshot.train_linear_probe, points, targets, config),
            'tree': functools.partial(fewshot.train_linear_probe, points, targets, config)}
    probes = {name: fit() for name, fit in fits.items()}
    with torch.no_grad():
        agree = float((probes['base'](points).argmax(1) == probes['tree'](points).argmax(1))
                      .float().mean())
    probing = alternate(fits, max(3, repeats // 3))
    return {
        'frame': index, 'points': len(frame.points), 'pairs': len(frame.pair_uv),
        'feature_dim': frame.pair_features.shape[1], 'read_frame': reading,
        'read_tree_over_base': round(reading['tree']['median_ms']
                                     / reading['base']['median_ms'], 3),
        'pair_features_largest_difference': float(
            np.abs(frame.pair_features - base_frame.pair_features).max()),
        'probe_points': len(points),
        'probe_distinct_rows': len(fewshot.distinct_rows(points, targets)[0]),
        'probe': probing,
        'probe_tree_over_base': round(probing['tree']['median_ms']
                                      / probing['base']['median_ms'], 3),
        'probe_predictions_equal': agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--base', required=True, help='git revision to compare the tree with')
    parser.add_argument('--frames', type=int, default=2, help='frames of each synthetic drive')
    parser.add_argument('--repeats', type=int, default=11)
    parser.add_argument('--out', type=Path, default=ROOT / 'bench' / 'results' / 'eval_paths.json')
    args = parser.parse_args()
    torch.set_num_threads(1)
    base_grid = base_module(args.base, 'relkd_core/geometry/grid.py', 'relkd_base_grid')
    base_fewshot = base_module(args.base, 'relkd_core/eval/fewshot.py', 'relkd_base_fewshot')
    torch.manual_seed(0)
    student = DistilledStudent(MODELS['default'][0], TEACHER_DIM).eval()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for rig in ('nuscenes', 'kitti'):
            dataset = prepared_drive(rig, args.frames, Path(tmp))
            for index in range(len(dataset)):
                case = {'rig': rig, **frame_case(dataset, index, base_grid, base_fewshot,
                                                 student, args.repeats)}
                cases.append(case)
                read, probe = case['read_frame'], case['probe']
                print(f"{rig} frame {index}: read {read['base']['median_ms']} -> "
                      f"{read['tree']['median_ms']} ms, probe {probe['base']['median_ms']:.0f}"
                      f" -> {probe['tree']['median_ms']:.0f} ms ({case['probe_points']} points, "
                      f"{case['probe_distinct_rows']} rows), predictions equal "
                      f"{case['probe_predictions_equal']:.4f}", flush=True)
    write_results(args.out, {'machine': machine_info(), 'base': args.base, 'threads': 1,
                             'repeats': args.repeats, 'cases': cases})


if __name__ == '__main__':
    main()
