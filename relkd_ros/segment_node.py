"""``segment_node``: labels every lidar point with an open vocabulary, live.

Subscribes a ``sensor_msgs/PointCloud2`` (``points``), optionally camera images and infos, and
the tf tree; publishes, with the input header, a labeled cloud (x, y, z, intensity, label,
score, rgb), an overlay image per synced camera, a latched legend ``MarkerArray`` and
``/diagnostics``. Parameters: :mod:`relkd_ros.params`; what the node does once configured:
:mod:`relkd_ros.segment`. The managed (lifecycle) variant is
:mod:`relkd_ros.segment_lifecycle_node`.

A full queue drops its oldest scan, so the node never lags behind the sensor by more than
``queue_size`` scans. A malformed message is logged (throttled), counted and dropped; bad
configuration is fatal at start-up: one line naming the parameter, exit status 1.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
)
from rclpy.node import Node

from relkd_core.errors import ConfigError, RelkdError
from relkd_ros.environment import DDS_PROFILE
from relkd_ros.params import (
    SegmentParams,
    allowed_values,
    default_value,
    parameter_descriptor,
    parameter_names,
    params_from_values,
)

if TYPE_CHECKING:
    from relkd_ros.segment import SegmentRuntime

__all__ = ['SegmentNode', 'main', 'run']

NODE_NAME = 'relkd_segment'


class SegmentParameters:
    """Declaring, reading and run-time setting of the catalogue's parameters, for a node
    class that holds ``runtime`` (None while not configured)."""

    runtime: SegmentRuntime | None
    params: SegmentParams

    def declare_segment_parameters(self: Any) -> None:
        """Declare every parameter; ConfigError naming the parameter and what it accepts when
        a given value has the wrong type or is out of range."""
        for name in parameter_names():
            try:
                self.declare_parameter(name, default_value(name), parameter_descriptor(name))
            except (InvalidParameterTypeException, InvalidParameterValueException) as err:
                given = getattr(self, '_parameter_overrides', {}).get(name)
                shown = f' {given.value!r}' if given is not None else ''
                raise ConfigError(f'parameter {name}: got{shown}, expected '
                                  f'{allowed_values(name)}') from err
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def read_segment_parameters(self: Any, changed: list[Any] = ()) -> SegmentParams:  # type: ignore[assignment]
        """The validated parameters (with ``changed`` applied); raises ConfigError."""
        values = {name: self.get_parameter(name).value for name in parameter_names()}
        values.update({p.name: p.value for p in changed})
        params = params_from_values(values)
        if not Path(params.checkpoint).is_file():
            raise ConfigError(f'checkpoint: no such file {params.checkpoint!r}')
        return params

    def _on_set_parameters(self, changed: list[Any]) -> SetParametersResult:
        try:
            params = self.read_segment_parameters(changed)
            apply = self.runtime.prepare(params) if self.runtime is not None else None
        except RelkdError as err:
            return SetParametersResult(successful=False, reason=str(err))
        # Applied here rather than in a post-set callback, which Humble lacks; everything that
        # can fail has been done above.
        self.params = params
        if apply is not None:
            apply()
        return SetParametersResult(successful=True)


class SegmentNode(SegmentParameters, Node):
    """The node (see the module doc): configured and active from construction. Raises
    RelkdError for bad parameters or an unusable checkpoint."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = None
        self.declare_segment_parameters()
        self.params = self.read_segment_parameters()
        # Imported once the parameters are good: it loads torch (seconds), which a node
        # refusing its configuration never needs.
        from relkd_ros.segment import SegmentRuntime

        self.runtime = SegmentRuntime(self, self.params)
        self.runtime.activate()

    def diagnostics(self) -> dict[str, str]:
        return self.runtime.diagnostics() if self.runtime is not None else {}


def use_shipped_dds_profile() -> str | None:
    """Point Fast DDS at the profile shipped in ``config/`` (larger shared-memory segments, so
    100k+-point clouds go through shared memory instead of fragmented UDP) unless a profile
    was chosen already, or ``RELKD_NO_DDS_PROFILE`` is set (the launch file sets it for
    ``dds_profile:=none``). Returns the profile used, or None. Only affects this process."""
    from relkd_ros.environment import PROFILE_VARIABLES, profile_environment

    if any(os.environ.get(name) for name in (*PROFILE_VARIABLES, 'RELKD_NO_DDS_PROFILE')):
        return None
    path = shipped_config(DDS_PROFILE)
    if path is None:
        return None
    os.environ.update(profile_environment(str(path)))
    return str(path)


def shipped_config(name: str) -> Path | None:
    """A file of ``config/``: from the source tree, the colcon share folder, or the pip data
    files under ``sys.prefix``."""
    candidates = [Path(__file__).resolve().parents[1] / 'config' / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory('relkd_ros')) / 'config' / name)
    except (ImportError, LookupError, ValueError, OSError):
        pass
    candidates.append(Path(sys.prefix) / 'share' / 'relkd_ros' / 'config' / name)
    return next((path for path in candidates if path.is_file()), None)


def run(make_node: Callable[[], Any], args: list[str] | None, *,
        bring_up: Callable[[Any], None] | None = None) -> int:
    """Start ``make_node()`` with ROS arguments ``args``: callbacks spin on a background
    thread, the model runs on this (main) thread. Returns the exit status: 0 after a normal
    shutdown, 1 (after one line naming the cause) when the node cannot start."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    use_shipped_dds_profile()
    rclpy.init(args=args)
    node = None
    executor = SingleThreadedExecutor()
    stopped = threading.Event()
    try:
        node = make_node()
        executor.add_node(node)
        if bring_up is not None:
            bring_up(node)
        spinner = threading.Thread(target=_spin, args=(executor, stopped), daemon=True,
                                   name='relkd-executor')
        spinner.start()
        from relkd_core.infer.online import serve

        serve(lambda: node.runtime, lambda: not stopped.is_set() and rclpy.ok())
    except (RelkdError, ParameterException) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {_one_line(err)}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stopped.set()
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _one_line(err: Exception) -> str:
    text = ' '.join(str(err).split())
    if isinstance(err, ParameterException) and not isinstance(err, RelkdError):
        return f'parameter {text}'
    return text


def _spin(executor: Any, stopped: threading.Event) -> None:
    from rclpy.executors import ExternalShutdownException

    try:
        executor.spin()
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    finally:
        stopped.set()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``segment_node`` / ``relkd-segment`` (ROS arguments: ``--ros-args ...``)."""
    return run(SegmentNode, args)


if __name__ == '__main__':
    sys.exit(main())
