"""Process memory policy for per-scan work: keep freed memory for the next scan.

Labelling a scan allocates tens of megabytes of short-lived tensors (voxel features per layer,
neighbour tables, the labelled cloud). With glibc's defaults much of it is handed back to the
kernel when freed (large blocks are mmap'ed and unmapped, the heap top is trimmed), so the
next scan faults the same pages in again: thousands of page faults per scan, each costing
microseconds (``test/test_memory.py`` counts them for a tiny student on a 60k-point scan).

:func:`retain_freed_memory` asks glibc (``mallopt``) to serve blocks up to 32 MiB from the
heap and to keep up to 512 MiB of free heap, so after the first scan the process reuses its own
pages. The process keeps its peak working set for its lifetime, which suits a node or a
labelling job. A ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_TOP_PAD_``
in the environment (glibc's own tunables) wins: nothing is changed then. Elsewhere than glibc
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Final

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "retain_freed_memory"]

#: Largest block served from the heap (glibc's maximum on 64-bit).
MMAP_THRESHOLD_BYTES: Final = 32 * 2**20
#: Free memory at the heap top kept rather than returned to the kernel.
TRIM_THRESHOLD_BYTES: Final = 512 * 2**20
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_ENVIRONMENT: Final = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the policy above once per process; whether it is in effect (True also when the
    environment already sets glibc's tunables)."""
    if any(name in os.environ for name in _ENVIRONMENT):
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has mallopt as a stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
