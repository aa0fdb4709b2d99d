"""Atomic file writes: a crash leaves either the old file or the complete new one.

Data goes to a temporary file in the destination's folder (so the rename stays on one
filesystem), is flushed to disk, and only then replaces the destination with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ['write_atomic', 'write_text_atomic']


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(binary stream)`` atomically (mode 0644)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
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
