"""Benchmark: time and peak memory of the distillation losses (forward + backward).

Run: ``.venv/bin/python bench/bench_losses.py --out bench/results/losses.json``

For N point-pixel pairs of D = 512 float32 features (random normal, seeded; the cost does not
depend on the values), each loss runs forward and backward: point features require grad, pixel
features (the frozen teacher's) do not. Losses: ``contrastive`` (InfoNCE, τ = 0.07),
``similarity``, ``relational`` (the blocked default at its default ``block_size``) and
``relational_dense`` (the autograd reference), the last skipped where its estimated peak does not
fit in half the available memory. At the sweep sizes of N, the relational loss also runs at each
``block_size`` of the sweep.

Time: median of the repeats after one warm-up round (its times are kept as ``ms_first``: a cold
first call pays page faults on fresh memory and is not what training sees). All the calls of
one N are interleaved (A, B, C, A, B, C, ...), so that load from other processes hits every loss
and block size alike and the ratios stay fair. Threads: torch's default (recorded).

Peak memory on CPU: each (loss, N, block_size) runs in a fresh process (the allocator keeps freed
pages for reuse, so a second call in one process can hide its peak). That process builds its
inputs, makes one tiny call (lazy library set-up is not counted), resets the kernel's peak
resident-set mark (``echo 5 > /proc/self/clear_refs``), reads its resident set R0, makes one
full call (forward + backward, the gradient included) and reads the mark, ``VmHWM`` of
/proc/self/status. Peak extra memory = VmHWM - R0. Not ``ru_maxrss``: Linux carries the parent's
resident set into a child's ``ru_maxrss`` across fork + exec, so a child of this (large) process
would report the parent's size. On CUDA (when available), the same cases also run on the GPU,
memory as ``torch.cuda.max_memory_allocated`` minus the allocation before the call.

Target: the relational loss at most 2x the InfoNCE time at N = 4096 (``target_met``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import machine_info, write_results

from relkd_core.losses import (
    LossConfig,
    LossOutput,
    contrastive_loss,
    relational_loss,
    relational_loss_dense,
    similarity_loss,
)

FEATURE_DIM = 512
TEMPERATURE = 0.07
DEFAULT_BLOCK_SIZE = LossConfig().block_size  # the training default, benchmarked as 'relational'
TARGET_PAIRS = 4096
TARGET_RATIO = 2.0
LOSSES = ('contrastive', 'similarity', 'relational', 'relational_dense')
# The dense reference holds about this many N×N float32 matrices at its peak (measured on CPU:
# 2.6 GiB at N = 8192, 10.4 matrices; rounded up); the estimate gates whether it runs at all.
DENSE_MATRICES = 12
MIB = 2**20

LossFn = Callable[[torch.Tensor, torch.Tensor], LossOutput]


def loss_function(name: str, block_size: int = DEFAULT_BLOCK_SIZE) -> LossFn:
    """The loss ``name`` with the benchmark's settings."""
    if name == 'contrastive':
        return lambda k, q: contrastive_loss(k, q, temperature=TEMPERATURE)
    if name == 'similarity':
        return similarity_loss
    if name == 'relational':
        return lambda k, q: relational_loss(k, q, block_size=block_size)
    if name == 'relational_dense':
        return relational_loss_dense
    raise ValueError(f'unknown loss {name!r}; expected one of {list(LOSSES)}')


def make_pairs(num_pairs: int, device: torch.device, seed: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) float32 point features (requires grad) and pixel features (no grad)."""
    generator = torch.Generator().manual_seed(seed)
    point = torch.randn(num_pairs, FEATURE_DIM, generator=generator)
    pixel = torch.randn(num_pairs, FEATURE_DIM, generator=generator)
    return point.to(device).requires_grad_(True), pixel.to(device)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_call(fn: LossFn, point: torch.Tensor, pixel: torch.Tensor) -> float:
    """One forward + backward, in ms; clears the gradient afterwards."""
    _sync(point.device)
    start = time.perf_counter()
    fn(point, pixel).total.backward()
    _sync(point.device)
    elapsed = (time.perf_counter() - start) * 1000.0
    point.grad = None
    return elapsed


def time_interleaved(fns: dict[str, LossFn], point: torch.Tensor, pixel: torch.Tensor,
                     repeats: int) -> dict[str, dict[str, Any]]:
    """Median ms of each function over ``repeats`` interleaved rounds, after one warm-up round."""
    first = {name: timed_call(fn, point, pixel) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed_call(fn, point, pixel))
    return {name: {'ms': round(statistics.median(times[name]), 1),
                   'ms_all': [round(t, 1) for t in times[name]],
                   'ms_first': round(first[name], 1)} for name in fns}


def _status_bytes(field: str) -> int:
    with open('/proc/self/status', encoding='ascii') as stream:
        for line in stream:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f'/proc/self/status has no {field}')


def probe_memory(loss: str, num_pairs: int, block_size: int, device: torch.device
                 ) -> dict[str, Any]:
    """Peak extra memory of one forward + backward (on CPU, run in a fresh process)."""
    fn = loss_function(loss, block_size)
    tiny_point, tiny_pixel = make_pairs(64, device, seed=1)
    fn(tiny_point, tiny_pixel).total.backward()  # lazy set-up of kernels and autograd
    del tiny_point, tiny_pixel
    point, pixel = make_pairs(num_pairs, device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(point, pixel).total.backward()
        torch.cuda.synchronize(device)
        return {'peak_mib': round((torch.cuda.max_memory_allocated(device) - base) / MIB, 1),
                'peak_exact': True}
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as stream:
            stream.write('5')  # reset VmHWM to the current resident set
        reset = True
    except OSError:
        reset = False
    base, mark_before = _status_bytes('VmRSS'), _status_bytes('VmHWM')
    fn(point, pixel).total.backward()
    mark_after = _status_bytes('VmHWM')
    # Without the reset, a mark set earlier (imports) may hide the call's own peak: upper bound.
    return {'peak_mib': round((mark_after - base) / MIB, 1),
            'peak_exact': reset or mark_after > mark_before}


def measure_memory(loss: str, num_pairs: int, block_size: int, device: torch.device
                   ) -> dict[str, Any]:
    if device.type == 'cuda':
        peak = probe_memory(loss, num_pairs, block_size, device)
        torch.cuda.empty_cache()
        return peak
    command = [sys.executable, __file__, '--probe-memory', loss, '--pairs', str(num_pairs),
               '--block-size', str(block_size)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def dense_fits(num_pairs: int, device: torch.device) -> tuple[bool, str]:
    """Whether the dense reference's estimated peak fits in half the available memory."""
    if device.type == 'cuda':
        available = torch.cuda.mem_get_info(device)[0]
    else:
        available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    estimate = DENSE_MATRICES * num_pairs**2 * 4
    if estimate <= available // 2:
        return True, ''
    return False, (f'estimated peak {estimate / MIB:.0f} MiB > half of the available '
                   f'{available / MIB:.0f} MiB')


def estimate_bytes(num_pairs: int, block_size: int) -> int:
    """relational_loss's documented estimate: 2·N² bytes of signs, 5·B·N floats of block
    temporaries, 6·N·D floats of normalised copies and gradients."""
    return 2 * num_pairs**2 + 4 * (5 * block_size * num_pairs + 6 * num_pairs * FEATURE_DIM)


def sweep_sizes(num_pairs: int, block_sizes: list[int]) -> list[int]:
    return sorted({min(b, num_pairs) for b in [*block_sizes, num_pairs]})


def run_case(num_pairs: int, block_sizes: list[int], repeats: int, device: torch.device
             ) -> dict[str, Any]:
    """Every loss at one N, plus the relational block sweep when ``block_sizes`` is not empty."""
    fits, reason = dense_fits(num_pairs, device)
    names = [name for name in LOSSES if fits or name != 'relational_dense']
    fns = {name: loss_function(name) for name in names}
    sizes = sweep_sizes(num_pairs, block_sizes) if block_sizes else []
    fns.update({f'relational@{b}': loss_function('relational', b)
                for b in sizes if b != DEFAULT_BLOCK_SIZE})
    point, pixel = make_pairs(num_pairs, device)
    timing = time_interleaved(fns, point, pixel, repeats)
    del point, pixel
    losses: dict[str, Any] = {}
    for name in LOSSES:
        if name not in names:
            losses[name] = {'skipped': reason}
            continue
        losses[name] = {**timing[name],
                        **measure_memory(name, num_pairs, DEFAULT_BLOCK_SIZE, device)}
    contrastive_ms = losses['contrastive']['ms']
    ratios = {f'{name}/contrastive': round(losses[name]['ms'] / contrastive_ms, 3)
              for name in ('relational', 'relational_dense') if 'ms' in losses[name]}
    case: dict[str, Any] = {'pairs': num_pairs, 'repeats': repeats, 'losses': losses,
                            'ratios': ratios}
    if sizes:
        rows = []
        for b in sizes:
            if b == DEFAULT_BLOCK_SIZE:
                entry = losses['relational']
            else:
                entry = {**timing[f'relational@{b}'],
                         **measure_memory('relational', num_pairs, b, device)}
            rows.append({'block_size': b, **entry,
                         'ratio_to_contrastive': round(entry['ms'] / contrastive_ms, 3),
                         'estimate_mib': round(estimate_bytes(num_pairs, b) / MIB, 1)})
        case['block_size_sweep'] = rows
    print(f'{device.type}: N = {num_pairs} done', flush=True)
    return case


def recommend_block_size(cases: list[dict[str, Any]], tolerance: float = 0.05
                         ) -> dict[str, Any]:
    """The smallest block size (least memory) whose time, relative to the fastest block size at
    each swept N and averaged over the swept N, is within ``tolerance`` of the best average."""
    sweeps = [case['block_size_sweep'] for case in cases if 'block_size_sweep' in case]
    if not sweeps:
        return {'block_size': None, 'rule': 'no sweep'}
    relative: dict[int, list[float]] = {}
    for rows in sweeps:
        fastest = min(row['ms'] for row in rows)
        for row in rows:
            relative.setdefault(row['block_size'], []).append(row['ms'] / fastest)
    common = {b: statistics.fmean(r) for b, r in relative.items() if len(r) == len(sweeps)}
    best = min(common.values())
    chosen = min(b for b, r in common.items() if r <= best * (1.0 + tolerance))
    return {'block_size': chosen,
            'time_relative_to_fastest': {str(b): round(r, 3) for b, r in sorted(common.items())},
            'rule': (f'smallest block size whose time relative to the fastest (mean over the '
                     f'swept N) is within {100 * tolerance:.0f}% of the best; smaller blocks '
                     'use less memory')}


def section(pairs: list[int], sweep_pairs: list[int], block_sizes: list[int], repeats: int,
            large_repeats: int, device: torch.device) -> dict[str, Any]:
    cases = [run_case(n, block_sizes if n in sweep_pairs else [],
                      repeats if n <= TARGET_PAIRS else large_repeats, device) for n in pairs]
    at_target = next((c for c in cases if c['pairs'] == TARGET_PAIRS), None)
    ratio = at_target['ratios']['relational/contrastive'] if at_target else None
    return {'device': str(device), 'cases': cases,
            'target_ratio_at_4096': ratio,
            'target_met': None if ratio is None else ratio <= TARGET_RATIO,
            'recommended_block_size': recommend_block_size(cases)}


def markdown(title: str, results: dict[str, Any]) -> str:
    lines = [f'\n### {title}', '', '| N | loss | ms (median) | ms first | peak MiB |',
             '|---:|---|---:|---:|---:|']
    for case in results['cases']:
        for loss, entry in case['losses'].items():
            if 'skipped' in entry:
                lines.append(f"| {case['pairs']} | {loss} | skipped | | |")
                continue
            flag = '' if entry['peak_exact'] else ' (≤)'
            lines.append(f"| {case['pairs']} | {loss} | {entry['ms']:.1f} | "
                         f"{entry['ms_first']:.1f} | {entry['peak_mib']:.1f}{flag} |")
    lines += ['', '| N | relational / contrastive | dense / contrastive |', '|---:|---:|---:|']
    for case in results['cases']:
        dense = case['ratios'].get('relational_dense/contrastive')
        lines.append(f"| {case['pairs']} | {case['ratios']['relational/contrastive']:.2f} | "
                     f"{'' if dense is None else f'{dense:.2f}'} |")
    lines += ['', '| N | block_size | ms (median) | ms first | / contrastive | peak MiB | '
              'estimate MiB |', '|---:|---:|---:|---:|---:|---:|---:|']
    for case in results['cases']:
        for row in case.get('block_size_sweep', []):
            lines.append(f"| {case['pairs']} | {row['block_size']} | {row['ms']:.1f} | "
                         f"{row['ms_first']:.1f} | {row['ratio_to_contrastive']:.2f} | "
                         f"{row['peak_mib']:.1f} | {row['estimate_mib']:.1f} |")
    ratio = results['target_ratio_at_4096']
    lines += ['', f'target relational <= {TARGET_RATIO}x InfoNCE at N = {TARGET_PAIRS}: '
              f"ratio {ratio}, met: {results['target_met']}",
              f"recommended block_size: {results['recommended_block_size']}"]
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=Path('bench/results/losses.json'))
    parser.add_argument('--pairs', type=int, nargs='+', default=[1024, 4096, 8192])
    parser.add_argument('--sweep-pairs', type=int, nargs='+', default=[4096, 8192])
    parser.add_argument('--block-sizes', type=int, nargs='+',
                        default=[128, 256, 512, 1024, 4096], help='N is always added')
    parser.add_argument('--repeats', type=int, default=5, help=f'rounds at N <= {TARGET_PAIRS}')
    parser.add_argument('--large-repeats', type=int, default=3,
                        help=f'rounds at N > {TARGET_PAIRS} (seconds per call)')
    parser.add_argument('--probe-memory', choices=LOSSES, help=argparse.SUPPRESS)
    parser.add_argument('--block-size', type=int, default=DEFAULT_BLOCK_SIZE,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_memory:  # the fresh process of one CPU memory measurement
        peak = probe_memory(args.probe_memory, args.pairs[0], args.block_size,
                            torch.device('cpu'))
        print(json.dumps(peak))
        return

    started = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    results: dict[str, Any] = {
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'feature_dim': FEATURE_DIM,
        'dtype': 'float32',
        'temperature': TEMPERATURE,
        'default_block_size': DEFAULT_BLOCK_SIZE,
        'target': f'relational <= {TARGET_RATIO}x contrastive (InfoNCE) time at N = '
                  f'{TARGET_PAIRS}, forward + backward, CPU',
        'protocol': (f'median of {args.repeats} (N > {TARGET_PAIRS}: {args.large_repeats}) '
                     'interleaved rounds of forward + backward after 1 warm-up round; peak '
                     'memory on CPU: VmHWM (reset) - VmRSS before the call, one fresh process '
                     'per case; on CUDA: max_memory_allocated - memory_allocated before'),
        'load_average_1min_start': load_start,
    }
    results['cpu'] = section(args.pairs, args.sweep_pairs, args.block_sizes, args.repeats,
                             args.large_repeats, torch.device('cpu'))
    results['target_met'] = results['cpu']['target_met']
    if torch.cuda.is_available():
        results['cuda'] = section(args.pairs, args.sweep_pairs, args.block_sizes, args.repeats,
                                  args.large_repeats, torch.device('cuda'))
        results['cuda']['gpu'] = torch.cuda.get_device_name()
    results['seconds'] = round(time.perf_counter() - started, 1)
    results['machine'] = machine_info()  # its load average is the one at the end
    write_results(args.out, results)
    print(markdown('CPU', results['cpu']))
    if 'cuda' in results:
        print(markdown(f"CUDA ({results['cuda']['gpu']})", results['cuda']))
    print(f"\nthreads {results['threads']}; load (1 min) {load_start} at start, "
          f"{results['machine']['load_average_1min']} at end; {results['seconds']} s")


if __name__ == '__main__':
    main()
