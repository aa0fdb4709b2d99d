"""Benchmark: a full MinkUNet training step (voxelize, forward, backward) on each sparse backend.

For each target size (default 30k and 100k voxels) a synthetic street-like scan (ground, walls,
cars as boxes, poles) is voxelized with a voxel size tuned to hit the target, and every
installed backend runs the same model with the same weights. Steps are interleaved across
backends (A, B, C, A, B, C, ...) so that load from other processes hits all of them alike.
Kernel maps are rebuilt in every step, as in training where every scan is new.

Writes JSON (``--out``) with ms per step (median), peak memory of one step (growth of the
resident set over the step, sampled every 2 ms, measured in a fresh process per backend so
that memory kept by the allocator from earlier steps does not hide it; on CUDA the peak
allocation) and the ratios native/spconv and native/minkowski, and prints a Markdown table.
A backend that is not installed is recorded as unavailable with the reason.

``native`` runs the compiled fast path (built on first use) and ``native-ref`` the pure-PyTorch
reference of the same backend; both are timed, interleaved with the others.

It also records the *matrix-product floor* of a step: the floating-point operations of every
matrix product in one native-ref step (counted op by op, backward included; the reference runs
every product through torch, the fast path's fused kernels do the same products), divided by the
rate
of one large square float32 matrix product on this machine. Every backend does these same
products (the kernel maps are the same), so no gather–GEMM–scatter engine in float32 can take
less; ``floor/minkowski`` says how close that floor is to a speed target. Run on demand,
never in tests:

    .venv/bin/python bench/bench_sparse.py --out bench/results/sparse.json

``--profile`` instead profiles one native step per size and writes the top operators by self
CPU time to ``bench/results/sparse_profile.json``: where the time outside the products goes.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, profile_summary, write_results
from torch.utils._python_dispatch import TorchDispatchMode

from relkd_core.errors import ModelError
from relkd_core.geometry.voxel import unique_coordinates, voxel_grid_coordinates
from relkd_core.models import StudentConfig, build_student, voxelize_batch
from relkd_core.models.sparse import BACKENDS, check_backend

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def street_scan(num_points: int, seed: int) -> torch.Tensor:
    """(N, 4) float32 xyzi: points on a ground plane, two building fronts, boxes and poles,
    denser near the sensor like a spinning lidar (ranges drawn with density ~ 1/r)."""
    rng = np.random.default_rng(seed)
    parts = []
    n = num_points // 2
    radius = np.exp(rng.uniform(np.log(2.0), np.log(60.0), n))
    angle = rng.uniform(-np.pi, np.pi, n)
    parts.append(np.column_stack([radius * np.cos(angle), radius * np.sin(angle),
                                  rng.normal(-1.8, 0.03, n)]))
    n = num_points // 5
    for side in (-1.0, 1.0):  # building fronts along x at y = ±12 m
        parts.append(np.column_stack([rng.uniform(-60, 60, n // 2),
                                      np.full(n // 2, 12.0 * side) + rng.normal(0, 0.05, n // 2),
                                      rng.uniform(-1.8, 8.0, n // 2)]))
    rest = num_points - sum(len(p) for p in parts)
    centres = rng.uniform([-40, -9, -1.8], [40, 9, -1.8], size=(24, 3))
    sizes = rng.uniform([3.5, 1.6, 1.4], [5.0, 2.0, 2.0], size=(24, 3))
    choice = rng.integers(0, 24, rest)
    face = rng.uniform(-0.5, 0.5, size=(rest, 3))
    axis = rng.integers(0, 3, rest)
    face[np.arange(rest), axis] = np.sign(face[np.arange(rest), axis]) * 0.5  # on the surface
    boxes = centres[choice] + face * sizes[choice] + np.array([0, 0, 1.0])
    parts.append(boxes)
    xyz = np.concatenate(parts)
    intensity = rng.uniform(0.0, 1.0, size=(len(xyz), 1))
    return torch.from_numpy(np.concatenate([xyz, intensity], axis=1)).float()


def voxel_size_for(scan: torch.Tensor, target_voxels: int) -> float:
    """Cartesian voxel size (m) giving about ``target_voxels`` voxels (bisection in log)."""
    low, high = 0.005, 2.0
    for _ in range(25):
        size = math.sqrt(low * high)
        count = len(unique_coordinates(voxel_grid_coordinates(scan[:, :3], size))[0])
        low, high = (size, high) if count > target_voxels else (low, size)
    return math.sqrt(low * high)


class PeakMemory:
    """Peak growth of the resident set (CPU) or of CUDA allocation during a ``with`` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, _rss_bytes()) - self._base

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as stream:
        return int(stream.read().split()[1]) * PAGE_BYTES


def train_step(model: torch.nn.Module, scan: torch.Tensor, config: StudentConfig,
               projection: torch.Tensor, device: torch.device) -> float:
    """One step, timed in ms: voxelize, forward, a scalar loss, backward."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    batch = voxelize_batch([scan], config, device=device)
    out = model(batch)
    loss = (out @ projection).square().mean()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - start) * 1000.0
    model.zero_grad(set_to_none=True)
    return elapsed


class MatmulFlops(TorchDispatchMode):
    """Counts the floating-point operations (2·M·K·N each) of the matrix products run inside
    a ``with`` block, backward included."""

    _PRODUCTS = ("aten.mm.", "aten.addmm.", "aten.addmm_.", "aten.bmm.", "aten.baddbmm.")

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        name = str(func)
        if name.startswith(self._PRODUCTS):
            first, second = args[-2:] if "addmm" in name or "baddbmm" in name else args[:2]
            batch = first.shape[0] if first.ndim == 3 else 1
            self.flops += 2 * batch * first.shape[-2] * first.shape[-1] * second.shape[-1]
        return func(*args, **(kwargs or {}))


def gemm_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Best rate (GFLOP/s) of a square float32 matrix product of ``size`` on ``device``."""
    first = torch.randn(size, size, device=device)
    second = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(first, second, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_matmul_gflop(model: torch.nn.Module, scan: torch.Tensor, config: StudentConfig,
                      projection: torch.Tensor, device: torch.device) -> float:
    """GFLOP of the matrix products of one training step of ``model``."""
    with MatmulFlops() as counter:
        train_step(model, scan, config, projection, device)
    return counter.flops / 1e9


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    available: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            check_backend(name)
            available[name] = None
        except ModelError as err:
            available[name] = str(err)
    runnable = [name for name, reason in available.items() if reason is None]
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "device": str(device),
            "load_average_1min_start": round(os.getloadavg()[0], 2),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        },
        "model": {"variant": args.variant, "width_multiplier": args.width},
        "protocol": (f"median of {args.repeats} interleaved steps after {args.warmup} warm-up "
                     "steps; step = voxelize + forward + loss + backward, kernel maps rebuilt"),
        "gemm_peak_gflops": round(gemm_peak_gflops(device), 1),
        "cases": [],
    }
    for target in args.voxels:
        scan = street_scan(num_points=int(target * 1.6), seed=0)
        voxel_size = voxel_size_for(scan, target)
        config = StudentConfig(variant=args.variant, width_multiplier=args.width,
                               voxelization="cartesian", voxel_size_m=voxel_size)
        num_voxels = voxelize_batch([scan], config).num_voxels
        reference = build_student(config).to(device)
        results["model"]["parameters"] = sum(p.numel() for p in reference.parameters())
        models = {}
        for name in runnable:
            model = build_student(StudentConfig(**{**_fields(config), "backend": name}))
            model.load_state_dict(reference.state_dict())
            models[name] = model.to(device).train()
        projection = torch.randn(config.out_dim, 16, generator=torch.Generator().manual_seed(0))
        projection = projection.to(device)
        times: dict[str, list[float]] = {name: [] for name in runnable}
        for step in range(args.warmup + args.repeats):
            for name in runnable:
                elapsed = train_step(models[name], scan, config, projection, device)
                if step >= args.warmup:
                    times[name].append(elapsed)
        counted = "native-ref" if "native-ref" in models else "native"
        gflop = step_matmul_gflop(models[counted], scan, config, projection, device)
        del models, reference
        peaks = {name: _probe_memory(args, name, target) for name in runnable}
        case: dict[str, Any] = {"target_voxels": target, "voxels": num_voxels,
                                "points": len(scan), "voxel_size_m": round(voxel_size, 5),
                                "backends": {}, "ratios": {},
                                "matmul_gflop_per_step": round(gflop, 1),
                                "matmul_floor_ms": round(gflop / results["gemm_peak_gflops"] * 1e3,
                                                         1)}
        for name, reason in available.items():
            if reason is not None:
                case["backends"][name] = {"available": False, "reason": reason}
                continue
            case["backends"][name] = {
                "available": True,
                "ms_per_step": round(statistics.median(times[name]), 1),
                "ms_min": round(min(times[name]), 1),
                "ms_max": round(max(times[name]), 1),
                "ms_all": [round(t, 1) for t in times[name]],
                "peak_memory_mib": round(peaks[name] / 2**20, 1),
                "over_matmul_floor": round(statistics.median(times[name])
                                           / case["matmul_floor_ms"], 2),
            }
        native = case["backends"]["native"]
        for other in ("native-ref", "spconv", "minkowski"):
            entry = case["backends"][other]
            case["ratios"][f"native/{other}"] = (
                round(native["ms_per_step"] / entry["ms_per_step"], 3)
                if entry["available"] else None
            )
            case["ratios"][f"floor/{other}"] = (
                round(case["matmul_floor_ms"] / entry["ms_per_step"], 3)
                if entry["available"] else None
            )
        case["load_average_1min_end"] = round(os.getloadavg()[0], 2)
        results["cases"].append(case)
        print(f"done: {num_voxels} voxels", flush=True)
    return results


def _probe_memory(args: argparse.Namespace, backend: str, target: int) -> int:
    """Peak memory (bytes) of one step of ``backend`` at ``target`` voxels, in a new process."""
    command = [sys.executable, __file__, "--probe-memory", backend, "--voxels", str(target),
               "--variant", args.variant, "--width", str(args.width), "--threads",
               str(args.threads), "--device", args.device]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1])


def single_backend_step(args: argparse.Namespace, backend: str, target: int
                        ) -> functools.partial[float]:
    """One training step of ``backend`` at ``target`` voxels, set up as ``run`` does (same
    scan, voxel size, model and projection), ready to call."""
    device = torch.device(args.device)
    scan = street_scan(num_points=int(target * 1.6), seed=0)
    config = StudentConfig(variant=args.variant, width_multiplier=args.width,
                           voxelization="cartesian", backend=backend,
                           voxel_size_m=voxel_size_for(scan, target))
    model = build_student(config).to(device).train()
    projection = torch.randn(config.out_dim, 16, generator=torch.Generator().manual_seed(0))
    return functools.partial(train_step, model, scan, config, projection.to(device), device)


def probe_memory(args: argparse.Namespace) -> int:
    """Set up as ``run`` does, then measure one step of one backend (the probe process)."""
    torch.set_num_threads(args.threads)
    step = single_backend_step(args, args.probe_memory, args.voxels[0])
    with PeakMemory(torch.device(args.device)) as memory:
        step()
    return memory.peak_bytes


def profile_steps(args: argparse.Namespace) -> dict[str, Any]:
    """Where a native step's time goes: the top operators of one step at each target size
    (torch.profiler, after one warm-up step), with the step's wall time."""
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "machine": machine_info(), "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "model": {"variant": args.variant, "width_multiplier": args.width},
        "protocol": "one native step under torch.profiler after one warm-up step; self CPU "
                    "time per operator (the profiler's own overhead inflates short operators)",
        "cases": []}
    for target in args.voxels:
        step = single_backend_step(args, "native", target)
        step()  # warm-up
        step_ms = step()
        ops = profile_summary(step, 16)
        results["cases"].append({"target_voxels": target,
                                 "ms_step_unprofiled": round(step_ms, 1), "ops": ops})
        print(f"{target} voxels: {step_ms:.0f} ms; " + ", ".join(
            f"{op['op']} {op['self_ms']:.0f} ms" for op in ops[:8]), flush=True)
    return results


def _fields(config: StudentConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| voxels | backend | ms / step (median) | spread (min–max) | peak memory (MiB) | "
        "native / this | this / matmul floor |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for case in results["cases"]:
        native_ms = case["backends"]["native"]["ms_per_step"]
        for name, entry in case["backends"].items():
            if not entry["available"]:
                lines.append(f"| {case['voxels']} | {name} | unavailable | | | | |")
                continue
            ratio = native_ms / entry["ms_per_step"]
            lines.append(f"| {case['voxels']} | {name} | {entry['ms_per_step']:.0f} | "
                         f"{entry['ms_min']:.0f}–{entry['ms_max']:.0f} | "
                         f"{entry['peak_memory_mib']:.0f} | {ratio:.2f} | "
                         f"{entry['over_matmul_floor']:.2f} |")
        floor = case["matmul_floor_ms"]
        lines.append(f"| {case['voxels']} | matrix-product floor "
                     f"({case['matmul_gflop_per_step']:.0f} GFLOP at "
                     f"{results['gemm_peak_gflops']:.0f} GFLOP/s) | {floor:.0f} | | | "
                     f"{native_ms / floor:.2f} | 1.00 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/sparse.json"))
    parser.add_argument("--voxels", type=int, nargs="+", default=[30_000, 100_000])
    parser.add_argument("--variant", choices=["14", "18", "34"], default="34")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing the backends, profile one native step per size "
                             "(results: bench/results/sparse_profile.json unless --out)")
    parser.add_argument("--probe-memory", metavar="BACKEND", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_memory:
        print(probe_memory(args))
        return
    if args.profile:
        out = args.out if args.out != parser.get_default("out") else Path(
            "bench/results/sparse_profile.json")
        write_results(out, profile_steps(args))
        return
    results = run(args)
    write_results(args.out, results)  # atomic: a crash never leaves half a results file
    print(markdown(results))


if __name__ == "__main__":
    main()
