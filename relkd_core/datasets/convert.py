"""Convert dataset scenes into one ROS 2 bag each, all or nothing.

Every scene is built (and so checked) before the first bag is written; bags are written into
a hidden folder beside ``out`` (in parallel with ``workers`` > 1) and the folder is renamed
to ``out`` only when every bag is complete, so a failure or an interruption leaves no partial
output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from relkd_core.data.bag import Storage
from relkd_core.datasets.scene import Scene, SceneBagSummary, write_scene_bag
from relkd_core.outputs import mark_output, replace_output

__all__ = ['CONVERTED_KIND', 'ConvertSummary', 'convert_scenes']

#: The output kind of a folder of converted bags (see :mod:`relkd_core.outputs`).
CONVERTED_KIND = 'converted-bags'


@dataclass
class ConvertSummary:
    """Totals over the bags of one conversion."""

    out: Path
    bags: list[SceneBagSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scans(self) -> int:
        return sum(b.scans for b in self.bags)

    @property
    def labelled_scans(self) -> int:
        return sum(b.labelled_scans for b in self.bags)

    @property
    def images(self) -> int:
        return sum(b.images for b in self.bags)

    @property
    def points(self) -> int:
        return sum(b.points for b in self.bags)

    @property
    def bytes_read(self) -> int:
        return sum(b.bytes_read for b in self.bags)


def _write(scene: Scene, path: Path, storage: Storage) -> SceneBagSummary:
    return write_scene_bag(scene, path, storage=storage)


def convert_scenes(scenes: Sequence[Scene], out: str | os.PathLike[str], *,
                   storage: Storage = 'mcap', workers: int = 1,
                   on_bag: Callable[[SceneBagSummary], None] | None = None) -> ConvertSummary:
    """Write each scene as ``<out>/<scene.name>/`` (a bag folder); ``out`` (and any missing
    folder above it) appears complete.

    An existing ``out`` (which the caller has claimed, see
    :func:`relkd_core.outputs.claim_output`) is replaced only once the new one is complete.
    """
    out = Path(out)
    started = time.perf_counter()
    summary = ConvertSummary(out=out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.tmp', dir=out.parent))
    try:
        jobs = [(scene, staging / scene.name) for scene in scenes]
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                futures = [pool.submit(_write, scene, path, storage) for scene, path in jobs]
                for future in futures:
                    summary.bags.append(future.result())
                    if on_bag is not None:
                        on_bag(summary.bags[-1])
        else:
            for scene, path in jobs:
                summary.bags.append(_write(scene, path, storage))
                if on_bag is not None:
                    on_bag(summary.bags[-1])
        for bag in summary.bags:
            bag.path = out / bag.path.name
        mark_output(staging, CONVERTED_KIND)
        replace_output(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - started
    return summary
