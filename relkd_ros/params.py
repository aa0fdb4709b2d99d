"""The segment node's parameters: one catalogue, the :class:`SegmentParams` dataclass.

Each field is a ROS parameter of the same name; its metadata holds the description and range
that go into the ``ParameterDescriptor``, and whether it may change while the node runs
(``dynamic``). :func:`params_from_values` maps parameter values into the validated dataclass,
so a bad value fails with the parameter named, at start-up or when set at run time.

This module imports no ROS package at import time: the launch drift test and the docs read
the catalogue without rclpy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.config import config_from_dict
from relkd_core.data.scan import NAN_POLICIES
from relkd_core.geometry.se3 import make_transform, quaternion_to_matrix
from relkd_core.infer.topics import LABELED_TOPIC, LEGEND_TOPIC
from relkd_core.precision import PRECISIONS

if TYPE_CHECKING:
    from relkd_core.infer.online import LabelingRequest

__all__ = ['FROM_CHECKPOINT', 'RELIABILITIES', 'SCAN_INPUT_PARAMETERS', 'SegmentParams',
           'allowed_values', 'default_value',
           'parameter_descriptor', 'parameter_names', 'params_from_values',
           'parse_static_transform']


def _param(default: Any, description: str, *, min: float | None = None,
           max: float | None = None, dynamic: bool = False) -> Any:
    metadata: dict[str, Any] = {'description': description, 'dynamic': dynamic}
    if min is not None:
        metadata['min'] = min
    if max is not None:
        metadata['max'] = max
    return dataclasses.field(default=default, metadata=metadata)


#: The value of min_range_m, max_range_m and intensity_scale that means "as the checkpoint
#: records" (intensity_field: the empty string). A set value overrides the checkpoint's.
FROM_CHECKPOINT = -1.0
#: Parameters that override the checkpoint's ScanInput when set.
SCAN_INPUT_PARAMETERS = ('intensity_field', 'intensity_scale', 'min_range_m', 'max_range_m',
                         'nan_policy')

#: Values of the ``*_reliability`` parameters.
RELIABILITIES = ('reliable', 'best_effort')


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentParams:
    """Parameters of ``segment_node`` (names are the ROS parameter names)."""

    checkpoint: str = _param('', 'student checkpoint file written by relkd-train (required)')
    device: str = _param('cpu', 'torch device of the student, e.g. cpu or cuda:0')
    precision: str = _param(
        'float32', "the student's arithmetic: float32, or bfloat16 (keeps at least 99.5 % of "
        'the float32 labels; faster only on CPUs and GPUs with native bfloat16)')
    vocabulary: tuple[str, ...] = _param(
        (), 'class names or free text to label with; empty: vocabulary_file, else the '
        "checkpoint's own vocabulary. Changing it re-embeds the text", dynamic=True)
    vocabulary_file: str = _param(
        '', 'vocabulary YAML (config/vocabularies layout), used when vocabulary is empty',
        dynamic=True)
    score_threshold: float = _param(
        -1.0, 'points whose cosine similarity to their best entry is below this are '
        'unlabeled (label 65535)', min=-1.0, max=1.0, dynamic=True)
    min_range_m: float = _param(FROM_CHECKPOINT, 'points nearer than this (metres) are not '
                                "labelled; -1: the checkpoint's", min=-1.0, dynamic=True)
    max_range_m: float = _param(FROM_CHECKPOINT, 'points farther than this (metres) are not '
                                "labelled; -1: the checkpoint's", min=-1.0, dynamic=True)
    max_points: int = _param(400_000, 'a cloud with more valid points is dropped (bounds '
                             'latency and memory)', min=1, dynamic=True)
    intensity_field: str = _param('', "PointCloud2 field read as intensity (absent: 0); empty: "
                                  "the checkpoint's", dynamic=True)
    intensity_scale: float = _param(FROM_CHECKPOINT, 'factor mapping intensity_field into the '
                                    "range the student was trained on (e.g. 1/255); -1: the "
                                    "checkpoint's", min=-1.0, dynamic=True)
    nan_policy: str = _param('', "drop: points with a non-finite value are left out of the "
                             'labeled cloud (an organised cloud becomes one row); keep: they '
                             "stay in place, unlabeled; empty: the checkpoint's (drop)",
                             dynamic=True)
    points_topic: str = _param('points', 'input sensor_msgs/PointCloud2 topic')
    labeled_topic: str = _param(LABELED_TOPIC, 'output labeled PointCloud2 topic')
    legend_topic: str = _param(LEGEND_TOPIC, 'output visualization_msgs/MarkerArray legend topic')
    image_topics: tuple[str, ...] = _param(
        (), 'camera image topics for overlays; a topic ending in /compressed is read as '
        'sensor_msgs/CompressedImage')
    camera_info_topics: tuple[str, ...] = _param(
        (), 'sensor_msgs/CameraInfo topic of each image topic, in the same order')
    overlay_suffix: str = _param('overlay', 'overlay of image topic T is published on T/<suffix> '
                                 '(a trailing /compressed is dropped first)')
    static_transforms: tuple[str, ...] = _param(
        (), "extra static transforms, each 'parent child x y z qx qy qz qw' (metres, unit "
        'quaternion), added to what /tf_static gives (needed where tf2_msgs is not installed)')
    fixed_frame: str = _param(
        '', 'frame fixed in the world (e.g. odom): overlays then take the camera pose at the '
        "image stamp and the lidar's at the scan stamp (ego motion compensated); empty: one "
        'stamp, the scan\'s')
    sync_slop_s: float = _param(0.05, 'largest |image stamp - scan stamp| (seconds) for an '
                                'overlay', min=0.0, max=10.0, dynamic=True)
    overlay_point_radius_px: int = _param(1, 'half-size of the square drawn per point',
                                          min=0, max=20, dynamic=True)
    input_reliability: str = _param(
        'reliable', 'QoS reliability of the input subscriptions: reliable (gets every large '
        'cloud between processes; matches reliable publishers only) or best_effort (matches '
        'every publisher; use the shipped Fast DDS profile on both sides for large clouds)')
    input_depth: int = _param(5, 'QoS history depth of the input subscriptions', min=1,
                              max=1000)
    output_reliability: str = _param('reliable', 'QoS reliability of the outputs')
    output_depth: int = _param(5, 'QoS history depth of the outputs', min=1, max=1000)
    queue_size: int = _param(1, 'scans waiting for the model; when full the oldest is '
                             'dropped (1: always the newest scan)', min=1, max=100)
    publish_overlay: bool = _param(True, 'publish an overlay image per synced camera',
                                   dynamic=True)
    publish_legend: bool = _param(True, 'publish the legend MarkerArray', dynamic=True)
    diagnostics_period_s: float = _param(1.0, 'period of /diagnostics (0: never)', min=0.0,
                                         max=60.0)
    num_threads: int = _param(
        0, 'torch threads of the student (0: automatic, half the CPU cores and at least 1, so '
        'that the model keeps its speed when other processes load the CPU)', min=0, max=256)

    def validate(self) -> None:
        if not self.checkpoint:
            raise ValueError('checkpoint: give the student checkpoint file (relkd-train output)')
        for key in ('intensity_scale', 'min_range_m', 'max_range_m'):
            if getattr(self, key) < 0 and getattr(self, key) != FROM_CHECKPOINT:
                raise ValueError(f"{key}: expected a value >= 0, or -1 for the checkpoint's, got "
                                 f'{getattr(self, key)}')
        if 0 <= self.max_range_m <= self.min_range_m:
            raise ValueError(f'min_range_m ({self.min_range_m}) must be below max_range_m '
                             f'({self.max_range_m})')
        if len(self.image_topics) != len(self.camera_info_topics):
            raise ValueError(f'image_topics ({len(self.image_topics)}) and camera_info_topics '
                             f'({len(self.camera_info_topics)}) need one entry each per camera')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision: expected one of {list(PRECISIONS)}, got '
                             f'{self.precision!r}')
        if self.nan_policy not in ('', *NAN_POLICIES):
            raise ValueError(f"nan_policy: expected one of {list(NAN_POLICIES)}, or '' for the "
                             f"checkpoint's, got {self.nan_policy!r}")
        for key in ('input_reliability', 'output_reliability'):
            if getattr(self, key) not in RELIABILITIES:
                raise ValueError(f'{key}: expected one of {list(RELIABILITIES)}, got '
                                 f'{getattr(self, key)!r}')
        self.transforms()
        if any(not name.strip() for name in self.vocabulary):
            raise ValueError('vocabulary: a name is empty')

    def scan_input_overrides(self) -> dict[str, tuple[Any, str]]:
        """The settings these parameters set over the checkpoint's ScanInput, as
        ``override_scan_input`` takes them (None: from the checkpoint)."""
        overrides: dict[str, tuple[Any, str]] = {}
        for key in SCAN_INPUT_PARAMETERS:
            value = getattr(self, key)
            unset = value == '' if isinstance(value, str) else value == FROM_CHECKPOINT
            overrides[key] = (None if unset else value, f'parameter {key}')
        return overrides

    def labeling_request(self) -> LabelingRequest:
        """What these parameters ask of the labelling core (vocabulary, ScanInput overrides,
        limits)."""
        from relkd_core.infer.online import LabelingRequest  # torch: only when labelling

        return LabelingRequest(vocabulary=self.vocabulary, vocabulary_file=self.vocabulary_file,
                               overrides=self.scan_input_overrides(),
                               score_threshold=self.score_threshold, max_points=self.max_points)

    def threads(self, cpu_count: int | None = None) -> int:
        """Torch threads to use: ``num_threads``, or for 0 half of ``cpu_count`` (default: the
        CPUs this process may run on), at least 1.

        Why half: a robot's CPU is shared with drivers, localisation and planning. OpenMP
        threads wait for each other at every parallel region, so one thread that shares its core
        with another busy process holds all of them back: with 2 threads on 2 cores and one core
        kept busy, a 34k-point scan went from 0.2 s to several seconds (bench/bench_node.py
        --background-load).
        """
        if self.num_threads:
            return self.num_threads
        if cpu_count is None:
            cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (
                os.cpu_count() or 1)
        return max(1, cpu_count // 2)

    def transforms(self) -> list[tuple[str, str, NDArray[np.float64]]]:
        """``(parent, child, T_parent_child)`` of each ``static_transforms`` entry."""
        return [parse_static_transform(text) for text in self.static_transforms]


def parse_static_transform(text: str) -> tuple[str, str, NDArray[np.float64]]:
    """``'parent child x y z qx qy qz qw'`` → ``(parent, child, T_parent_child)``; ValueError
    naming the entry when malformed."""
    parts = text.split()
    if len(parts) != 9:
        raise ValueError(f'static_transforms: {text!r} needs 9 items: parent child x y z qx qy '
                         f'qz qw, got {len(parts)}')
    try:
        numbers = np.asarray([float(v) for v in parts[2:]], dtype=np.float64)
    except ValueError:
        raise ValueError(f'static_transforms: {text!r}: x y z qx qy qz qw must be numbers'
                         ) from None
    norm = float(np.linalg.norm(numbers[3:]))
    if not np.isfinite(numbers).all() or abs(norm - 1.0) > 1e-3:
        raise ValueError(f'static_transforms: {text!r}: expected finite numbers and a unit '
                         f'quaternion, got quaternion norm {norm:.4f}')
    return parts[0], parts[1], make_transform(quaternion_to_matrix(numbers[3:]), numbers[:3])


def parameter_names() -> tuple[str, ...]:
    """Every parameter name, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(SegmentParams))


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == 'array':
        return [_plain(v) for v in value]
    return value


def params_from_values(values: Mapping[str, Any]) -> SegmentParams:
    """:class:`SegmentParams` from parameter values (missing or None ones take their defaults).

    Raises ConfigError naming the parameter for an unknown name, a wrong type or a value out of
    range.
    """
    # None is an unset parameter (rcl's YAML parser reads `[]` as unset): the default.
    data = {name: _plain(value) for name, value in values.items() if value is not None}
    return config_from_dict(SegmentParams, data, source='segment_node parameters')


def parameter_descriptor(name: str) -> Any:
    """The ``rcl_interfaces/ParameterDescriptor`` of one parameter (needs rcl_interfaces)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    field = {f.name: f for f in dataclasses.fields(SegmentParams)}[name]
    metadata = field.metadata
    descriptor = ParameterDescriptor(name=name, description=metadata['description'],
                                     read_only=not metadata['dynamic'])
    if isinstance(field.default, tuple):
        # An empty list has no ROS type of its own (rcl's YAML parser even turns `[]` into
        # "unset"), so list parameters are declared unset and dynamically typed: unset or any
        # empty list means the default; the values are checked by the dataclass.
        descriptor.dynamic_typing = True
    low, high = metadata.get('min'), metadata.get('max')
    if low is not None and high is not None:
        if isinstance(field.default, int) and not isinstance(field.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                     step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float(high), step=0.0)]
    elif low is not None:
        descriptor.additional_constraints = f'>= {low}'
    return descriptor


def allowed_values(name: str) -> str:
    """What a parameter accepts, in words, for error messages: its type and range."""
    field = {f.name: f for f in dataclasses.fields(SegmentParams)}[name]
    kind = {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string'}.get(
        type(field.default), 'a list of strings')
    low, high = field.metadata.get('min'), field.metadata.get('max')
    if low is not None and high is not None:
        return f'{kind} in [{low:g}, {high:g}]'
    if low is not None:
        return f'{kind} >= {low:g}'
    return kind


def default_value(name: str) -> Any:
    """The value a parameter is declared with: its default, or None (unset) for a list, whose
    empty default has no ROS type; :func:`params_from_values` maps unset back to the default."""
    field = {f.name: f for f in dataclasses.fields(SegmentParams)}[name]
    if isinstance(field.default, tuple):
        return list(field.default) or None
    return field.default
