"""Tests for relkd_core.errors: one base class catches every project error."""

from __future__ import annotations

import pytest

from relkd_core import errors
from relkd_core.errors import (
    BagError,
    CalibrationError,
    CheckpointError,
    ConfigError,
    DataError,
    LossError,
    ModelError,
    OutputError,
    OutputLockedError,
    RelkdError,
    SimError,
    TeacherError,
)

SUBCLASSES = [BagError, CalibrationError, CheckpointError, ConfigError, DataError, LossError,
              ModelError, OutputError, OutputLockedError, SimError, TeacherError]


@pytest.mark.parametrize("error_type", SUBCLASSES)
def test_errors_subclass_relkd_error(error_type: type[RelkdError]) -> None:
    assert issubclass(error_type, RelkdError)
    assert error_type.__doc__


@pytest.mark.parametrize("error_type", SUBCLASSES)
def test_errors_caught_by_base_keep_message(error_type: type[RelkdError]) -> None:
    with pytest.raises(RelkdError, match=r"^lidar\.num_beams: expected int$"):
        raise error_type("lidar.num_beams: expected int")


def test_errors_base_is_plain_exception() -> None:
    assert issubclass(RelkdError, Exception)
    assert not issubclass(RelkdError, (ValueError, TypeError))


def test_errors_all_lists_every_error() -> None:
    assert sorted(errors.__all__) == sorted(e.__name__ for e in [RelkdError, *SUBCLASSES])
