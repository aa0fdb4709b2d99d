"""The GPU check behind ``scripts/gpu_check.sh``: what has never run here without a CUDA device.

On a CUDA machine, in a few minutes (each step has a time budget and records its own failure
without stopping the others):

1. build: the native backend's compiled CPU fast path (built on first use) and what CUDA
   torch and spconv report;
2. parity on the device: MinkUNet forward and gradients, ``native`` on CUDA against
   ``native-ref`` on CPU in float64 (same weights), and spconv on CUDA against native on CUDA
   when spconv imports;
3. one MinkUNet34 training step (voxelize, forward, loss, backward) at 30k, 100k and 300k
   voxels for every backend that runs on CUDA, median of a few, with the matmul floor;
4. the Labeler and the exported TorchScript module on one 124k-point 64-beam scan
   (synthetic ``kitti`` rig), p50/p95 of repeated calls;
5. 50 AMP training steps (float16 autocast with a gradient scaler) of MinkUNet34, checking the
   loss stays finite;

and writes everything to ``--out`` (default bench/results/gpu.json).

Without CUDA it prints one line and exits with status 2, unless ``--cpu-smoke`` asks for the
same steps at toy sizes on the CPU (what CI runs, so the script itself is tested).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
sys.path.insert(0, str(ROOT))

# relkd and the benchmarks are imported after the CUDA check (see _late_imports), so that a
# machine without CUDA gets its one line at once.
MatmulFlops: Any
gemm_peak_gflops: Any
street_scan: Any
train_step: Any
voxel_size_for: Any
StudentConfig: Any
build_student: Any
voxelize_batch: Any
available_backends: Any


def _late_imports() -> None:
    global MatmulFlops, gemm_peak_gflops, street_scan, train_step, voxel_size_for
    global StudentConfig, build_student, voxelize_batch, available_backends
    from bench_sparse import (
        MatmulFlops,
        gemm_peak_gflops,
        street_scan,
        train_step,
        voxel_size_for,
    )

    from relkd_core.models import StudentConfig, build_student, voxelize_batch
    from relkd_core.models.sparse import available_backends

#: Full-size settings (CUDA) and toy ones (--cpu-smoke).
FULL = {'voxels': [30_000, 100_000, 300_000], 'variant': '34', 'width': 1.0, 'steps': 3,
        'parity_points': 20_000, 'label_points': None, 'label_repeats': 20, 'amp_steps': 50,
        'amp_voxels': 30_000}
SMOKE = {'voxels': [1_000], 'variant': '14', 'width': 0.25, 'steps': 1,
         'parity_points': 1_000, 'label_points': 3_000, 'label_repeats': 2, 'amp_steps': 2,
         'amp_voxels': 1_000, 'gemm_size': 256}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=ROOT / 'bench' / 'results' / 'gpu.json')
    parser.add_argument('--cpu-smoke', action='store_true',
                        help='no CUDA needed: every step at toy sizes on the CPU')
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='steps not started by then are skipped (the script stays < 8 min)')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(f'gpu_check: no CUDA device here (torch {torch.__version__}, '
              f'cuda {torch.version.cuda}); nothing checked — run it on a CUDA machine, or '
              'pass --cpu-smoke for the CPU-safe parts at toy sizes')
        return 2
    _late_imports()
    device = torch.device('cpu' if args.cpu_smoke else 'cuda')
    sizes = SMOKE if args.cpu_smoke else FULL
    if args.cpu_smoke:
        torch.set_num_threads(1)  # toy sizes: threads would only wait for each other
    deadline = time.monotonic() + args.budget_s
    results: dict[str, Any] = {'mode': 'cpu-smoke' if args.cpu_smoke else 'cuda',
                               'environment': environment(device), 'steps': {}}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ('build', build),
        ('parity', lambda: parity(device, sizes)),
        ('training_step', lambda: training_steps(device, sizes, deadline)),
        ('labeler_124k', lambda: labelling(device, sizes)),
        ('amp_training', lambda: amp_training(device, sizes)),
    ]
    for name, step in steps:
        if time.monotonic() > deadline:
            results['steps'][name] = {'ok': False, 'error': 'skipped: time budget spent'}
            continue
        start = time.monotonic()
        try:
            results['steps'][name] = {'ok': True, **step()}
        except Exception as err:  # one failing step must not hide the others' results
            results['steps'][name] = {'ok': False, 'error': f'{type(err).__name__}: {err}',
                                      'traceback': traceback.format_exc(limit=6)}
        results['steps'][name]['seconds'] = round(time.monotonic() - start, 1)
        print(f"gpu_check: {name}: {'ok' if results['steps'][name]['ok'] else 'FAILED'} "
              f"({results['steps'][name]['seconds']} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + '\n', encoding='utf-8')
    print(f'gpu_check: wrote {args.out}')
    return 0 if all(step['ok'] for step in results['steps'].values()) else 1


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {'python': platform.python_version(), 'torch': torch.__version__,
                            'cuda': torch.version.cuda, 'device': str(device),
                            'backends': available_backends()}
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['gpu_memory_gib'] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def build() -> dict[str, Any]:
    """The compiled CPU fast path of the native backend (on CUDA the backend runs PyTorch)."""
    from relkd_core.models.sparse import native_fast

    start = time.monotonic()
    ops = native_fast.fast_ops()
    return {'native_cpu_fast_path': ops is not None,
            'build_or_load_s': round(time.monotonic() - start, 1)}


def _config(sizes: dict[str, Any], **overrides: Any) -> StudentConfig:
    fields: dict[str, Any] = {'variant': sizes['variant'], 'width_multiplier': sizes['width'],
                              'voxelization': 'cartesian'}
    fields.update(overrides)
    return StudentConfig(**fields)


def parity(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """Largest relative differences of outputs and gradients between backends (same weights)."""
    scan = street_scan(sizes['parity_points'], seed=1)
    config = _config(sizes, variant='14', width_multiplier=0.25, voxel_size_m=0.3)
    report: dict[str, Any] = {}
    reference = _forward_backward(config, 'native-ref', scan, torch.device('cpu'),
                                  torch.float64, None)
    state = reference.pop('state')
    native = _forward_backward(config, 'native', scan, device, torch.float32, state)
    report['native_vs_native_ref_float64'] = _differences(native, reference)
    if 'spconv' in available_backends():
        spconv = _forward_backward(config, 'spconv', scan, device, torch.float32, state)
        report['spconv_vs_native'] = _differences(spconv, native)
    else:
        report['spconv_vs_native'] = 'spconv not installed'
    return report


def _forward_backward(config: StudentConfig, backend: str, scan: torch.Tensor,
                      device: torch.device, dtype: torch.dtype,
                      state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    config = dataclasses.replace(config, backend=backend)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_student(config)
    if state is not None:
        model.load_state_dict(state)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model = model.to(device=device, dtype=dtype).train()
    batch = voxelize_batch([scan], config, device=device)
    batch = dataclasses.replace(batch, features=batch.features.to(dtype))
    out = model(batch)
    out.pow(3).sum().backward()
    grads = {name: p.grad.detach().double().cpu() for name, p in model.named_parameters()
             if p.grad is not None}
    return {'out': out.detach().double().cpu(), 'grads': grads, 'state': saved}


def _differences(first: dict[str, Any], second: dict[str, Any]) -> dict[str, float]:
    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))

    grads = [relative(first['grads'][name], grad) for name, grad in second['grads'].items()]
    return {'output_max_rel': relative(first['out'], second['out']),
            'gradient_max_rel': max(grads) if grads else math.nan}


def training_steps(device: torch.device, sizes: dict[str, Any], deadline: float
                   ) -> dict[str, Any]:
    """ms per MinkUNet34 training step per backend and size, with the matmul floor."""
    backends = [b for b in available_backends()
                if b != 'minkowski' or device.type == 'cpu']  # MinkowskiEngine: CPU only
    peak = gemm_peak_gflops(device, size=sizes.get('gemm_size', 2048))
    cases = []
    for target in sizes['voxels']:
        if time.monotonic() > deadline:
            cases.append({'target_voxels': target, 'skipped': 'time budget spent'})
            continue
        scan = street_scan(int(target * 1.6), seed=0)
        config = _config(sizes, voxel_size_m=voxel_size_for(scan, target))
        scan = scan.to(device)
        projection = torch.randn(config.out_dim, 16, device=device)
        case: dict[str, Any] = {'target_voxels': target,
                                'voxels': voxelize_batch([scan], config).num_voxels,
                                'backends': {}}
        state = None
        for backend in backends:
            try:
                model = build_student(dataclasses.replace(config, backend=backend))
                if state is None:
                    state = model.state_dict()
                model.load_state_dict(state)
                model = model.to(device).train()
                train_step(model, scan, config, projection, device)  # warm-up
                times = [train_step(model, scan, config, projection, device)
                         for _ in range(sizes['steps'])]
                case['backends'][backend] = {'ms_median': round(statistics.median(times), 1),
                                             'ms_all': [round(t, 1) for t in times]}
                if backend == 'native-ref':
                    with MatmulFlops() as counter:
                        train_step(model, scan, config, projection, device)
                    case['matmul_floor_ms'] = round(counter.flops / 1e9 / peak * 1e3, 1)
                del model
            except Exception as err:  # e.g. out of memory at 300k on a small GPU
                case['backends'][backend] = {'error': f'{type(err).__name__}: {err}'[:300]}
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        cases.append(case)
    return {'gemm_peak_gflops': round(peak, 1), 'cases': cases}


def labelling(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """The Labeler and the exported module on one 64-beam scan (bench_node's default student)."""
    import numpy as np
    from bench_node import MODELS, bench_scan, write_checkpoint

    from relkd_core.infer.labeler import Labeler
    from relkd_core.models.distilled import load_checkpoint
    from relkd_core.models.export import export_checkpoint

    if sizes['label_points']:  # toy size: a street-like scan instead of a ray-cast drive
        scan = street_scan(sizes['label_points'], seed=3).numpy()
    else:
        scan = bench_scan('kitti')
    report: dict[str, Any] = {'points': len(scan)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'student.pt'
        write_checkpoint(path, MODELS['default'][0])
        labeler = Labeler(path, device=device, min_range_m=1.0, max_range_m=120.0)
        report['labeler_ms'] = _timed(lambda: labeler.label(scan), device,
                                      sizes['label_repeats'])
        exported = Path(tmp) / 'student.ts'
        export_checkpoint(load_checkpoint(path), exported, check_points=2_000)
        module = torch.jit.load(str(exported), map_location=device)
        points = torch.from_numpy(np.ascontiguousarray(scan)).to(device)
        with torch.no_grad():
            report['exported_ms'] = _timed(lambda: module(points), device,
                                           sizes['label_repeats'])
    return report


def _timed(run: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(times)
    return {'p50': round(statistics.median(times), 1),
            'p95': round(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)], 1)}


def amp_training(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """AMP steps (float16 autocast and a gradient scaler on CUDA; bfloat16 on CPU)."""
    scan = street_scan(int(sizes['amp_voxels'] * 1.6), seed=2)
    config = _config(sizes, voxel_size_m=voxel_size_for(scan, sizes['amp_voxels']))
    model = build_student(config).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == 'cuda')
    projection = torch.randn(config.out_dim, 16, device=device)
    target = torch.randn(16, device=device)
    scan = scan.to(device)
    losses, times = [], []
    for _ in range(sizes['amp_steps']):
        start = time.perf_counter()
        batch = voxelize_batch([scan], config, device=device)
        with torch.autocast(device.type, dtype=dtype):
            out = model(batch)
            loss = ((out.float() @ projection) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
        losses.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f'non-finite AMP loss: {losses}')
    return {'dtype': str(dtype), 'steps': len(losses), 'voxels': batch.num_voxels,
            'loss_first': round(losses[0], 5), 'loss_last': round(losses[-1], 5),
            'ms_per_step_median': round(statistics.median(times), 1)}


if __name__ == '__main__':
    sys.exit(main())
