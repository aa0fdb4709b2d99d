"""Benchmark: synthetic-world throughput (frames/s) per rig, rendering and bag writing.

Run: ``.venv/bin/python bench/bench_synth.py --out bench/results/synth.json``
Writes JSON with frames/s (end to end: render + serialise + write) and points per scan.
Target: at least 2 frames/s for the ``nuscenes`` rig on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_info, write_results

from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.record import record_drive
from relkd_core.sim.rig import RIGS


def measure(rig_name: str, frames: int, image_format: str, seed: int) -> dict[str, float]:
    rig = RIGS[rig_name]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = record_drive(SyntheticDrive(rig, frames, seed), Path(tmp) / 'bag',
                               storage='mcap', image_format=image_format)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (Path(tmp) / 'bag').iterdir())
    return {
        'frames': frames,
        'seconds': round(elapsed, 3),
        'frames_per_s': round(frames / elapsed, 2),
        'points_per_scan': round(float(np.mean(summary.points_per_scan))),
        'cameras': len(rig.cameras),
        'image_size': f'{rig.cameras[0].width_px}x{rig.cameras[0].height_px}',
        'bag_mb_per_frame': round(size / frames / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/synth.json'))
    parser.add_argument('--frames', type=int, default=40)
    args = parser.parse_args()
    results = {
        'machine': machine_info(),
        'target': 'nuscenes rig >= 2 frames/s',
        'runs': {},
    }
    for rig in ('nuscenes', 'kitti'):
        for image_format in ('raw', 'jpeg'):
            key = f'{rig}/{image_format}'
            results['runs'][key] = measure(rig, args.frames, image_format, seed=0)
            print(key, results['runs'][key], flush=True)
    write_results(args.out, results)


if __name__ == '__main__':
    main()
