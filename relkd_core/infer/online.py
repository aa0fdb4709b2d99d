"""The node's labelling loop without ROS: callbacks hand clouds to :meth:`OnlineLabeling.receive`
(read and queued at once, cheap), the main thread labels the newest with :meth:`~OnlineLabeling.
label` (see :func:`serve`), and :meth:`~OnlineLabeling.diagnostics` gives what ``/diagnostics``
reports. Settings and vocabulary swap through the :class:`~relkd_core.infer.pipeline.
LabelingCore`, from any thread, without touching the labeler.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relkd_core.data.scan import Scan
from relkd_core.infer.labeler import Labeler, resolve_vocabulary
from relkd_core.infer.pipeline import LabelingCore, ReadSettings, read_settings
from relkd_core.infer.runtime import LabeledScan, LegendLatch, RuntimeStatistics, ScanQueue
from relkd_core.models.distilled import load_checkpoint

__all__ = ['LabelingRequest', 'OnlineLabeling', 'ScanJob', 'serve']


@dataclass(frozen=True, kw_only=True)
class LabelingRequest:
    """What a node's parameters ask of the labelling: the vocabulary (``vocabulary`` names,
    else ``vocabulary_file``, else the checkpoint's; see
    :func:`~relkd_core.infer.labeler.resolve_vocabulary`), the ScanInput ``overrides`` (field →
    ``(value or None, origin)``), ``score_threshold`` and ``max_points``."""

    vocabulary: tuple[str, ...] = ()
    vocabulary_file: str = ''
    overrides: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    score_threshold: float = -1.0
    max_points: int | None = None

    def settings(self, labeler: Labeler) -> ReadSettings:
        """The read settings this asks for with ``labeler``'s checkpoint (validated)."""
        return read_settings(labeler.checkpoint.scan_input, self.overrides,
                             score_threshold=self.score_threshold, max_points=self.max_points)


@dataclass(frozen=True)
class ScanJob:
    """A cloud waiting for the model: its message ``header``, the read ``scan`` and when it
    was received (``time.monotonic_ns``)."""

    header: Any
    scan: Scan
    received_ns: int


class OnlineLabeling:
    """A :class:`LabelingCore` with the newest-first queue, the legend latch and the
    statistics of a live node."""

    def __init__(self, core: LabelingCore, request: LabelingRequest, queue_size: int) -> None:
        self.core, self.request = core, request
        #: Seconds :meth:`start` spent on :meth:`Labeler.warm_up` (0: none).
        self.warm_up_s = 0.0
        self.queue: ScanQueue[ScanJob] = ScanQueue(queue_size)
        self.statistics = RuntimeStatistics()
        self.legend = LegendLatch()

    @classmethod
    def start(cls, checkpoint: str, request: LabelingRequest, *, device: str = 'cpu',
              queue_size: int = 1, precision: str = 'float32') -> OnlineLabeling:
        """Load ``checkpoint``, embed the requested vocabulary, resolve the settings (see
        :attr:`notes` for the overrides to log) and warm the labeler up, so the first scan is
        as fast as the next; the student runs in ``precision`` (see :class:`Labeler`). Raises
        RelkdError when any of it fails."""
        loaded = load_checkpoint(checkpoint)
        labeler = Labeler(loaded, resolve_vocabulary(request.vocabulary, request.vocabulary_file,
                                                     loaded), device, precision=precision)
        online = cls(LabelingCore(labeler, request.settings(labeler)), request, queue_size)
        online.warm_up_s = labeler.warm_up()
        return online

    @property
    def notes(self) -> tuple[str, ...]:
        """Where the current settings differ from what the checkpoint records, one line each."""
        return self.core.settings.notes

    def prepare(self, request: LabelingRequest) -> Callable[[], list[str]]:
        """Check ``request`` (embedding a changed vocabulary now) and return the function that
        makes it current and gives the lines to log. Raises RelkdError, changing nothing, when
        it cannot be applied; writes nothing to the labeler, on any thread."""
        core, labeler = self.core, self.core.labeler
        embedding = None
        if (request.vocabulary, request.vocabulary_file) != (self.request.vocabulary,
                                                             self.request.vocabulary_file):
            embedding = labeler.embed(resolve_vocabulary(
                request.vocabulary, request.vocabulary_file, labeler.checkpoint))
        settings = request.settings(labeler)

        def apply() -> list[str]:
            previous, self.request = core.settings, request
            core.swap(settings)
            lines: list[str] = []
            if settings.notes != previous.notes:
                lines += list(settings.notes) or [
                    f'reading scans as the checkpoint records: {settings.scan_input}']
            if embedding is not None:
                version = core.vocabulary.swap(embedding)
                lines.append(f'vocabulary {version.version} is now {list(version.names)}')
            return lines
        return apply

    def receive(self, msg: Any) -> None:
        """Read a PointCloud2 and queue it (dropping the oldest when full, counted as stale);
        DataError for a malformed one, which the caller reports with :meth:`dropped`."""
        received_ns = time.monotonic_ns()
        self.statistics.count('received')
        scan = self.core.read(msg)
        dropped = self.queue.put(ScanJob(msg.header, scan, received_ns))
        if dropped:
            self.statistics.count('dropped_stale', dropped)

    def dropped(self, what: str, err: Exception) -> None:
        """Count a malformed message and remember why."""
        self.statistics.error(f'{what}: {err}', 'dropped_malformed')

    def label(self, job: ScanJob) -> tuple[LabeledScan, bool]:
        """The labelled scan of ``job`` and whether the legend of its vocabulary version must
        be published with it (first cloud, new version or new frame)."""
        labeled = self.core.label(job.scan)
        due = self.legend.claim(labeled.vocabulary.version, str(job.header.frame_id))
        return labeled, due

    def done(self, job: ScanJob) -> None:
        """Count ``job`` as published, with its latency since it was received."""
        self.statistics.processed((time.monotonic_ns() - job.received_ns) / 1e6)

    def diagnostics(self) -> dict[str, str]:
        """The key/values /diagnostics reports (rates over the last period)."""
        report = self.statistics.report()
        report['queue_length'] = str(len(self.queue))
        report['vocabulary'] = ', '.join(self.core.vocabulary.current().names)
        return report


def _still(keep_running: Callable[[], bool], runtime_of: Callable[[], object],
           runtime: object) -> bool:
    return keep_running() and runtime_of() is runtime


class _Worker(Protocol):
    queue: ScanQueue[ScanJob]

    def process(self, job: ScanJob) -> None: ...


def serve(runtime_of: Callable[[], _Worker | None], keep_running: Callable[[], bool]) -> None:
    """Process queued scans of whatever ``runtime_of()`` gives (the main thread's loop) until
    ``keep_running()`` turns false; waits while there is none (an unconfigured managed node)."""
    while keep_running():
        runtime = runtime_of()
        if runtime is None:
            time.sleep(0.05)
            continue
        job = runtime.queue.get(0.1, functools.partial(_still, keep_running, runtime_of,
                                                       runtime))
        if job is not None:
            runtime.process(job)
