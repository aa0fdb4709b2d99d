"""Helpers for tests (and the benchmark) that talk to a real ``segment_node`` process over DDS.

:func:`start_node` runs the node as a subprocess on a private ROS domain; :class:`Probe` is the
other side: a node in the test process, spun in a background thread, that publishes inputs,
collects outputs and sets parameters.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def free_domain_id() -> int:
    """A random ROS domain id (1..101) so concurrent test modules do not see each other."""
    return random.SystemRandom().randint(1, 101)


def node_command(params: dict[str, Any], module: str = 'relkd_ros.segment_node',
                 ros_args: Sequence[str] = (), argv: Sequence[str] = ()) -> list[str]:
    """The node's command line: ``argv``, then after ``--ros-args`` the ``ros_args`` as they
    are and ``-p`` for each of ``params``."""
    args = [sys.executable, '-m', module, *argv, '--ros-args', *ros_args]
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            text = '[' + ', '.join(f"'{v}'" for v in value) + ']'
        elif isinstance(value, bool):
            text = 'true' if value else 'false'
        else:
            text = str(value)
        args += ['-p', f'{name}:={text}']
    return args


def process_environment(domain_id: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a node process: this one's, on ``domain_id``, plus ``extra``. No
    Fast DDS profile variable is inherited, so a test controls which profile is loaded."""
    env = {k: v for k, v in os.environ.items() if not k.endswith('_DEFAULT_PROFILES_FILE')}
    env.update(ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp', OMP_NUM_THREADS='1', **(extra or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    return env


@contextmanager
def running_node(params: dict[str, Any], domain_id: int, log_path: Path, *,
                 module: str = 'relkd_ros.segment_node', ros_args: Sequence[str] = (),
                 argv: Sequence[str] = (), env: dict[str, str] | None = None
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """The node as a subprocess; always stopped (SIGINT, then SIGKILL) on exit."""
    with open(log_path, 'wb') as log:
        process = subprocess.Popen(node_command(params, module, ros_args, argv), cwd=ROOT,
                                   env=process_environment(domain_id, env), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


class Probe:
    """A test-side node in its own rclpy context on ``domain_id``."""

    def __init__(self, domain_id: int, name: str = 'relkd_probe') -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.received: dict[str, list[tuple[float, Any]]] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down under spin_once
                return

    def qos(self, reliable: bool = True, depth: int = 10, latched: bool = False) -> Any:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable
                          else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                          else DurabilityPolicy.VOLATILE)

    def subscribe(self, msg_type: Any, topic: str, qos: Any = None) -> None:
        self.received[topic] = []

        def store(msg: Any) -> None:
            with self._lock:
                self.received[topic].append((time.perf_counter(), msg))

        self.node.create_subscription(msg_type, topic, store, qos or self.qos())

    def publisher(self, msg_type: Any, topic: str, qos: Any = None) -> Any:
        return self.node.create_publisher(msg_type, topic, qos or self.qos())

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return [msg for _, msg in self.received[topic]]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    def wait_matched(self, publisher: Any, timeout_s: float = 20.0) -> bool:
        return self.wait_for(lambda: publisher.get_subscription_count() > 0, timeout_s)

    def set_parameters(self, node_name: str, values: dict[str, Any],
                       timeout_s: float = 30.0) -> list[Any]:
        """Set parameters of another node through its set_parameters service."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f'/{node_name}/set_parameters')
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise TimeoutError(f'/{node_name}/set_parameters is not available')
            request = SetParameters.Request()
            request.parameters = [Parameter(k, value=v).to_parameter_msg()
                                  for k, v in values.items()]
            future = client.call_async(request)
            if not self.wait_for(future.done, timeout_s):
                raise TimeoutError('set_parameters did not answer')
            return list(future.result().results)
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)
        self.node.destroy_node()


def diagnostics_values(msg: Any) -> dict[str, str]:
    return {kv.key: kv.value for status in msg.status for kv in status.values}


def stamped_header(t_ns: int, frame_id: str) -> Any:
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
    return header


def xyzi_cloud(points: np.ndarray, t_ns: int, frame_id: str = 'lidar',
               height: int = 1) -> Any:
    """An rclpy PointCloud2 (x, y, z, intensity float32) of a (N, 4) float32 array."""
    from relkd_ros.conversions import cloud_message

    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('intensity', '<f4')])
    structured = np.ascontiguousarray(points.astype(np.float32)).view(dtype).reshape(-1)
    return cloud_message(stamped_header(t_ns, frame_id), structured, height,
                         len(structured) // height)


def field_layout(msg: Any) -> list[tuple[str, int, int]]:
    return [(f.name, f.offset, f.datatype) for f in msg.fields]


def node_log_tail(path: Path, lines: int = 40) -> str:
    return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])


def percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if len(values) else float('nan')
