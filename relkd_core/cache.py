"""Where relkd keeps what it can recompute: one folder per kind, under ``RELKD_CACHE_DIR``.

The default is ``$XDG_CACHE_HOME/relkd`` (``~/.cache/relkd`` when unset), beside torch's own
extension cache. ``RELKD_CACHE_DIR=off`` turns every cache off. Nothing in a cache is ever the
only copy of a result: deleting the folder costs time, never data.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ['cache_dir']


def cache_dir(kind: str) -> Path | None:
    """The folder of cache ``kind`` (not created here), or None when caching is off."""
    root = os.environ.get('RELKD_CACHE_DIR', '')
    if root.strip().lower() == 'off':
        return None
    if not root:
        root = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                            'relkd')
    return Path(root) / kind
