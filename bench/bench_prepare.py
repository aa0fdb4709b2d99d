"""Benchmark: relkd-prepare throughput (scans/s) without a teacher.

Run: ``.venv/bin/python bench/bench_prepare.py --out bench/results/prepare.json``
Records a synthetic drive per rig and image format once, then times the whole preparation
(index pass, pairing, shard writing) with 1 and 2 worker processes.
Target: at least 20 scans/s on the ``synth-nuscenes`` rig on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine_info, write_results

from relkd_core.data.prepare import PrepareOptions, prepare_dataset
from relkd_core.data.preset import load_preset
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS


def measure(bag: Path, preset_name: str, workers: int, out: Path) -> dict[str, float]:
    started = time.perf_counter()
    report = prepare_dataset([bag], load_preset(preset_name), out,
                             options=PrepareOptions(workers=workers, frames_per_shard=16))
    elapsed = time.perf_counter() - started
    return {'workers': workers, 'scans': report.scans, 'seconds': round(elapsed, 3),
            'scans_per_s': round(report.scans / elapsed, 1),
            'pairs_per_scan': round(report.pairs / max(report.frames_written, 1)),
            'points_per_scan': round(report.points / max(report.frames_written, 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/prepare.json'))
    parser.add_argument('--frames', type=int, default=64)
    args = parser.parse_args()
    results: dict[str, object] = {
        'machine': machine_info(),
        'target': 'synth-nuscenes >= 20 scans/s without teacher',
        'runs': {},
    }
    runs: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rig in ('nuscenes', 'kitti'):
            for image_format in ('raw', 'jpeg'):
                bag = Path(tmp) / f'{rig}_{image_format}'
                record_drive(SyntheticDrive(RIGS[rig], args.frames, seed=0), bag,
                             storage='mcap', image_format=image_format)  # type: ignore[arg-type]
                for workers in (1, 2):
                    key = f'synth-{rig}/{image_format}/workers={workers}'
                    runs[key] = measure(bag, f'synth-{rig}', workers,
                                        Path(tmp) / f'out_{rig}_{image_format}_{workers}')
                    print(key, runs[key], flush=True)
    results['runs'] = runs
    write_results(args.out, results)


if __name__ == '__main__':
    main()
