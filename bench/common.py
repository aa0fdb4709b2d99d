"""What every benchmark records beside its figures, how it writes them, and what the
benchmarks comparing the tree with a base revision share."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relkd_core.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """CPU count, Python, processor and the 1-minute load average (timings on a busy machine
    are not comparable with those on a quiet one)."""
    return {'cpus': os.cpu_count(), 'python': platform.python_version(),
            'processor': platform.processor() or platform.machine(),
            'load_average_1min': round(os.getloadavg()[0], 2)}


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` as indented JSON, atomically, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(results, indent=2) + '\n')
    print(f'wrote {path}')


def revision_file(revision: str, path: str) -> str:
    """The text of ``path`` (relative to the repository root) at git ``revision``."""
    return subprocess.run(['git', 'show', f'{revision}:{path}'], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def profile_summary(call: Callable[[], Any], top: int = 12) -> list[dict[str, Any]]:
    """The ``top`` operators of one ``call`` by self CPU time (torch.profiler): name, self ms,
    share of the call's self time, and number of calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{'op': e.key, 'self_ms': round(e.self_cpu_time_total / 1e3, 2),
             'share': round(e.self_cpu_time_total / total, 3), 'calls': e.count}
            for e in events[:top]]


def alternating_ms(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each of ``calls``, ``repeats`` times, the order reversed every other
    round, so that the machine's drift within minutes falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(repeats):
        order = list(calls.items())
        for name, call in order[::-1] if index % 2 else order:
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times
