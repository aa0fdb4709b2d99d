"""The exception hierarchy of relkd.

Every error the library raises on purpose derives from :class:`RelkdError`, so a caller (a CLI
entry point, a ROS node at start-up) can catch project errors in one place and let genuine bugs
propagate. Messages say what was expected, what came, and which key or argument to change.
"""

from __future__ import annotations

__all__ = [
    "BagError",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LossError",
    "ModelError",
    "OutputError",
    "OutputLockedError",
    "RelkdError",
    "SimError",
    "TeacherError",
]


class RelkdError(Exception):
    """Base class of every error raised on purpose by relkd."""


class ConfigError(RelkdError):
    """Raised when a configuration file, override or parameter is missing, malformed or invalid."""


class BagError(RelkdError):
    """Raised when a bag cannot be opened, lacks a topic, or holds an unreadable message."""


class CalibrationError(RelkdError):
    """Raised when a calibration is missing, has the wrong shape, or is not a valid transform."""


class CheckpointError(RelkdError):
    """Raised when a checkpoint is missing, corrupt, or does not match the model it should load."""


class DataError(RelkdError):
    """Raised when data (scans, frames, prepared datasets) has the wrong shape, dtype or content."""


class LossError(RelkdError):
    """Raised when a distillation loss is misconfigured or given features it cannot compare."""


class SimError(RelkdError):
    """Raised when the synthetic world or sensor simulation is given an impossible setup."""


class ModelError(RelkdError):
    """Raised when a model or sparse backend is misconfigured, unavailable, or given bad input."""


class OutputError(RelkdError):
    """Raised when an output path may not be written: it exists and is not this command's kind
    of artifact (or ``--overwrite`` is missing), it overlaps an input, or its folder is missing,
    not a folder, or not writable. A command-line usage error (exit code 2)."""


class OutputLockedError(RelkdError):
    """Raised when an output folder is in use by another live process (exit code 1)."""


class TeacherError(RelkdError):
    """Raised when a 2D teacher cannot be built or loaded, or is asked to train."""
