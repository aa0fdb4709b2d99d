"""``segment_lifecycle_node``: the managed (lifecycle) variant of ``segment_node``.

For Nav2-style bring-up (``nav2_lifecycle_manager`` or ``ros2 lifecycle set``):

- configure: read and validate the parameters, load the checkpoint and embed the vocabulary;
- activate: create the subscriptions, publishers and the diagnostics timer, start labelling;
- deactivate: destroy them (after the scan in hand) and drop queued scans;
- cleanup: release the model; shutdown: both.

A failed configure (bad parameter, missing checkpoint) logs one line and leaves the node
unconfigured, so a lifecycle manager sees the failure. Parameters, topics and behaviour
otherwise equal ``segment_node``'s.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from relkd_core.errors import RelkdError
from relkd_ros.segment_node import NODE_NAME, SegmentParameters, run

__all__ = ['SegmentLifecycleNode', 'main']


class SegmentLifecycleNode(SegmentParameters, LifecycleNode):
    """The managed node (see the module doc); unconfigured after construction."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = None
        self.declare_segment_parameters()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = self.read_segment_parameters()
            from relkd_ros.segment import SegmentRuntime  # torch: only once configured

            self.runtime = SegmentRuntime(self, self.params)
        except (RelkdError, ParameterException) as err:
            self.get_logger().error(f'cannot configure: {" ".join(str(err).split())}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f'configured: {self.params.checkpoint}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is None:
            return TransitionCallbackReturn.FAILURE
        self.runtime.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self.runtime.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.deactivate()
            runtime.queue.close()

    def diagnostics(self) -> dict[str, str]:
        return self.runtime.diagnostics() if self.runtime is not None else {}


def main(args: list[str] | None = None) -> int:
    """Entry point of ``segment_lifecycle_node`` (ROS arguments: ``--ros-args ...``). With
    ``--autostart`` before ``--ros-args`` the node configures and activates itself."""
    argv = list(sys.argv[1:] if args is None else args)
    autostart = '--autostart' in argv
    if autostart:
        argv.remove('--autostart')

    def bring_up(node: SegmentLifecycleNode) -> None:
        if autostart and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()

    return run(SegmentLifecycleNode, [sys.argv[0], *argv], bring_up=bring_up)


if __name__ == '__main__':
    sys.exit(main())
