"""What every benchmark records beside its figures, and how it writes them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from relkd_core.atomic import write_text_atomic


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
