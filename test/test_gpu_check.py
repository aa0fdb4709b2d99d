"""scripts/gpu_check.sh without a GPU: one clear line and status 2, and the whole script at toy
sizes on the CPU (--cpu-smoke), so the steps a CUDA machine runs are exercised here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'gpu_check.sh'

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='a CUDA machine runs the real check')


def run(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run([str(SCRIPT), '--out', str(out), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    done = run(out=tmp_path / 'gpu.json')
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gpu_check: no CUDA device here (torch ')
    assert '--cpu-smoke' in lines[0]
    assert not (tmp_path / 'gpu.json').exists()


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / 'gpu.json'
    done = run('--cpu-smoke', out=out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results['mode'] == 'cpu-smoke'
    steps = results['steps']
    assert list(steps) == ['build', 'parity', 'training_step', 'labeler_124k', 'amp_training']
    assert all(step['ok'] for step in steps.values()), steps
    parity = steps['parity']['native_vs_native_ref_float64']
    assert parity['output_max_rel'] < 1e-4 and parity['gradient_max_rel'] < 1e-3
    case = steps['training_step']['cases'][0]
    assert {'native', 'native-ref'} <= set(case['backends']) and case['matmul_floor_ms'] > 0
    assert steps['labeler_124k']['labeler_ms']['p95'] > 0
    assert steps['labeler_124k']['exported_ms']['p95'] > 0
    assert steps['amp_training']['steps'] == 2
