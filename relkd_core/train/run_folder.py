"""A training run's folder (``out_dir``): claimed, locked and checked before any work.

One trainer at a time owns a run folder: a second one refuses with the owner's pid (see
:class:`relkd_core.outputs.OutputLock`). A folder that already holds checkpoints is continued
only with ``--resume``: a new run there would replace the old run's checkpoints and metrics.
The folder is marked as a run (see :mod:`relkd_core.outputs`); one written before the marker
existed is recognised by its ``config.yaml`` and checkpoints.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from relkd_core.atomic import sweep_stale
from relkd_core.data.prepared import PREPARED_KIND, is_prepared_dataset
from relkd_core.errors import OutputError
from relkd_core.outputs import (
    LOCK_NAME,
    MARKER_NAME,
    OutputLock,
    claim_output,
    mark_output,
    output_kind,
)
from relkd_core.train.config import TrainConfig

__all__ = ['CHECKPOINTS_NAME', 'FINAL_NAME', 'LAST_NAME', 'METRICS_NAME', 'RUN_KIND',
           'is_run_folder', 'own_run_folder', 'run_checkpoints']

#: The output kind of relkd-train.
RUN_KIND = 'train-run'
FINAL_NAME = 'student.pt'
LAST_NAME = 'last.pt'
METRICS_NAME = 'metrics.jsonl'
CHECKPOINTS_NAME = 'checkpoints'


def run_checkpoints(out_dir: Path) -> list[Path]:
    """The checkpoints a run folder holds: ``last.pt``, ``student.pt`` and the step files."""
    found = [out_dir / name for name in (LAST_NAME, FINAL_NAME) if (out_dir / name).exists()]
    return found + sorted((out_dir / CHECKPOINTS_NAME).glob('step_*.pt'))


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run folder written before runs were marked: a resolved
    ``config.yaml`` beside checkpoints or metrics."""
    return (path / 'config.yaml').is_file() and (
        bool(run_checkpoints(path)) or (path / METRICS_NAME).is_file())


@contextlib.contextmanager
def own_run_folder(config: TrainConfig, *, resuming: bool) -> Iterator[Path]:
    """Claim, create and lock ``config.out_dir`` for the length of the block (rank 0 only).

    Raises OutputError (exit code 2) for an ``out_dir`` that is not a run folder, that
    overlaps an input, or that holds checkpoints while ``resuming`` is false; OutputLockedError
    (exit code 1) when another trainer owns it. Temporaries of killed runs are swept. A folder
    this call created is removed again if the block fails before writing anything into it.
    """
    out = config.out_dir
    data = config.data
    inputs = [*data.bags, *(p for p in (data.prepared, data.teacher_config) if p is not None)]
    claim_output(out, kind=RUN_KIND, overwrite=False, resumable=True, parents=True,
                 inputs=inputs, recognise=is_run_folder, argument='out_dir')
    if data.bags and data.cache_dir is not None:
        claim_output(data.cache_dir, kind=PREPARED_KIND, overwrite=False, resumable=True,
                     parents=True, inputs=data.bags, recognise=is_prepared_dataset,
                     argument='data.cache_dir')
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with OutputLock(out, 'relkd-train'):
            found = run_checkpoints(out)
            if found and not resuming:
                names = ', '.join(str(p.relative_to(out)) for p in found[:3])
                more = f' and {len(found) - 3} more' if len(found) > 3 else ''
                raise OutputError(
                    f'out_dir {out} already holds a run ({names}{more}); a new run there would '
                    'replace it: pass --resume to continue it, or choose another out_dir '
                    '(--set out_dir=...)')
            if output_kind(out) != RUN_KIND:
                mark_output(out, RUN_KIND)
            # We own the folder: a temporary of a dead process will never be finished.
            sweep_stale(out)
            sweep_stale(out / CHECKPOINTS_NAME)
            yield out
    finally:
        if created and _holds_nothing(out):
            shutil.rmtree(out, ignore_errors=True)


def _holds_nothing(folder: Path) -> bool:
    """Only this module's marker and lock, and empty folders."""
    for entry in folder.iterdir():
        if entry.name in (MARKER_NAME, LOCK_NAME):
            continue
        if not entry.is_dir() or entry.is_symlink() or not _holds_nothing(entry):
            return False
    return True
