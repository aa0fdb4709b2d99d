"""Benchmark: relkd-convert throughput (scans/s, MB/s) on nuScenes- and SemanticKITTI-sized data.

Run: ``.venv/bin/python bench/bench_convert.py --out bench/results/convert.json``
The synthetic world writes two scenes (sequences) in each dataset's own layout; its camera
images are then re-encoded at the datasets' real sizes (nuScenes 1600×900 JPEG, KITTI
1241×376 PNG) so that the bytes copied per keyframe are those of the real data, while the
lidar scans keep their simulated size (about 37k points for nuScenes' 32 beams, 120k for
KITTI's 64). Conversion (reading the tables, checking every file, writing MCAP bags) is timed
with 1 and 2 worker processes.
Target: at least 20 keyframes/s for nuScenes without sweeps on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

from common import machine_info, write_results
from PIL import Image

from relkd_core.datasets.convert import convert_scenes
from relkd_core.datasets.nuscenes import NuScenes
from relkd_core.datasets.semantickitti import SemanticKitti
from relkd_core.sim.drive import SyntheticDrive
from relkd_core.sim.native import write_nuscenes, write_semantickitti
from relkd_core.sim.rig import RIGS

NUSCENES_IMAGE = (1600, 900)
KITTI_IMAGE = (1241, 376)


def _resize_images(files: list[Path], size: tuple[int, int], fmt: str) -> int:
    """Re-encode ``files`` at ``size`` in place; returns the bytes written."""
    total = 0
    for path in files:
        with Image.open(path) as image:
            big = image.convert('RGB').resize(size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        big.save(buffer, format=fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
        path.write_bytes(buffer.getvalue())
        total += len(buffer.getvalue())
    return total


def nuscenes_dataset(root: Path, frames: int) -> Path:
    half = frames // 2
    drives = [(f'scene-{i + 1:04d}', SyntheticDrive(RIGS['nuscenes'], half, seed=i))
              for i in range(2)]
    write_nuscenes(drives, root)
    _resize_images(sorted(root.glob('samples/CAM_*/*.jpg')), NUSCENES_IMAGE, 'JPEG')
    table = root / 'v1.0-mini' / 'sample_data.json'
    rows = json.loads(table.read_text())
    for row in rows:
        if row['fileformat'] == 'jpg':
            row['width'], row['height'] = NUSCENES_IMAGE
    table.write_text(json.dumps(rows))
    return root


def kitti_dataset(root: Path, frames: int) -> Path:
    half = frames // 2
    for i, sequence in enumerate(('00', '01')):
        write_semantickitti(SyntheticDrive(RIGS['kitti'], half, seed=i), root, sequence)
    _resize_images(sorted(root.glob('sequences/*/image_*/*.png')), KITTI_IMAGE, 'PNG')
    return root


def measure(scenes: list, out: Path, workers: int) -> dict[str, float]:  # type: ignore[type-arg]
    started = time.perf_counter()
    summary = convert_scenes(scenes, out, workers=workers)
    elapsed = time.perf_counter() - started
    megabytes = summary.bytes_read / 1e6
    return {'workers': workers, 'bags': len(summary.bags), 'scans': summary.scans,
            'images': summary.images, 'seconds': round(elapsed, 3),
            'scans_per_s': round(summary.scans / elapsed, 1),
            'megabytes': round(megabytes, 1), 'megabytes_per_s': round(megabytes / elapsed, 1),
            'points_per_scan': round(summary.points / max(summary.scans, 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/convert.json'))
    parser.add_argument('--frames', type=int, default=40,
                        help='keyframes (scans) per dataset, split over two scenes')
    args = parser.parse_args()
    results: dict[str, object] = {
        'machine': machine_info(),
        'target': 'nuScenes keyframes without sweeps >= 20 scans/s',
        'data': {'nuscenes': f'{args.frames} keyframes, 6 JPEG {NUSCENES_IMAGE[0]}x'
                             f'{NUSCENES_IMAGE[1]} per keyframe, lidarseg labels',
                 'semantickitti': f'{args.frames} scans, 2 PNG {KITTI_IMAGE[0]}x'
                                  f'{KITTI_IMAGE[1]} per scan, labels'},
        'runs': {},
    }
    runs: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        nusc_root = nuscenes_dataset(Path(tmp) / 'nuscenes', args.frames)
        kitti_root = kitti_dataset(Path(tmp) / 'kitti', args.frames)
        for workers in (1, 2):
            started = time.perf_counter()
            nusc = NuScenes(nusc_root)
            scenes = [nusc.scene(name) for name in nusc.scene_names()]
            checked = time.perf_counter() - started
            key = f'nuscenes/workers={workers}'
            runs[key] = {**measure(scenes, Path(tmp) / f'nusc_{workers}', workers),
                         'table_and_check_seconds': round(checked, 3)}
            print(key, runs[key], flush=True)
            kitti = SemanticKitti(kitti_root)
            sequences = [kitti.sequence(name) for name in kitti.sequence_names()]
            key = f'semantickitti/workers={workers}'
            runs[key] = measure(sequences, Path(tmp) / f'kitti_{workers}', workers)
            print(key, runs[key], flush=True)
    results['runs'] = runs
    write_results(args.out, results)


if __name__ == '__main__':
    main()
