"""The process memory policy: labelling scan after scan reuses pages instead of faulting them in.

Each case runs in a fresh process (the policy is process-wide and applied once), labels the
same scan a few times with a tiny student and counts the minor page faults of the last scan.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import resource, sys
sys.path.insert(0, {test_dir!r})
from infer.checkpoints import synthetic_scan, write_tiny_checkpoint
from relkd_core.infer.labeler import Labeler
from relkd_core.memory import retain_freed_memory
import torch
torch.set_num_threads(1)
write_tiny_checkpoint({path!r})
labeler = Labeler({path!r})
scan = synthetic_scan(60000, seed=3, scale_m=40.0)
for _ in range(3):
    labeler.label(scan)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
labeler.label(scan)
print(retain_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_a_repeated_scan(tmp_path: Path, **environment: str) -> tuple[bool, int]:
    env = {name: value for name, value in os.environ.items() if not name.startswith('MALLOC_')}
    env.update(environment, PYTHONPATH=str(ROOT))
    script = SCRIPT.format(test_dir=str(ROOT / 'test'), path=str(tmp_path / 'tiny.pt'))
    done = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    applied, faults = done.stdout.split()[-2:]
    return applied == 'True', int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc tunables: Linux only')
def test_labelling_again_faults_no_pages_in_with_the_policy(tmp_path: Path) -> None:
    applied, faults = faults_of_a_repeated_scan(tmp_path)
    assert applied
    # glibc's defaults (its own tunable set to its default value keeps the policy off) fault
    # the scan's temporaries in again on every scan (about 21,000 faults here): the policy
    # is what removes them (0 in most runs; a few dozen from Python's own growth in some).
    _, default_faults = faults_of_a_repeated_scan(tmp_path, MALLOC_TOP_PAD_='131072')
    assert default_faults > 2000 and faults * 20 < default_faults, (faults, default_faults)
