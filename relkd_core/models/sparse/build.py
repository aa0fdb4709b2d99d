"""``python -m relkd_core.models.sparse.build``: build the compiled fast path of the ``native``
backend now (or load it from torch's extension cache), as ``make install`` does, so that no
later process pays the build on its first scan. Exit status 0 when the fast path is available,
1 when the PyTorch reference will run instead (the reason is printed)."""

from __future__ import annotations

import logging
import sys
import time

from relkd_core.models.sparse import native_fast

__all__ = ["main"]


def main() -> int:
    """Build or load the fast path; 0 when available, 1 otherwise."""
    if native_fast.disabled():
        print("native sparse backend: compiled fast path turned off (RELKD_NATIVE_FAST=0)")
        return 1
    logging.basicConfig(format="%(message)s")
    started = time.perf_counter()
    if native_fast.fast_ops() is None:
        return 1
    print(f"native sparse backend: compiled fast path ready "
          f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
