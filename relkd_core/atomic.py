"""Atomic file writes: a crash leaves either the old file or the complete new one.

Data goes to a temporary file in the destination's folder (so the rename stays on one
filesystem), is flushed to disk, and only then replaces the destination with ``os.replace``.

Every temporary file or folder is named ``.<target>.<pid>.<host>.<random>.tmp`` beside its
target, so the next run can tell the leftovers of a killed process from the work of a live one
(:func:`sweep_stale`): same host and a pid that no longer runs means nobody will finish it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ['make_staging_dir', 'pid_alive', 'staging_prefix', 'sweep_stale', 'write_atomic',
           'write_text_atomic']

# ``.<target>.<pid>.<host>.<random>.tmp``, parsed from the right (a target name may hold dots;
# the other parts never do). Names without the host part were written before it existed
# (prepare's shard folders) and count as this host's.
_STAGING = re.compile(r'^\.(?P<target>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{8})'
                      r'\.[a-z0-9_]+\.tmp$')
_STAGING_OLD = re.compile(r'^\.(?P<target>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$')


def _host_tag() -> str:
    """Eight hex digits naming this machine (a hostname may hold dots, which names split on)."""
    return f'{zlib.crc32(socket.gethostname().encode()):08x}'


def staging_prefix(target: str | os.PathLike[str]) -> str:
    """The name prefix of this process's temporaries for ``target`` (mkstemp/mkdtemp add a
    random part and the ``.tmp`` suffix)."""
    return f'.{Path(target).name}.{os.getpid()}.{_host_tag()}.'


def make_staging_dir(target: str | os.PathLike[str]) -> Path:
    """A new hidden folder beside ``target`` in which to build it before renaming; the
    staging folders of ``target`` left by dead processes are swept first."""
    target = Path(target)
    sweep_stale(target.parent, target.name)
    return Path(tempfile.mkdtemp(prefix=staging_prefix(target), suffix='.tmp',
                                 dir=target.parent))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: str | os.PathLike[str], target: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (of ``target`` only, when given) whose process is
    gone: written on this host by a pid that no longer runs. Returns what was removed.

    Another host's temporaries are never touched: its pids mean nothing here.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # no folder, nothing to sweep
        return removed
    host = _host_tag()
    for entry in entries:
        match = _STAGING.match(entry.name)
        owner = match['host'] if match else host
        match = match or _STAGING_OLD.match(entry.name)
        if match is None or (target is not None and match['target'] != target):
            continue
        pid = int(match['pid'])
        if owner != host or pid == os.getpid() or pid_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(binary stream)`` atomically (mode 0644)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=staging_prefix(path), suffix='.tmp',
                                    dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; these files are meant to be read
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_atomic(path, lambda stream: stream.write(text.encode('utf-8')))
