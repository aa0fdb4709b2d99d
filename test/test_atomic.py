"""Tests for relkd_core.atomic: atomic writes and the temporaries a killed writer leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relkd_core.atomic import staging_prefix, sweep_stale, write_atomic


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_atomic_temporary_names_its_process(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(stream: object) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())
        stream.write(b'data')  # type: ignore[attr-defined]

    write_atomic(tmp_path / 'step_0000003.pt', write)
    [temporary] = seen
    assert temporary.startswith(staging_prefix(tmp_path / 'step_0000003.pt'))
    assert f'.{os.getpid()}.' in temporary and temporary.endswith('.tmp')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['step_0000003.pt']


def test_atomic_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def write(stream: object) -> None:
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        write_atomic(tmp_path / 'a.pt', write)
    assert list(tmp_path.iterdir()) == []


def test_atomic_sweep_removes_a_killed_writers_file_only(tmp_path: Path) -> None:
    mine = tmp_path / f'{staging_prefix(tmp_path / "a.pt")}x1.tmp'
    host = staging_prefix(tmp_path / 'a.pt').split('.')[-2]
    killed = tmp_path / f'.a.pt.{_dead_pid()}.{host}.x2.tmp'
    legacy = tmp_path / f'.000003.{_dead_pid()}.abc_9.tmp'  # prepare's names before hosts
    unrelated = tmp_path / '.notes.tmp'
    for path in (mine, killed, legacy, unrelated):
        path.write_bytes(b'x')
    assert sorted(sweep_stale(tmp_path)) == sorted([killed, legacy])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, unrelated.name])
