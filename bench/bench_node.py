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

``--backends``: the sparse backend written into the checkpoint, one node per backend:
``native`` (the compiled fast path, built on first use) beside ``native-ref`` (the PyTorch
reference). ``--rounds``: the whole grid (model × scan × backend) is measured that many times,
cases alternating within each round, so load from other processes hits all cases alike; the
table gives the median p95 over the rounds and its spread (min–max).

Beside the node figures it records, per model and scan, in this process:

- the *matmul floor* of one labelling forward: the floating-point operations of every matrix
  product of the forward (``Labeler.label``'s student and vocabulary match, counted op by op on
  the reference path), divided by the rate of one large float32 matrix product with the node's
  thread count. Target: node p95 <= 2 × floor + 10 ms.
- ``Labeler.label`` alone (no ROS), fast and reference alternating, and a profile summary of
  one label call per backend (the top operators by self time, torch.profiler);
- the cold start: building the compiled fast path in an empty extension cache (a fresh
  process), loading it from the cache, the first scan of a fresh Labeler, and what the node
  does: a Labeler with its warm-up scan (``Labeler.warm_up``), then the first real scan.

The machine may be shared: the 1-minute load average is recorded before and after each model.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, profile_summary, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'test'))

from bench_sparse import MatmulFlops, gemm_peak_gflops  # noqa: E402
from ros.nodetools import (  # noqa: E402
    Probe,
    free_domain_id,
    node_command,
    node_log_tail,
    stamped_header,
)

from relkd_core.infer.labeler import Labeler  # noqa: E402
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


def write_checkpoint(path: Path, config: StudentConfig, backend: str = 'native') -> int:
    """A random-init student with stored random text embeddings; returns its parameter count.
    The weights do not depend on ``backend``, which is only written into the config."""
    config = dataclasses.replace(config, backend=backend)  # type: ignore[arg-type]
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
    parser.add_argument('--backends', nargs='+', default=['native', 'native-ref'],
                        choices=['native', 'native-ref'],
                        help='sparse backend of the node: the fast path and the reference')
    parser.add_argument('--rounds', type=int, default=3,
                        help='measure the whole grid this many times (cases alternating)')
    parser.add_argument('--skip-in-process', action='store_true',
                        help='skip the in-process Labeler timing, floor, profile, cold start')
    args = parser.parse_args()
    # This side uses the node's large-message Fast DDS profile too (as the README asks of
    # every process exchanging clouds with the node); without it a 1 MB cloud goes as UDP
    # fragments. --no-dds-profile measures that case.
    if not args.no_dds_profile:
        os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE',
                              str(ROOT / 'config' / 'fastdds_large_messages.xml'))
    scans = {name: bench_scan(name) for name in args.scans}
    loads = ('idle', 'one_core_busy') if args.background_load else ('idle',)
    default_threads = SegmentParams(checkpoint='x').threads()
    results: dict[str, Any] = {'machine': machine_info(),
                               'scans': {name: len(scan) for name, scan in scans.items()},
                               'node_default_threads': default_threads,
                               'warmup': args.warmup,
                               'dds_profile_both_sides': not args.no_dds_profile,
                               'repeats': args.repeats, 'rounds': args.rounds,
                               'backends': args.backends, 'runs': []}
    if not args.skip_in_process:
        results['cold_start'] = cold_start(scans[next(iter(scans))], args.models[0])
        results['in_process'] = in_process(scans, args, default_threads)
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints: dict[tuple[str, str], tuple[Path, int]] = {}
        for name, backend in itertools.product(args.models, args.backends):
            checkpoint = Path(tmp) / f'{name}-{backend}.pt'
            checkpoints[(name, backend)] = (checkpoint, write_checkpoint(
                checkpoint, MODELS[name][0], backend))
        for round_index in range(args.rounds):
            cases = list(itertools.product(args.models, scans, args.threads, args.backends))
            if round_index % 2:
                cases.reverse()  # alternate the order: no case always runs first or last
            for name, scan_name, threads, backend in cases:
                config, model_target_ms = MODELS[name]
                checkpoint, parameters = checkpoints[(name, backend)]
                scan = scans[scan_name]
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
                run = {'round': round_index, 'model': name, 'scan': scan_name,
                       'backend': backend, 'num_points': len(scan), 'threads': threads,
                       'threads_used': threads or default_threads,
                       'width_multiplier': config.width_multiplier, 'out_dim': config.out_dim,
                       'voxel_size_m': config.voxel_size_m, 'teacher_dim': TEACHER_DIM,
                       'parameters': parameters, 'target_p95_ms': target_ms,
                       'target_met': idle_p95 <= target_ms, **figures}
                if 'one_core_busy' in figures:
                    ratio = figures['one_core_busy']['latency_ms_p95'] / idle_p95
                    run['busy_over_idle_p95'] = round(ratio, 2)
                results['runs'].append(run)
                rows.setdefault((name, scan_name, backend, threads), run)
                print(f"round {round_index}: {name} {scan_name} {backend} threads {threads}: "
                      f"p95 {idle_p95:.1f} ms", flush=True)
    results['summary'] = summary(results)
    write_results(args.out, results)
    print(f'\nload average {results["machine"]["load_average_1min"]} at start\n')
    print(markdown(results))


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case (model, scan, backend, threads): p95 of each round, their median and spread,
    and the ratio to the labelling forward's matmul floor."""
    floors = {(entry['model'], entry['scan'], entry['threads']): entry['matmul_floor_ms']
              for entry in results.get('in_process', {}).get('cases', [])}
    grouped: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for run in results['runs']:
        key = (run['model'], run['scan'], run['backend'], run['threads_used'])
        grouped.setdefault(key, []).append(run)
    rows = []
    for (model, scan, backend, threads), runs in grouped.items():
        p95s = [run['idle']['latency_ms_p95'] for run in runs]
        p50s = [run['idle']['latency_ms_p50'] for run in runs]
        floor = floors.get((model, scan, threads))
        median_p95 = statistics.median(p95s)
        row = {'model': model, 'scan': scan, 'backend': backend, 'threads': threads,
               'num_points': runs[0]['num_points'], 'p95_ms_per_round': p95s,
               'p95_ms_median': round(median_p95, 1), 'p95_ms_min': min(p95s),
               'p95_ms_max': max(p95s), 'p50_ms_median': round(statistics.median(p50s), 1),
               'target_p95_ms': runs[0]['target_p95_ms'],
               'target_met': median_p95 <= runs[0]['target_p95_ms']}
        if floor is not None:
            row['matmul_floor_ms'] = floor
            row['floor_target_ms'] = round(2 * floor + 10.0, 1)
            row['p95_over_floor'] = round(median_p95 / floor, 2)
            row['floor_target_met'] = median_p95 <= 2 * floor + 10.0
        rows.append(row)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ['| model | scan | backend | threads | p95 ms (median of rounds) | spread | '
             'p50 ms | target | matmul floor ms | 2×floor+10 | p95/floor |',
             '|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|']
    for row in results['summary']:
        floor = row.get('matmul_floor_ms', float('nan'))
        lines.append(
            f"| {row['model']} | {row['scan']} ({row['num_points']:,}) | {row['backend']} | "
            f"{row['threads']} | {row['p95_ms_median']:.1f} | {row['p95_ms_min']:.0f}–"
            f"{row['p95_ms_max']:.0f} | {row['p50_ms_median']:.1f} | {row['target_p95_ms']:.0f}"
            f" | {floor:.1f} | {row.get('floor_target_ms', float('nan')):.0f} | "
            f"{row.get('p95_over_floor', float('nan')):.2f} |")
    in_process = results.get('in_process')
    if in_process:
        lines += ['', f"Labeler.label in process ({in_process['threads']} thread(s)), ms, "
                  'median [min–max] over the rounds:', '',
                  '| model | scan | fast (native) | reference (native-ref) | ref/fast | '
                  'matmul floor |', '|---|---|---:|---:|---:|---:|']
        for case in in_process['cases']:
            fast, ref = case['label_ms']['native'], case['label_ms']['native-ref']
            lines.append(
                f"| {case['model']} | {case['scan']} | {fast['median']:.1f} "
                f"[{fast['min']:.0f}–{fast['max']:.0f}] | {ref['median']:.1f} "
                f"[{ref['min']:.0f}–{ref['max']:.0f}] | {ref['median'] / fast['median']:.2f} | "
                f"{case['matmul_floor_ms']:.1f} |")
    cold = results.get('cold_start')
    if cold:
        lines += ['', f"cold start: build {cold['build_s']:.1f} s (empty cache), load from "
                  f"cache {cold['cached_load_s']:.1f} s, first scan of a fresh Labeler "
                  f"{cold['first_scan_s']:.2f} s; with the node's warm-up: ready (load + warm-up "
                  f"scan) in {cold['node_ready_s']:.2f} s, then its first scan "
                  f"{cold['first_scan_after_warm_up_s'] * 1e3:.0f} ms"]
    return '\n'.join(lines)


def label_flops(model: DistilledStudent, scan: torch.Tensor, embeddings: torch.Tensor) -> int:
    """Floating-point operations of the matrix products of one labelling forward (counted on
    the reference path, which runs every product through torch)."""
    from relkd_core.models.inference import best_entries

    reference = DistilledStudent(dataclasses.replace(model.config, backend='native-ref'),
                                 model.teacher_dim).eval()
    reference.load_state_dict(model.state_dict())
    with MatmulFlops() as counter:
        best_entries(reference, scan, embeddings)
    return counter.flops


def in_process(scans: dict[str, np.ndarray], args: argparse.Namespace,
               threads: int) -> dict[str, Any]:
    """Labeler.label without ROS, fast and reference alternating; the labelling forward's
    matmul floor; a profile summary per backend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    peak = gemm_peak_gflops(torch.device('cpu'))
    cases = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, (scan_name, scan) in itertools.product(args.models, scans.items()):
                labelers = {}
                for backend in ('native', 'native-ref'):
                    path = Path(tmp) / f'{name}-{backend}.pt'
                    write_checkpoint(path, MODELS[name][0], backend)
                    labelers[backend] = Labeler(path, min_range_m=1.0, max_range_m=120.0)
                points = torch.from_numpy(scan)
                distance = points[:, :3].norm(dim=1)
                valid = points[(distance >= 1.0) & (distance <= 120.0)]
                fast = labelers['native']
                flops = label_flops(fast.model, valid, fast.embeddings)
                agree = float(np.mean(fast.label(scan).labels
                                      == labelers['native-ref'].label(scan).labels))
                times: dict[str, list[float]] = {backend: [] for backend in labelers}
                for _ in range(2):
                    for labeler in labelers.values():
                        labeler.label(scan)
                for round_index in range(args.rounds * 4):
                    order = list(labelers.items())
                    for backend, labeler in order[::-1] if round_index % 2 else order:
                        start = time.perf_counter()
                        labeler.label(scan)
                        times[backend].append((time.perf_counter() - start) * 1e3)
                profiles = {backend: profile_summary(functools.partial(labeler.label, scan))
                            for backend, labeler in labelers.items()}
                cases.append({
                    'model': name, 'scan': scan_name, 'threads': threads,
                    'points_fed': len(valid), 'matmul_gflop': round(flops / 1e9, 3),
                    'matmul_floor_ms': round(flops / 1e9 / peak * 1e3, 1),
                    'labels_equal_fast_vs_reference': agree,
                    'label_ms': {backend: {'median': round(statistics.median(v), 1),
                                           'min': round(min(v), 1), 'max': round(max(v), 1),
                                           'all': [round(t, 1) for t in v]}
                                 for backend, v in times.items()},
                    'profile_one_label': profiles})
                print(f'in process: {name} {scan_name}: fast '
                      f"{cases[-1]['label_ms']['native']['median']} ms, reference "
                      f"{cases[-1]['label_ms']['native-ref']['median']} ms, floor "
                      f"{cases[-1]['matmul_floor_ms']} ms", flush=True)
    finally:
        torch.set_num_threads(previous)
    return {'threads': threads, 'gemm_peak_gflops': round(peak, 1), 'cases': cases}


COLD_START = """
import time, torch
start = time.perf_counter()
from relkd_core.models.sparse import native_fast
assert native_fast.fast_ops() is not None, 'the fast path did not build'
print(time.perf_counter() - start)
"""


def cold_start(scan: np.ndarray, model: str) -> dict[str, Any]:
    """Seconds to build the fast path in an empty extension cache, to load it from the cache
    (each in a fresh process), and of the first scan of a fresh Labeler (fast path loaded)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(Path(tmp) / 'cache'),
                   PYTHONPATH=str(ROOT))
        timings = []
        for _ in range(2):
            done = subprocess.run([sys.executable, '-c', COLD_START], env=env, cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            timings.append(float(done.stdout.strip().splitlines()[-1]))
        path = Path(tmp) / 'model.pt'
        write_checkpoint(path, MODELS[model][0])
        start = time.perf_counter()
        labeler = Labeler(path, min_range_m=1.0, max_range_m=120.0)
        labeler.label(scan)
        first = time.perf_counter() - start
        # What the node does: a warm-up scan at start-up, then the first real scan.
        started = time.perf_counter()
        warmed = Labeler(path, min_range_m=1.0, max_range_m=120.0)
        warm_up = warmed.warm_up()
        ready = time.perf_counter() - started
        start = time.perf_counter()
        warmed.label(scan)
        after_warm_up = time.perf_counter() - start
    return {'build_s': round(timings[0], 1), 'cached_load_s': round(timings[1], 1),
            'first_scan_s': round(first, 2), 'node_ready_s': round(ready, 2),
            'warm_up_s': round(warm_up, 2), 'first_scan_after_warm_up_s': round(after_warm_up, 3),
            'load_average_1min': round(os.getloadavg()[0], 2)}


if __name__ == '__main__':
    main()
