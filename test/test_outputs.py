"""Tests for relkd_core.outputs: the one output policy of every command, and the folder lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relkd_core.atomic import make_staging_dir, sweep_stale
from relkd_core.errors import OutputError, OutputLockedError
from relkd_core.outputs import (
    LOCK_NAME,
    MARKER_NAME,
    OutputLock,
    claim_output,
    mark_output,
    output_kind,
    replace_output,
)


def _marked(path: Path, kind: str = 'synth-bag') -> Path:
    path.mkdir(parents=True)
    (path / 'data.bin').write_bytes(b'x')
    mark_output(path, kind)
    return path


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_outputs_new_path_is_free(tmp_path: Path) -> None:
    claim_output(tmp_path / 'new', kind='synth-bag', overwrite=False)


def test_outputs_marker_names_the_kind(tmp_path: Path) -> None:
    out = _marked(tmp_path / 'drive', 'labeled-bag')
    assert json.loads((out / MARKER_NAME).read_text()) == {'kind': 'labeled-bag'}
    assert output_kind(out) == 'labeled-bag'
    assert output_kind(tmp_path) is None


def test_outputs_same_kind_needs_overwrite(tmp_path: Path) -> None:
    out = _marked(tmp_path / 'drive')
    with pytest.raises(OutputError, match=r'^--out .*drive already exists \(a synth-bag\); '
                                          r'choose a new path or pass --overwrite$'):
        claim_output(out, kind='synth-bag', overwrite=False)
    claim_output(out, kind='synth-bag', overwrite=True)
    claim_output(out, kind='synth-bag', overwrite=False, resumable=True)


@pytest.mark.parametrize(('setup', 'message'), [
    ('notes', r'already exists and is a folder that relkd did not write, not a synth-bag; it is '
              r'never replaced: choose a new path'),
    ('other kind', r'already exists and is labeled-bag \(written by relkd\), not a synth-bag'),
    ('file', r'is a file, but a synth-bag is a folder; choose a new path'),
])
def test_outputs_foreign_output_is_never_replaced(tmp_path: Path, setup: str,
                                                  message: str) -> None:
    out = tmp_path / 'out'
    if setup == 'notes':
        out.mkdir()
        (out / 'thesis.tex').write_text('years of work')
    elif setup == 'other kind':
        _marked(out, 'labeled-bag')
    else:
        out.write_text('a file')
    with pytest.raises(OutputError, match=message):
        claim_output(out, kind='synth-bag', overwrite=True)


def test_outputs_empty_folder_is_free(tmp_path: Path) -> None:
    (tmp_path / 'empty').mkdir()
    claim_output(tmp_path / 'empty', kind='synth-bag', overwrite=False)


def test_outputs_recognise_counts_for_unmarked_outputs(tmp_path: Path) -> None:
    out = tmp_path / 'prepared'
    out.mkdir()
    (out / 'plan.json').write_text('{}')
    claim_output(out, kind='prepared-dataset', overwrite=False, resumable=True,
                 recognise=lambda p: (p / 'plan.json').is_file())
    with pytest.raises(OutputError, match='a folder that relkd did not write'):
        claim_output(out, kind='prepared-dataset', overwrite=False, resumable=True)


def test_outputs_file_kind(tmp_path: Path) -> None:
    out = tmp_path / 'student.torchscript'
    out.write_bytes(b'MODEL')
    claim_output(out, kind='torchscript-export', overwrite=True, file=True,
                 recognise=lambda p: p.read_bytes() == b'MODEL')
    with pytest.raises(OutputError, match=r'already exists \(a torchscript-export\)'):
        claim_output(out, kind='torchscript-export', overwrite=False, file=True,
                     recognise=lambda p: p.read_bytes() == b'MODEL')
    with pytest.raises(OutputError, match='already exists and is not a torchscript-export'):
        claim_output(out, kind='torchscript-export', overwrite=True, file=True,
                     recognise=lambda p: False)
    with pytest.raises(OutputError, match='is a folder, but a torchscript-export is a file'):
        claim_output(tmp_path, kind='torchscript-export', overwrite=True, file=True)


@pytest.mark.parametrize(('out', 'relation'), [
    ('bag', 'is the input'),
    ('bag/labeled', 'lies inside the input'),
    ('bag/../bag/./labeled.mcap', 'lies inside the input'),
    ('link/labeled', 'lies inside the input'),
    ('.', 'contains the input'),
])
def test_outputs_never_overlap_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        out: str, relation: str) -> None:
    bag = _marked(tmp_path / 'bag', 'labeled-bag')
    (tmp_path / 'link').symlink_to(bag)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=f'^--out .* {relation} bag'):
        claim_output(Path(out), kind='labeled-bag', overwrite=True, inputs=[Path('bag')])
    assert sorted(p.name for p in bag.iterdir()) == [MARKER_NAME, 'data.bin']


def test_outputs_a_symlinked_output_is_refused(tmp_path: Path) -> None:
    real = _marked(tmp_path / 'real')
    (tmp_path / 'link').symlink_to(real)
    with pytest.raises(OutputError, match='is a symbolic link to'):
        claim_output(tmp_path / 'link', kind='synth-bag', overwrite=True)


@pytest.mark.parametrize(('case', 'message'), [
    ('missing folder', r'--out .*: folder .*missing does not exist$'),
    ('file as folder', r'--out .*: .*a_file is a file, not a folder$'),
    ('read-only folder', r'--out .*: folder .*read_only is not writable$'),
])
def test_outputs_folder_is_checked(tmp_path: Path, case: str, message: str) -> None:
    (tmp_path / 'a_file').write_text('x')
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o500)
    parent = {'missing folder': 'missing', 'file as folder': 'a_file',
              'read-only folder': 'read_only'}[case]
    if case == 'read-only folder' and os.access(read_only, os.W_OK):
        pytest.skip('running as root: every folder is writable')
    with pytest.raises(OutputError, match=message):
        claim_output(tmp_path / parent / 'out', kind='synth-bag', overwrite=False)


def test_outputs_parents_may_be_created(tmp_path: Path) -> None:
    claim_output(tmp_path / 'runs' / 'a' / 'b', kind='train-run', overwrite=False, parents=True)
    (tmp_path / 'a_file').write_text('x')
    with pytest.raises(OutputError, match='a_file is a file, not a folder'):
        claim_output(tmp_path / 'a_file' / 'b', kind='train-run', overwrite=False, parents=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


def test_outputs_replace_output_swaps_in_the_new(tmp_path: Path) -> None:
    out = _marked(tmp_path / 'drive')
    built = _marked(tmp_path / 'built' / 'drive')
    (built / 'data.bin').write_bytes(b'new')
    replace_output(built, out)
    assert (out / 'data.bin').read_bytes() == b'new'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['built', 'drive']


def test_outputs_sweep_removes_only_dead_processes_temporaries(tmp_path: Path) -> None:
    target = tmp_path / 'drive'
    mine = make_staging_dir(target)
    dead = tmp_path / mine.name.replace(f'.{os.getpid()}.', f'.{_dead_pid()}.')
    dead.mkdir()
    (dead / 'half.mcap').write_bytes(b'x' * 100)
    other_host = tmp_path / f'.drive.{_dead_pid()}.00000000.abc.tmp'
    other_host.mkdir()
    other_target = tmp_path / dead.name.replace('.drive.', '.other.')
    other_target.mkdir()
    assert sweep_stale(tmp_path, 'drive') == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, other_host.name, other_target.name])


def test_outputs_lock_refuses_a_second_owner_naming_the_pid(tmp_path: Path) -> None:
    owned = rf'in use by relkd-train \(pid {os.getpid()}\)'
    with OutputLock(tmp_path, 'relkd-train'), pytest.raises(OutputLockedError, match=owned):
        OutputLock(tmp_path, 'relkd-train').acquire()
    with OutputLock(tmp_path, 'relkd-train'):  # free again once released
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_outputs_lock_of_a_dead_process_is_taken_over(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({'owner': 'relkd-train', 'pid': pid}))
    with caplog.at_level('INFO'), OutputLock(tmp_path, 'relkd-train'):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
    assert held == {'owner': 'relkd-train', 'pid': os.getpid()}
    assert f'taking over the lock of relkd-train (pid {pid})' in caplog.text


def test_outputs_lock_held_by_another_process(tmp_path: Path) -> None:
    script = ('import sys, time\nfrom relkd_core.outputs import OutputLock\n'
              f'lock = OutputLock({str(tmp_path)!r}, "relkd-train"); lock.acquire()\n'
              'print("held", flush=True); time.sleep(60)\n')
    holder = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == 'held\n'
        with pytest.raises(OutputLockedError, match=rf'\(pid {holder.pid}\)'):
            OutputLock(tmp_path, 'relkd-train').acquire()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(tmp_path, 'relkd-train'):  # the killed owner's lock is free
        pass
