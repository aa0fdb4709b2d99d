"""Benchmark: end-to-end latency of ``segment_node``, publish → labeled cloud received.

Run: ``.venv/bin/python bench/bench_node.py --out bench/results/node.json``

The node runs as a separate process (``python -m relkd_ros.segment_node``) on a private ROS
domain with each of ``--threads`` torch threads (0: the node's default, half the cores); this
process
publishes a 34,000-point scan (the first points of a synthetic nuScenes-rig scan, the geometry a
real lidar gives; serialized beforehand, as a C++ driver would) and waits for the labeled cloud
with that stamp before sending the next one, so each figure is one scan through an idle node:
DDS transport both ways (reliable, 1.0 MB in, 0.95 MB out), PointCloud2 parsing,
voxelization, the student, the vocabulary match and the labeled cloud. ``--warmup`` scans are
sent first and not counted.

Models (random-init; latency does not depend on the weights): ``default``, the student of
config/train/synth_relational.yaml (MinkUNet14, width 0.5, 64-d head, 0.2 m voxels) distilled
from a 384-d teacher, and ``small`` (width 0.25, otherwise the same). Targets (idle, p95): 60 ms
for the default model and 40 ms for the small one on the 34k-point scan, 150 ms on the 64-beam
scan (``target_met``).

``--background-load``: each configuration is measured twice, idle and while a process of this
benchmark keeps one core busy (a bounded busy loop, stopped after the measurement and at most
after ``--burner-limit-s``), as drivers, localisation and planning do on a robot. The figure of
merit is the ratio of the loaded p95 to the idle p95 (target <= 2).

The machine may be shared: the 1-minute load average is recorded before and after each model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'test'))

from ros.nodetools import (  # noqa: E402
    Probe,
    free_domain_id,
    node_command,
    node_log_tail,
    stamped_header,
)

from relkd_core.models import StudentConfig  # noqa: E402
from relkd_core.models.distilled import (  # noqa: E402
    DistilledStudent,
    StudentCheckpoint,
    TeacherRef,
    save_checkpoint,
)
from relkd_core.sim.drive import SyntheticDrive  # noqa: E402
from relkd_core.sim.rig import RIGS  # noqa: E402
from relkd_core.teachers.vocabulary import Vocabulary  # noqa: E402
from relkd_ros.environment import node_environment  # noqa: E402
from relkd_ros.params import SegmentParams  # noqa: E402

NUM_POINTS = 34_000
#: Scans: the first 34k points of a nuScenes-rig scan (32 beams), and a whole kitti-rig scan
#: (64 beams, about 122k points, like an HDL-64's).
SCANS = {'nuscenes': ('nuscenes', NUM_POINTS), 'kitti': ('kitti', None)}
KITTI_TARGET_MS = 150.0
TEACHER_DIM = 384
MODELS = {
    'default': (StudentConfig(variant='14', width_multiplier=0.5, out_dim=64, voxel_size_m=0.2,
                              voxelization='cartesian'), 60.0),
    'small': (StudentConfig(variant='14', width_multiplier=0.25, out_dim=64, voxel_size_m=0.2,
                            voxelization='cartesian'), 40.0),
}
VOCABULARY = ('car', 'truck', 'pedestrian', 'driveable_surface', 'sidewalk', 'vegetation',
              'manmade', 'terrain')


def bench_scan(name: str = 'nuscenes') -> np.ndarray:
    """(N, 4) float32 xyzi of one of :data:`SCANS`."""
    rig, count = SCANS[name]
    frame = next(iter(SyntheticDrive(RIGS[rig], 1, seed=0, cameras=False).frames()))
    points = frame.points[:count]
    return np.stack([points['x'], points['y'], points['z'], points['intensity'] / 255.0],
                    axis=1).astype(np.float32)


def write_checkpoint(path: Path, config: StudentConfig) -> int:
    """A random-init student with stored random text embeddings; returns its parameter count."""
    torch.manual_seed(0)
    model = DistilledStudent(config, TEACHER_DIM).eval()
    vocabulary = Vocabulary.from_names(VOCABULARY)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(
        torch.randn(len(vocabulary), TEACHER_DIM, generator=generator), dim=1)
    save_checkpoint(path, StudentCheckpoint(
        student_config=config, teacher=TeacherRef(name='synthetic', config=None,
                                                  id='bench-random'),
        teacher_dim=TEACHER_DIM, state_dict=model.state_dict(), vocabulary=vocabulary,
        text_embeddings=embeddings, run_config={}, step=0))
    return sum(p.numel() for p in model.parameters())


def xyzi_message(scan: np.ndarray, t_ns: int) -> bytes:
    """The scan as a serialized PointCloud2: published as bytes, like a C++ driver, it costs
    the sender no Python conversion, so the figure is the node's."""
    from relkd_ros.conversions import cloud_bytes

    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')])
    return cloud_bytes(stamped_header(t_ns, 'lidar'), scan.view(dtype).reshape(-1))


BURNER = """
import time
end = time.monotonic() + {limit_s}
while time.monotonic() < end:
    pass
"""


def start_burner(limit_s: float) -> subprocess.Popen[bytes]:
    """A process that keeps one core busy for at most ``limit_s`` seconds."""
    return subprocess.Popen([sys.executable, '-c', BURNER.format(limit_s=limit_s)],
                            start_new_session=True)


def measure(checkpoint: Path, scan: np.ndarray, threads: int, warmup: int, repeats: int,
            log_path: Path) -> list[float]:
    """Latencies (seconds) of ``repeats`` scans through a fresh node process with ``threads``
    torch threads (0: the node's default)."""
    from sensor_msgs.msg import PointCloud2

    domain = free_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp')
    env.pop('OMP_NUM_THREADS', None)  # the node sets its own thread count
    # What the launch file adds by default: the shipped DDS profile and passive OpenMP waiting.
    env.update(node_environment(str(ROOT / 'config' / 'fastdds_large_messages.xml')))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    params = {'checkpoint': str(checkpoint), 'min_range_m': 1.0, 'max_range_m': 120.0,
              'diagnostics_period_s': 0.0, 'publish_legend': False, 'num_threads': threads}
    with open(log_path, 'wb') as log:
        node = subprocess.Popen(node_command(params), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    probe = Probe(domain, 'relkd_bench_probe')
    latencies: list[float] = []
    try:
        # Arrival times are taken in the subscription callback and the loop blocks on an
        # event: a polling loop here would wake every few ms and take CPU from the node.
        arrivals: dict[int, float] = {}
        arrived = threading.Condition()

        def on_cloud(msg: Any) -> None:
            now = time.perf_counter()
            with arrived:
                arrivals[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = now
                arrived.notify_all()

        probe.node.create_subscription(PointCloud2, 'labeled_points', on_cloud, probe.qos())
        publisher = probe.publisher(PointCloud2, 'points')
        if not probe.wait_matched(publisher, 120):
            raise RuntimeError(f'the node never subscribed\n{node_log_tail(log_path)}')
        for i in range(warmup + repeats):
            t_ns = (1000 + i) * 1_000_000_000
            message = xyzi_message(scan, t_ns)
            sent = time.perf_counter()
            publisher.publish(message)
            with arrived:
                if not arrived.wait_for(lambda t_ns=t_ns: t_ns in arrivals, timeout=120):
                    raise RuntimeError(f'no labeled cloud for scan {i}\n'
                                       f'{node_log_tail(log_path)}')
            if i >= warmup:
                latencies.append(arrivals[t_ns] - sent)
            time.sleep(0.05)
    finally:
        probe.close()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    return latencies


def summarize(latencies_s: list[float]) -> dict[str, Any]:
    latencies = np.asarray(latencies_s) * 1e3
    return {'latency_ms_p50': round(float(np.percentile(latencies, 50)), 1),
            'latency_ms_p95': round(float(np.percentile(latencies, 95)), 1),
            'latency_ms_min': round(float(latencies.min()), 1),
            'latency_ms_max': round(float(latencies.max()), 1),
            'latencies_ms': [round(float(v), 2) for v in latencies]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=ROOT / 'bench' / 'results' / 'node.json')
    parser.add_argument('--threads', type=int, nargs='+', default=[0],
                        help="torch threads of the node, one run each (0: the node's default)")
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=40)
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--scans', nargs='+', default=['nuscenes'], choices=list(SCANS),
                        help='nuscenes: 34k points (32 beams); kitti: a whole 64-beam scan')
    parser.add_argument('--background-load', action='store_true',
                        help='measure each case idle and with one core kept busy')
    parser.add_argument('--burner-limit-s', type=float, default=600.0,
                        help='the busy process stops by itself after this long')
    parser.add_argument('--no-dds-profile', action='store_true',
                        help='do not give this process the shipped Fast DDS profile')
    args = parser.parse_args()
    # This side uses the node's large-message Fast DDS profile too (as the README asks of
    # every process exchanging clouds with the node); without it a 1 MB cloud goes as UDP
    # fragments. --no-dds-profile measures that case.
    if not args.no_dds_profile:
        os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                              str(ROOT / 'config' / 'fastdds_large_messages.xml'))
    scans = {name: bench_scan(name) for name in args.scans}
    loads = ('idle', 'one_core_busy') if args.background_load else ('idle',)
    results: dict[str, Any] = {'machine': machine_info(),
                               'scans': {name: len(scan) for name, scan in scans.items()},
                               'node_default_threads': SegmentParams(checkpoint='x').threads(),
                               'warmup': args.warmup,
                               'dds_profile_both_sides': not args.no_dds_profile,
                               'repeats': args.repeats, 'runs': []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            config, model_target_ms = MODELS[name]
            checkpoint = Path(tmp) / f'{name}.pt'
            parameters = write_checkpoint(checkpoint, config)
            for (scan_name, scan), threads in itertools.product(scans.items(), args.threads):
                target_ms = KITTI_TARGET_MS if scan_name == 'kitti' else model_target_ms
                figures: dict[str, Any] = {}
                for load in loads:
                    load_before = round(os.getloadavg()[0], 2)
                    burner = start_burner(args.burner_limit_s) if load != 'idle' else None
                    try:
                        latencies = measure(checkpoint, scan, threads, args.warmup,
                                            args.repeats, Path(tmp) / f'{name}.log')
                    finally:
                        if burner is not None:
                            burner.kill()
                            burner.wait()
                    figures[load] = {**summarize(latencies),
                                     'load_average_1min_before': load_before,
                                     'load_average_1min_after': round(os.getloadavg()[0], 2)}
                idle_p95 = figures['idle']['latency_ms_p95']
                run = {'model': name, 'scan': scan_name, 'num_points': len(scan),
                       'threads': threads,
                       'threads_used': threads or results['node_default_threads'],
                       'width_multiplier': config.width_multiplier, 'out_dim': config.out_dim,
                       'voxel_size_m': config.voxel_size_m, 'teacher_dim': TEACHER_DIM,
                       'parameters': parameters, 'target_p95_ms': target_ms,
                       'target_met': idle_p95 <= target_ms, **figures}
                if 'one_core_busy' in figures:
                    ratio = figures['one_core_busy']['latency_ms_p95'] / idle_p95
                    run['busy_over_idle_p95'] = round(ratio, 2)
                results['runs'].append(run)
                rows.append(run)
    write_results(args.out, results)
    print(f'\nload average {results["machine"]["load_average_1min"]} at start\n')
    print('| model | scan | threads | p50 ms idle | p95 ms idle | p95 ms one core busy | '
          'busy/idle | target p95 ms (idle) |')
    print('|---|---|---|---|---|---|---|---|')
    for run in rows:
        busy = run.get('one_core_busy', {})
        default = ' (default)' if not run['threads'] else ''
        print(f"| {run['model']} | {run['scan']} ({run['num_points']:,}) | "
              f"{run['threads_used']}{default}"
              f" | {run['idle']['latency_ms_p50']:.1f} | {run['idle']['latency_ms_p95']:.1f} | "
              f"{busy.get('latency_ms_p95', float('nan')):.1f} | "
              f"{run.get('busy_over_idle_p95', float('nan')):.2f} | {run['target_p95_ms']:.0f} |")


if __name__ == '__main__':
    main()
