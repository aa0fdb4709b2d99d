"""ROS 2 messages (rosbags dataclasses) built from NumPy arrays: what the synthetic world,
the dataset converters and the bag labeler write."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.data.bag._rosbags import Nodetype, Typestore
from relkd_core.data.scan import pointfields
from relkd_core.errors import BagError
from relkd_core.geometry.se3 import matrix_to_quaternion

__all__ = ['MessageFactory']

_PRIMITIVE_DTYPES = {
    'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'int8': np.int8, 'uint8': np.uint8,
    'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
    'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64,
}



class MessageFactory:
    """Builds ROS 2 messages (rosbags dataclasses) from NumPy arrays."""

    def __init__(self, store: Typestore) -> None:
        self.store = store
        self.types = store.types

    def header(self, t_ns: int, frame_id: str) -> Any:
        time = self.types['builtin_interfaces/msg/Time'](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
        return self.types['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)

    def message(self, msgtype: str, **values: Any) -> Any:
        """A ``msgtype`` message with the given field ``values``; every other field holds its
        zero value (0, '', False, empty sequences, zero-filled fixed arrays, nested zeros).
        Raises BagError for a type the typestore lacks or a field the type lacks."""
        try:
            _, fields = self.store.fielddefs[msgtype]
        except KeyError:
            raise BagError(f'message type {msgtype!r} is not in the typestore') from None
        names = [name for name, _ in fields]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise BagError(f'{msgtype} has no field(s) {unknown}; its fields are {names}')
        filled = {name: values[name] if name in values else self._zero(desc)
                  for name, desc in fields}
        return self.types[msgtype](**filled)

    def _zero(self, desc: Any) -> Any:
        kind, detail = desc
        if kind == Nodetype.NAME:
            return self.message(detail)
        if kind == Nodetype.BASE:
            base = detail[0]
            return '' if base in ('string', 'wstring') else (
                False if base == 'bool' else 0.0 if base.startswith('float') else 0)
        (element_kind, element), length = detail
        if kind == Nodetype.SEQUENCE:
            length = 0
        if element_kind == Nodetype.BASE and element[0] in _PRIMITIVE_DTYPES:
            return np.zeros(length, dtype=_PRIMITIVE_DTYPES[element[0]])
        return [self._zero((element_kind, element)) for _ in range(length)]

    def point_cloud(self, points: NDArray[np.void], t_ns: int, frame_id: str, *,
                    height: int = 1, is_dense: bool = True) -> Any:
        """``sensor_msgs/PointCloud2`` (little-endian; organised when ``height`` > 1) from a
        structured array. Fields whose name starts with ``_`` are padding and are not
        declared."""
        point_field = self.types['sensor_msgs/msg/PointField']
        dtype = points.dtype
        if height < 1 or len(points) % height:
            raise BagError(f'point_cloud: {len(points)} points do not fill {height} rows')
        width = len(points) // height
        fields = [point_field(name=name, offset=offset, datatype=datatype, count=1)
                  for name, offset, datatype in pointfields(dtype)]
        data = np.ascontiguousarray(points).view(np.uint8).reshape(-1)
        return self.types['sensor_msgs/msg/PointCloud2'](
            header=self.header(t_ns, frame_id), height=height, width=width, fields=fields,
            is_bigendian=False, point_step=dtype.itemsize, row_step=dtype.itemsize * width,
            data=data, is_dense=is_dense,
        )

    def image(self, array: NDArray[Any], encoding: str, t_ns: int, frame_id: str) -> Any:
        """``sensor_msgs/Image``; ``array`` is H×W (mono*, 32SC1) or H×W×3 (rgb8, bgr8)."""
        height, width = array.shape[:2]
        data = np.ascontiguousarray(array.astype(array.dtype.newbyteorder('<')))
        return self.types['sensor_msgs/msg/Image'](
            header=self.header(t_ns, frame_id), height=height, width=width, encoding=encoding,
            is_bigendian=0, step=data.nbytes // height, data=data.view(np.uint8).reshape(-1),
        )

    def compressed_image(self, rgb: NDArray[np.uint8], t_ns: int, frame_id: str,
                         quality: int = 90) -> Any:
        """``sensor_msgs/CompressedImage`` with JPEG data (deterministic for the same pixels)."""
        from PIL import Image as PilImage

        buffer = io.BytesIO()
        PilImage.fromarray(rgb, mode='RGB').save(buffer, format='JPEG', quality=quality)
        return self.types['sensor_msgs/msg/CompressedImage'](
            header=self.header(t_ns, frame_id), format='rgb8; jpeg compressed bgr8',
            data=np.frombuffer(buffer.getvalue(), dtype=np.uint8),
        )

    def camera_info(self, K: NDArray[np.float64], width: int, height: int, t_ns: int,
                    frame_id: str) -> Any:
        """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera (d = 0, P = [K|0])."""
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types['sensor_msgs/msg/CameraInfo'](
            header=self.header(t_ns, frame_id), height=height, width=width,
            distortion_model='plumb_bob', d=np.zeros(5), k=K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi,
        )

    def tf_message(self, transforms: Sequence[tuple[str, str, NDArray[np.float64]]],
                   t_ns: int) -> Any:
        """``tf2_msgs/TFMessage`` from ``(parent, child, T_parent_child)`` triples."""
        types = self.types
        stamped = []
        for parent, child, T in transforms:
            q = matrix_to_quaternion(T[:3, :3])
            transform = types['geometry_msgs/msg/Transform'](
                translation=types['geometry_msgs/msg/Vector3'](
                    x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                rotation=types['geometry_msgs/msg/Quaternion'](
                    x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
            )
            stamped.append(types['geometry_msgs/msg/TransformStamped'](
                header=self.header(t_ns, parent), child_frame_id=child, transform=transform))
        return types['tf2_msgs/msg/TFMessage'](transforms=stamped)

