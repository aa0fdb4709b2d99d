"""``relkd-play``: publish a recorded ROS 2 bag on its topics, at the recorded pace.

    relkd-play drive_0 --rate 0.5 --topics /LIDAR_TOP /tf /tf_static --loop

A small stand-in for ``ros2 bag play`` where only the rclpy wheels are installed: the raw CDR
bytes of each message are published as they are (headers, stamps and payload untouched), at
the record times scaled by ``--rate``. Each topic is published RELIABLE, which every
subscriber matches (``segment_node`` subscribes reliable by default), KEEP_LAST ``--depth``;
topics offered transient-local in the bag (and ``/tf_static`` always) are latched, keeping all
their messages for late subscribers. Types whose Python message package is not installed are
skipped with one warning each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relkd_core.data.playback import PlayedTopic, bag_playlist, played_topics, recorded_messages
from relkd_core.errors import BagError

__all__ = ['PlayedTopic', 'main', 'message_class', 'playback_offset_s', 'played_topics']

NODE_NAME = 'relkd_play'
_LOG = logging.getLogger(__name__)


def message_class(msgtype: str) -> Any:
    """The rclpy message class of a ``pkg/msg/Name`` type, or None when its package is not
    installed."""
    parts = msgtype.split('/')
    if len(parts) != 3 or not all(parts):
        return None
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name, None)
    except ImportError:
        return None


def playback_offset_s(t_ns: int, first_ns: int, rate: float) -> float:
    """Seconds after the start of playback at which a message recorded at ``t_ns`` is due
    (``first_ns``: record time of the first message played)."""
    return (t_ns - first_ns) / 1e9 / rate


def _qos(topic: PlayedTopic, depth: int) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(topic.count, 1) if topic.latched else depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if topic.latched
        else DurabilityPolicy.VOLATILE)


class Player:
    """Publishes one bag through ``node`` (see the module docstring)."""

    def __init__(self, node: Any, bag: Path, topics: Sequence[str] = (), *, rate: float = 1.0,
                 depth: int = 5) -> None:
        self.node, self.bag, self.rate = node, bag, rate
        self.wanted = tuple(topics)
        self.published = 0
        self._publishers: dict[str, Any] = {}
        self.topics = bag_playlist(bag, self.wanted)
        for name, topic in sorted(self.topics.items()):
            cls = message_class(topic.msgtype)
            if cls is None:
                node.get_logger().warning(
                    f'not playing {name}: the Python package of {topic.msgtype} is not '
                    'installed')
                continue
            self._publishers[name] = node.create_publisher(cls, name, _qos(topic, depth))
        if not self._publishers:
            raise BagError(f'none of the topics of {bag} can be published here')

    @property
    def publishing(self) -> list[str]:
        """The topics that are published (the others have no Python message class here)."""
        return sorted(self._publishers)

    def wait_for_subscribers(self, timeout_s: float) -> None:
        """Wait until every non-latched topic has a subscriber, at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
                publisher.get_subscription_count() == 0 for name, publisher in
                self._publishers.items() if not self.topics[name].latched):
            time.sleep(0.02)

    def play_once(self) -> None:
        """Publish every message once, each at its scaled record time."""
        start = time.monotonic()
        first_ns: int | None = None
        for topic, t_ns, raw in recorded_messages(self.bag):
            publisher = self._publishers.get(topic)
            if publisher is None:
                continue
            first_ns = t_ns if first_ns is None else first_ns
            delay = start + playback_offset_s(t_ns, first_ns, self.rate) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.publish(raw)
            self.published += 1

    def wait_for_acknowledgements(self, timeout_s: float) -> None:
        """Give reliable subscribers up to ``timeout_s`` to acknowledge the last messages, so
        that exiting right after playback does not lose them."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        for publisher in self._publishers.values():
            left = max(deadline - time.monotonic(), 0.0)
            if hasattr(publisher, 'wait_for_all_acked'):  # Galactic and later
                publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='relkd-play',
        description='Publish the messages of a ROS 2 bag on their topics at the recorded pace '
                    '(rclpy; raw CDR, stamps untouched). ROS arguments go after --ros-args.')
    parser.add_argument('bag', type=Path, help='bag folder, .mcap or .db3')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor (default 1: recorded pace)')
    parser.add_argument('--loop', action='store_true', help='play again and again')
    parser.add_argument('--topics', nargs='+', default=(), metavar='TOPIC',
                        help='play only these topics (default: all)')
    parser.add_argument('--depth', type=int, default=5,
                        help='QoS history depth of non-latched topics (default 5)')
    parser.add_argument('--wait-subscribers-s', type=float, default=0.0, metavar='S',
                        help='before playing, wait up to S seconds for a subscriber on every '
                             'non-latched topic (default 0)')
    parser.add_argument('--delay-s', type=float, default=0.0, metavar='S',
                        help='sleep S seconds before playing, after the publishers exist '
                             '(default 0)')
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.rate > 0:
        parser.error(f'--rate must be above 0, got {args.rate}')
    if args.depth < 1:
        parser.error(f'--depth must be at least 1, got {args.depth}')
    if args.delay_s < 0 or args.wait_subscribers_s < 0:
        parser.error('--delay-s and --wait-subscribers-s cannot be negative')
    if not args.bag.exists():
        parser.error(f'bag {args.bag}: no such bag')


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``relkd-play``; returns the exit code (1: the bag cannot be played)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    arguments = sys.argv[1:] if argv is None else list(argv)
    ros_args = rclpy.utilities.remove_ros_args(['relkd-play', *arguments])[1:]
    parser = build_parser()
    args = parser.parse_args(ros_args)
    _check(parser, args)
    rclpy.init(args=['relkd-play', *arguments])
    node = rclpy.create_node(NODE_NAME)
    try:
        player = Player(node, args.bag, args.topics, rate=args.rate, depth=args.depth)
        if args.wait_subscribers_s:
            player.wait_for_subscribers(args.wait_subscribers_s)
        time.sleep(args.delay_s)
        node.get_logger().info(f'playing {args.bag} at rate {args.rate:g}: '
                               f'{", ".join(player.publishing)}')
        player.play_once()
        while args.loop and rclpy.ok():
            player.play_once()
        player.wait_for_acknowledgements(2.0)
        node.get_logger().info(f'published {player.published} messages')
    except BagError as err:
        node.get_logger().fatal(f'cannot play: {err}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
