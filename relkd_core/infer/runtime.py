"""The online labelling runtime without ROS: a versioned vocabulary, a newest-first scan queue,
the legend latch and the statistics that ``/diagnostics`` reports.

``segment_node`` (and its managed variant) is ROS glue over these: callbacks put scans in a
:class:`ScanQueue`, the main thread labels them with :func:`label_scan`, which takes one
:class:`VocabularyVersion` for the whole scan, and :class:`LegendLatch` says when the legend of
that version must be published. A vocabulary swapped while a scan is being labelled therefore
never mixes: the cloud carries the labels of the version it started with, and the legend
published with it names that version's entries; the next cloud brings the new legend.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from relkd_core.infer.labeled import labeled_points
from relkd_core.infer.labeler import Labeler, LabelLimits, LabelResult, VocabularyEmbedding
from relkd_core.infer.palette import entry_colors
from relkd_core.taxonomy import NUSCENES16, Taxonomy

__all__ = ['LabeledScan', 'LegendLatch', 'RuntimeStatistics', 'ScanQueue', 'VocabularySlot',
           'VocabularyVersion', 'label_scan']

T = TypeVar('T')


@dataclass(frozen=True)
class VocabularyVersion:
    """One vocabulary as used for labelling: its embeddings, the (C, 3) uint8 entry colours and
    a version number that grows by one with every swap."""

    version: int
    embedding: VocabularyEmbedding
    colors: NDArray[np.uint8]

    @property
    def names(self) -> tuple[str, ...]:
        return self.embedding.vocabulary.names


class VocabularySlot:
    """The current vocabulary, swapped atomically from any thread; entry colours follow
    ``taxonomy`` (the checkpoint's, :attr:`Labeler.taxonomy`)."""

    def __init__(self, embedding: VocabularyEmbedding, taxonomy: Taxonomy = NUSCENES16) -> None:
        self._lock = threading.Lock()
        self._taxonomy = taxonomy
        self._current = VocabularyVersion(0, embedding,
                                          entry_colors(embedding.vocabulary, taxonomy))

    def current(self) -> VocabularyVersion:
        with self._lock:
            return self._current

    def swap(self, embedding: VocabularyEmbedding) -> VocabularyVersion:
        """Make ``embedding`` current; returns its new version."""
        colors = entry_colors(embedding.vocabulary, self._taxonomy)
        with self._lock:
            self._current = VocabularyVersion(self._current.version + 1, embedding, colors)
            return self._current


@dataclass(frozen=True)
class LabeledScan:
    """A labelled scan: (N,) ``points`` of LABELED_POINT_DTYPE, the labeler's ``result`` and the
    ``vocabulary`` version its labels index."""

    points: NDArray[np.void]
    result: LabelResult
    vocabulary: VocabularyVersion


def label_scan(labeler: Labeler, scan: NDArray[np.float32], slot: VocabularySlot,
               limits: LabelLimits | None = None) -> LabeledScan:
    """Label a (N, 4) xyzi scan with the vocabulary current when it starts (see module doc)
    and ``limits`` (None: the labeler's)."""
    vocabulary = slot.current()
    result = labeler.label(scan, embedding=vocabulary.embedding, limits=limits)
    return LabeledScan(labeled_points(scan, result, vocabulary.colors), result, vocabulary)


class LegendLatch:
    """Says when a legend is due: for the first cloud, and whenever a cloud's vocabulary version
    or frame differs from those of the last legend published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: tuple[int, str] | None = None

    def claim(self, version: int, frame_id: str) -> bool:
        """True (and remembered) when the legend of ``version`` in ``frame_id`` must be
        published now; False when it already is the last one published."""
        with self._lock:
            if self._published == (version, frame_id):
                return False
            self._published = (version, frame_id)
            return True

    def reset(self) -> None:
        """Forget the last legend (e.g. when the publisher is recreated)."""
        with self._lock:
            self._published = None


class ScanQueue(Generic[T]):
    """A bounded queue whose :meth:`put` drops the oldest items when full, so the consumer
    always gets the newest ``capacity`` items; :meth:`close` wakes every waiting consumer."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f'capacity must be at least 1, got {capacity}')
        self.capacity = capacity
        self._items: collections.deque[T] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: T) -> int:
        """Queue ``item``; returns how many older items were dropped to make room."""
        with self._ready:
            dropped = 0
            while len(self._items) >= self.capacity:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout_s: float, keep_waiting: Callable[[], bool] = lambda: True
            ) -> T | None:
        """The oldest queued item; None once closed, or when ``keep_waiting()`` turns false
        while nothing is queued (checked every ``timeout_s``)."""
        with self._ready:
            while not self._items:
                if self._closed or not keep_waiting():
                    return None
                self._ready.wait(timeout=timeout_s)
            if self._closed:
                return None
            return self._items.popleft()

    def clear(self) -> int:
        """Drop everything queued; returns how many."""
        with self._ready:
            count = len(self._items)
            self._items.clear()
            return count

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        with self._ready:
            return self._closed

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)


@dataclass
class _Counts:
    received: int = 0
    processed: int = 0
    dropped_stale: int = 0
    dropped_malformed: int = 0
    overlays_published: int = 0
    overlay_failures: int = 0


@dataclass
class RuntimeStatistics:
    """Thread-safe counters and a window of recent latencies; :meth:`report` gives the
    key/values of ``/diagnostics`` with rates since the previous report."""

    latency_window: int = 200
    _counts: _Counts = field(default_factory=_Counts)
    _latencies_ms: collections.deque[float] = field(init=False, repr=False)
    _last_error: str = ''
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _window: tuple[float, int, int] = field(default_factory=lambda: (time.monotonic(), 0, 0))

    def __post_init__(self) -> None:
        self._latencies_ms = collections.deque(maxlen=self.latency_window)

    def count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name`` (a field of the report, e.g. ``received``)."""
        with self._lock:
            setattr(self._counts, name, getattr(self._counts, name) + amount)

    def error(self, text: str, counter: str | None = None) -> None:
        """Remember ``text`` as the last error (and count it under ``counter``)."""
        with self._lock:
            self._last_error = text
            if counter is not None:
                setattr(self._counts, counter, getattr(self._counts, counter) + 1)

    def processed(self, latency_ms: float) -> None:
        with self._lock:
            self._counts.processed += 1
            self._latencies_ms.append(latency_ms)

    def report(self, now: float | None = None) -> dict[str, str]:
        """Counters, ``input_rate_hz``/``output_rate_hz`` since the last report, latency
        percentiles (``nan`` before the first scan) and ``last_error``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            counts = dict(vars(self._counts))
            latencies = np.asarray(self._latencies_ms, dtype=np.float64)
            start, received, processed = self._window
            self._window = (now, counts['received'], counts['processed'])
            last_error = self._last_error
        elapsed = max(now - start, 1e-9)
        report = {key: str(value) for key, value in counts.items()}
        report['input_rate_hz'] = f'{(counts["received"] - received) / elapsed:.2f}'
        report['output_rate_hz'] = f'{(counts["processed"] - processed) / elapsed:.2f}'
        for name, q in (('p50', 50), ('p95', 95), ('max', 100)):
            report[f'latency_ms_{name}'] = (f'{np.percentile(latencies, q):.1f}'
                                            if len(latencies) else str(math.nan))
        report['last_error'] = last_error
        return report
