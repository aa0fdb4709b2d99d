"""Where a command may write: one policy for every output path of every ``relkd-*`` command.

Nothing a user has is lost to a mistyped path:

- An existing output is replaced only when it is the kind of artifact the command itself
  writes, and only with ``--overwrite``. The kind is read from a marker file inside a folder
  output (:data:`MARKER_NAME`, written by :func:`mark_output` before the folder is renamed into
  place) or recognised by the command from its own manifest (``recognise``: a prepared
  dataset's ``plan.json``, a TorchScript file's metadata). Anything else (a folder of notes, a
  recorded bag, a checkpoint) is refused whatever the flags say. A resumable output (a prepared
  dataset, a training run) of the right kind is continued instead of replaced.
- An output never overlaps an input: not the input itself, nothing inside it and nothing
  containing it. Paths are compared resolved (symlinks, ``..`` and ``.``).
- The folder the output goes into exists (or, with ``parents``, can be created), is a folder
  and is writable: checked by :func:`claim_output` before any expensive step.

A folder that one process works in for a long time (a training run) is locked while it does
(:class:`OutputLock`); a second process refuses with the owner's pid, and the lock of a process
that died is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from relkd_core.atomic import make_staging_dir, write_text_atomic
from relkd_core.errors import OutputError, OutputLockedError

__all__ = ['LOCK_NAME', 'MARKER_NAME', 'OutputLock', 'claim_output', 'mark_output',
           'output_kind', 'replace_output']

_LOG = logging.getLogger(__name__)

#: The marker file of a folder output: ``{"kind": ...}``.
MARKER_NAME = '.relkd-output.json'
#: The lock file of a folder a process owns (see :class:`OutputLock`).
LOCK_NAME = '.relkd-lock'


def mark_output(folder: str | os.PathLike[str], kind: str) -> None:
    """Mark ``folder`` as a ``kind`` output (write it before renaming the folder into place,
    so that a complete output is never unmarked)."""
    write_text_atomic(Path(folder) / MARKER_NAME, json.dumps({'kind': kind}) + '\n')


def output_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind named by the marker of folder ``path``; None without a readable marker."""
    try:
        marker = json.loads((Path(path) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    kind = marker.get('kind') if isinstance(marker, dict) else None
    return kind if isinstance(kind, str) else None


def _shown(path: Path, resolved: Path) -> str:
    """``path`` as given, plus where it leads when that differs."""
    return str(path) if path.absolute() == resolved else f'{path} (= {resolved})'


def _check_inputs(out: Path, target: Path, inputs: Sequence[str | os.PathLike[str]],
                  name: str) -> None:
    for given in inputs:
        source = Path(given).expanduser()
        resolved = source.resolve()
        if target == resolved:
            relation = 'is the input'
        elif resolved in target.parents:
            relation = 'lies inside the input'
        elif target in resolved.parents:
            relation = 'contains the input'
        else:
            continue
        raise OutputError(f'{name} {_shown(out, target)} {relation} {_shown(source, resolved)}; '
                          'choose an output path apart from every input')


def _check_folder(target: Path, name: str, out: Path, parents: bool) -> None:
    """The folder ``target`` goes into: existing (or creatable, with ``parents``), a folder,
    writable."""
    folder = target.parent
    while parents and not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.exists():
        raise OutputError(f'{name} {out}: folder {folder} does not exist')
    if not folder.is_dir():
        raise OutputError(f'{name} {out}: {folder} is a file, not a folder')
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f'{name} {out}: folder {folder} is not writable')


def claim_output(out: str | os.PathLike[str], *, kind: str, overwrite: bool,
                 inputs: Sequence[str | os.PathLike[str]] = (), resumable: bool = False,
                 file: bool = False, parents: bool = False,
                 recognise: Callable[[Path], bool] | None = None,
                 argument: str = '--out') -> None:
    """Check that a command may write its ``kind`` output at ``out``; raise OutputError if not.

    Call it before any expensive step. It writes nothing.

    Args:
        out: the output path as the user gave it.
        kind: what the command writes there (``'synth-bag'``, ``'prepared-dataset'``, ...).
        overwrite: the user allows replacing an existing output of the same kind.
        inputs: every path the command reads; the output may not be one, lie inside one or
            contain one.
        resumable: an existing output of the same kind is continued (no ``overwrite`` needed).
        file: the output is a file (otherwise a folder); a file output's kind is known only
            through ``recognise``.
        parents: missing folders above ``out`` may be created (the nearest existing one must
            be a writable folder); otherwise the folder holding ``out`` must exist.
        recognise: whether an existing path without a marker is this kind (a command's own
            manifest, or a file format); None: only the marker counts.
        argument: how the path is named in messages (``--out``, ``out_dir``).

    An existing empty folder counts as free for a folder output: nothing in it can be lost.
    """
    out = Path(out).expanduser()
    target = out.resolve()
    name = argument
    _check_inputs(out, target, inputs, name)
    _check_folder(target, name, out, parents)
    if not os.path.lexists(out):
        return
    if out.is_symlink():
        raise OutputError(f'{name} {out} is a symbolic link to {target}; give the path it leads '
                          'to, or a new one')
    what = f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"
    if target.is_dir():
        if file:
            raise OutputError(f'{name} {out} is a folder, but {what} is a file; give a file '
                              'path')
        marked = output_kind(target)
        same = marked == kind or (marked is None and recognise is not None
                                  and recognise(target))
        if not same:
            if all(entry.name == LOCK_NAME for entry in target.iterdir()):
                return  # an empty folder (or one a process has just locked): nothing to lose
            found = (f'{marked} (written by relkd)' if marked is not None
                     else 'a folder that relkd did not write')
            raise OutputError(f'{name} {out} already exists and is {found}, not {what}; it is '
                              'never replaced: choose a new path')
        if not os.access(target, os.W_OK | os.X_OK):
            raise OutputError(f'{name} {out}: folder {target} is not writable')
    else:
        if not file:
            raise OutputError(f'{name} {out} is a file, but {what} is a folder; choose a new '
                              'path')
        if recognise is None or not recognise(target):
            raise OutputError(f'{name} {out} already exists and is not {what}; it is never '
                              'replaced: choose a new path')
    if overwrite or resumable:
        return
    raise OutputError(f'{name} {out} already exists ({what}); choose a new path or pass '
                      '--overwrite')


class OutputLock:
    """Exclusive ownership of an output folder while a process works in it (a training run).

    The lock is a kernel ``flock`` on :data:`LOCK_NAME` inside the folder, which also records
    the owner's pid: a second process refuses with that pid, and a lock left by a process that
    died (killed, machine rebooted) is free again, taken over with one log line. The file is
    removed on release. Use as a context manager; the folder must exist.
    """

    def __init__(self, folder: str | os.PathLike[str], owner: str) -> None:
        self.folder = Path(folder)
        self.owner = owner
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> None:
        """Take the lock or raise OutputLockedError naming its owner."""
        for _ in range(100):  # retried only while other processes release the lock meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise OutputLockedError(f'{self.folder}: cannot create its lock file '
                                        f'{LOCK_NAME} ({err.strerror})') from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f'{self.folder} is in use by {holder.get("owner", "another process")} (pid '
                    f'{holder.get("pid", "unknown")}); wait for it to finish, stop it, or '
                    'choose another folder') from None
            except OSError as err:  # a filesystem without locks
                os.close(fd)
                raise OutputLockedError(f'{self.folder}: cannot lock {LOCK_NAME} '
                                        f'({err.strerror}); use a folder on a local disk') from err
            except BaseException:
                os.close(fd)
                raise
            # The owner we waited for may have removed the file between our open and flock:
            # then this lock is on a file nobody else sees; take the one at the path.
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        else:
            raise OutputLockedError(f'{self.folder}: cannot take its lock {self.path}')
        previous = self._holder(fd)
        if previous.get('pid') not in (None, os.getpid()):
            _LOG.info('%s: taking over the lock of %s (pid %s), which is no longer running',
                      self.folder, previous.get('owner', 'a process'), previous['pid'])
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({'owner': self.owner, 'pid': os.getpid()}).encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> dict[str, object]:
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b'{}')
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Let go of the lock and remove its file (while still holding it): a lock file left
        behind means its process died holding it."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def replace_output(built: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Move the complete output ``built`` (beside ``out``) to ``out``, replacing whatever
    :func:`claim_output` allowed to be there. Two renames: ``out`` is missing only between
    them, and the old output is deleted only once the new one is in place."""
    built, out = Path(built), Path(out)
    if not os.path.lexists(out):
        os.rename(built, out)
        return
    trash = make_staging_dir(out)
    old = trash / out.name
    try:
        os.rename(out, old)
        try:
            os.rename(built, out)
        except BaseException:
            os.rename(old, out)  # the old output stays rather than vanish
            raise
    finally:
        if not os.path.lexists(old) or os.path.lexists(out):
            shutil.rmtree(trash, ignore_errors=True)
