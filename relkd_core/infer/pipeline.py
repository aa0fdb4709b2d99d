"""The per-scan labelling core shared by ``segment_node`` and ``relkd-label``: a PointCloud2
message in, a labelled scan (points, labels, the vocabulary version they index) out.

:class:`ReadSettings` is everything that says how a message becomes labels besides the
vocabulary: the :class:`~relkd_core.data.scan.ScanInput` (the checkpoint's unless overridden,
each override noted for the log) and the labeler's :class:`~relkd_core.infer.labeler.LabelLimits`.
:func:`read_settings` builds and validates them without touching the labeler, so a caller can
check new settings on one thread while scans are labelled on another, and
:meth:`LabelingCore.swap` makes them current at once. A scan is read with the settings current
when it arrives and labelled with the vocabulary and limits current when labelling starts.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relkd_core.data.scan import Scan, ScanInput, override_scan_input, read_scan
from relkd_core.errors import DataError
from relkd_core.infer.labeler import Labeler, LabelLimits
from relkd_core.infer.runtime import LabeledScan, VocabularySlot, label_scan

__all__ = ['LabelingCore', 'ReadSettings', 'read_cloud', 'read_settings']


@dataclass(frozen=True)
class ReadSettings:
    """How scans are read and labelled: ``scan_input``, ``limits`` and the ``notes`` that say
    where they differ from what the checkpoint records (one log line each)."""

    scan_input: ScanInput
    limits: LabelLimits
    notes: tuple[str, ...] = ()


def read_settings(recorded: ScanInput | None, overrides: Mapping[str, tuple[Any, str]], *,
                  score_threshold: float = -1.0, max_points: int | None = None,
                  recorded_by: str = 'the checkpoint') -> ReadSettings:
    """The settings for a checkpoint that records ``recorded`` (None: nothing) with
    ``overrides`` (ScanInput field → ``(value or None, origin)``, see
    :func:`~relkd_core.data.scan.override_scan_input`); the range limits of the resulting
    ScanInput bound the labelled points too. Validates only: raises ConfigError for a value out
    of range and changes nothing."""
    scan_input, notes = override_scan_input(recorded, overrides, recorded_by=recorded_by)
    limits = Labeler.check_limits(score_threshold=score_threshold,
                                  min_range_m=scan_input.min_range_m,
                                  max_range_m=scan_input.max_range_m, max_points=max_points)
    return ReadSettings(scan_input, limits, tuple(notes))


def read_cloud(msg: Any, scan_input: ScanInput) -> Scan:
    """:func:`~relkd_core.data.scan.read_scan` for untrusted messages: any failure to read one
    (a malformed layout, values numpy refuses) is a DataError, which callers log and drop."""
    try:
        return read_scan(msg, scan_input)
    except DataError:
        raise
    except (ValueError, TypeError, OverflowError) as err:
        raise DataError(f'unreadable PointCloud2 ({type(err).__name__}: {err})') from err


class LabelingCore:
    """A labeler with swappable :class:`ReadSettings` and a
    :class:`~relkd_core.infer.runtime.VocabularySlot`: :meth:`read` then :meth:`label` turn a
    message into a :class:`~relkd_core.infer.runtime.LabeledScan`. Never writes to the labeler:
    settings and vocabulary are swapped here, from any thread."""

    def __init__(self, labeler: Labeler, settings: ReadSettings) -> None:
        self.labeler = labeler
        self.vocabulary = VocabularySlot(labeler.embedding, labeler.taxonomy)
        self._lock = threading.Lock()
        self._settings = settings

    @property
    def settings(self) -> ReadSettings:
        with self._lock:
            return self._settings

    def swap(self, settings: ReadSettings) -> None:
        """Read and label the next scans with ``settings``."""
        with self._lock:
            self._settings = settings

    def read(self, msg: Any) -> Scan:
        """The scan of a PointCloud2 as the current ScanInput reads it; DataError when
        malformed."""
        return read_cloud(msg, self.settings.scan_input)

    def label(self, scan: Scan) -> LabeledScan:
        """Labels of ``scan`` with the current limits and vocabulary version; DataError for a
        scan the limits refuse (too many points)."""
        return label_scan(self.labeler, scan.points, self.vocabulary, self.settings.limits)
