"""A small tf buffer: static and time-stamped transforms, chains through a tree, and
interpolation between stamps. It replaces ``tf2_ros`` (not available outside a ROS install)
for offline work and is fed with ``tf2_msgs/TFMessage`` from bags or topics."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.errors import CalibrationError
from relkd_core.geometry.se3 import (
    interpolate_transform,
    invert_transform,
    make_transform,
    quaternion_to_matrix,
)


def transform_from_msg(transform: Any) -> NDArray[np.float64]:
    """4×4 matrix of a ``geometry_msgs/Transform``."""
    t, q = transform.translation, transform.rotation
    return make_transform(quaternion_to_matrix([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def stamp_ns(stamp: Any) -> int:
    """int64 nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TfBuffer:
    """Transforms between frames: ``T_parent_child`` edges, static or sampled over time.

    ``max_extrapolation_ns`` bounds how far outside the sampled interval a dynamic edge may be
    evaluated (nearest sample is used there).
    """

    def __init__(self, max_extrapolation_ns: int = 50_000_000) -> None:
        self.max_extrapolation_ns = max_extrapolation_ns
        self._parent: dict[str, str] = {}
        self._static: dict[str, NDArray[np.float64]] = {}
        self._times: dict[str, list[int]] = defaultdict(list)
        self._samples: dict[str, list[NDArray[np.float64]]] = defaultdict(list)

    def add(self, parent: str, child: str, T_parent_child: NDArray[np.float64],
            t_ns: int | None = None) -> None:
        """Add one edge; ``t_ns=None`` marks it static. Frame names are taken without a
        leading slash (ROS 1 style ``/velo_link`` equals tf2's ``velo_link``)."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        known = self._parent.get(child)
        if known is not None and known != parent:
            raise CalibrationError(f'frame {child!r} has two parents: {known!r} and {parent!r}')
        self._parent[child] = parent
        if t_ns is None:
            self._static[child] = np.asarray(T_parent_child, dtype=np.float64)
            return
        times = self._times[child]
        i = bisect.bisect_left(times, t_ns)
        if i < len(times) and times[i] == t_ns:
            self._samples[child][i] = T_parent_child
        else:
            times.insert(i, t_ns)
            self._samples[child].insert(i, T_parent_child)

    def add_message(self, msg: Any, static: bool = False) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``."""
        for ts in msg.transforms:
            self.add(ts.header.frame_id, ts.child_frame_id, transform_from_msg(ts.transform),
                     None if static else stamp_ns(ts.header.stamp))

    def _edge(self, child: str, t_ns: int) -> NDArray[np.float64]:
        if child in self._static:
            return self._static[child]
        times, samples = self._times[child], self._samples[child]
        i = bisect.bisect_left(times, t_ns)
        if i < len(times) and times[i] == t_ns:
            return samples[i]
        if i == 0 or i == len(times):
            nearest = 0 if i == 0 else len(times) - 1
            gap = abs(times[nearest] - t_ns)
            if gap > self.max_extrapolation_ns:
                raise CalibrationError(
                    f'no transform {self._parent[child]!r} → {child!r} near t={t_ns} ns: '
                    f'samples cover {times[0]}..{times[-1]} ns ({gap / 1e6:.1f} ms away)')
            return samples[nearest]
        fraction = (t_ns - times[i - 1]) / (times[i] - times[i - 1])
        return interpolate_transform(samples[i - 1], samples[i], fraction)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 64:
                raise CalibrationError(f'tf loop through frame {frame!r}')
        return chain

    def _to_root(self, frame: str, t_ns: int, stop: str) -> NDArray[np.float64]:
        """``T_stop_frame`` along the parent chain (``stop`` must be an ancestor or itself)."""
        T = np.eye(4)
        current = frame
        while current != stop:
            T = self._edge(current, t_ns) @ T
            current = self._parent[current]
        return T

    def lookup(self, target: str, source: str, t_ns: int,
               source_t_ns: int | None = None, fixed: str | None = None) -> NDArray[np.float64]:
        """``T_target_source``: maps points in ``source`` (at ``source_t_ns``) into ``target``
        (at ``t_ns``). With two stamps the chain goes through ``fixed`` (e.g. ``odom``),
        which compensates ego motion between the two instants, as tf2's advanced lookup."""
        source_t = t_ns if source_t_ns is None else source_t_ns
        target, source = target.lstrip('/'), source.lstrip('/')
        fixed = fixed.lstrip('/') if fixed else fixed
        target_chain, source_chain = self._chain(target), self._chain(source)
        common = next((f for f in target_chain if f in set(source_chain)), None)
        if common is None:
            raise CalibrationError(
                f'no tf path from {source!r} to {target!r}: {source!r} chain is '
                f'{" → ".join(source_chain)}, {target!r} chain is {" → ".join(target_chain)}')
        if source_t == t_ns:
            return invert_transform(self._to_root(target, t_ns, common)) @ self._to_root(
                source, t_ns, common)
        if fixed is None or fixed not in target_chain or fixed not in source_chain:
            raise CalibrationError(
                f'looking up {source!r} → {target!r} across two stamps needs a fixed frame '
                f'shared by both chains, got fixed={fixed!r}')
        T_fixed_target = self._to_root(target, t_ns, fixed)
        T_fixed_source = self._to_root(source, source_t, fixed)
        return invert_transform(T_fixed_target) @ T_fixed_source
