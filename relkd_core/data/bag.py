"""ROS 2 bag I/O through ``rosbags``: the only module of relkd_core that imports it.

Writing is atomic: a bag is built in a hidden temporary folder beside the destination and
renamed into place only when complete, so an interrupted run never leaves a half bag behind
(and the next writer of that path sweeps the temporary folders of writers that died).
Messages are built from NumPy arrays with the typestore of one ROS 2 distro (Humble by
default, whose message layouts Jazzy and Kilted share for every type used here).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from relkd_core.atomic import make_staging_dir
from relkd_core.data.scan import pointfields
from relkd_core.errors import BagError
from relkd_core.geometry.se3 import matrix_to_quaternion
from relkd_core.outputs import mark_output

Storage = Literal['mcap', 'sqlite3']

_MCAP_MAGIC = b'\x89MCAP0\r\n'

_STORES = {
    'humble': Stores.ROS2_HUMBLE,
    'jazzy': Stores.ROS2_JAZZY,
    'kilted': Stores.ROS2_KILTED,
}

#: ``/tf_static`` must be offered transient-local so that late subscribers (RViz, tf2
#: listeners) still receive it when the bag is played back.
LATCHED_QOS = Qos(
    history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL, deadline=QosTime(0, 0), lifespan=QosTime(0, 0),
    liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=QosTime(0, 0),
    avoid_ros_namespace_conventions=False,
)

_PRIMITIVE_DTYPES = {
    'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'int8': np.int8, 'uint8': np.uint8,
    'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
    'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64,
}


def typestore(distro: str = 'humble') -> Typestore:
    """The rosbags typestore of a ROS 2 distro (``humble``, ``jazzy`` or ``kilted``)."""
    try:
        return get_typestore(_STORES[distro])
    except KeyError:
        raise BagError(
            f'unknown ROS 2 distro {distro!r}; expected one of {sorted(_STORES)}') from None


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


_CLOUD_FACTORY: MessageFactory | None = None


def point_cloud_cdr(points: NDArray[np.void], t_ns: int, frame_id: str, *, height: int = 1,
                    is_dense: bool = True) -> bytes:
    """A ``sensor_msgs/PointCloud2`` of a structured array, serialized to CDR (the bytes DDS
    carries; the layout is the same in every ROS 2 distro). The point data is copied in one
    block, which makes this far faster than letting rclpy convert a message with a large
    ``uint8[]`` field element by element."""
    global _CLOUD_FACTORY
    if _CLOUD_FACTORY is None:
        _CLOUD_FACTORY = MessageFactory(typestore())
    message = _CLOUD_FACTORY.point_cloud(points, t_ns, frame_id, height=height,
                                         is_dense=is_dense)
    return bytes(_CLOUD_FACTORY.store.serialize_cdr(message, 'sensor_msgs/msg/PointCloud2'))


class BagWriter:
    """Atomic writer of one ROS 2 bag (MCAP or sqlite3) at ``path``.

    Use as a context manager: on a clean exit the bag is renamed into place; on an exception
    (or :meth:`abort`) the temporary folder is removed and ``path`` is left untouched.
    ``kind``: the output kind the finished bag folder is marked with (see
    :mod:`relkd_core.outputs`), so that the command that wrote it recognises it later.
    """

    def __init__(self, path: str | os.PathLike[str], *, storage: Storage = 'mcap',
                 distro: str = 'humble', version: Literal[8, 9] = 8,
                 kind: str | None = None) -> None:
        self.path = Path(path)
        self.kind = kind
        if self.path.exists():
            raise BagError(f'{self.path} already exists; choose a new path or remove it first')
        if storage not in ('mcap', 'sqlite3'):
            raise BagError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        self.storage: Storage = storage
        self.factory = MessageFactory(typestore(distro))
        self._version: Literal[8, 9] = version
        self._tmp_dir: Path | None = None
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self.message_counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        parent = self.path.parent
        if not parent.is_dir():
            raise BagError(f'cannot write {self.path}: folder {parent} does not exist')
        if not os.access(parent, os.W_OK):
            raise BagError(f'cannot write {self.path}: folder {parent} is not writable')
        self._tmp_dir = make_staging_dir(self.path)
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        # rosbags names the storage file after the bag folder, so the bag gets its final
        # name inside the temporary folder and only the folder around it is temporary.
        self._writer = Writer(self._tmp_dir / self.path.name, version=self._version,
                              storage_plugin=plugin)
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add_topic(self, topic: str, msgtype: str, *, latched: bool = False) -> None:
        """Declare a topic; ``latched`` offers transient-local QoS (for ``/tf_static``)."""
        if self._writer is None:
            raise BagError('BagWriter is not open; use it in a with-statement')
        qos = [LATCHED_QOS] if latched else []
        # A type already in the bag (copied with add_connection_from) keeps that definition:
        # a bag holds one definition per type.
        known = next((c for c in self._writer.connections if c.msgtype == msgtype), None)
        definition: dict[str, Any] = {'typestore': self.factory.store}
        if known is not None:
            digest = self.factory.store.hash_rihs01(msgtype)
            if known.digest != digest:
                raise BagError(
                    f'cannot add topic {topic}: the bag already holds {msgtype} with another '
                    f'definition ({known.digest} on {known.topic}, expected {digest})')
            definition = {'msgdef': known.msgdef.data, 'rihs01': known.digest}
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, offered_qos_profiles=qos, **definition)
        self.message_counts[topic] = 0

    def add_connection_from(self, source: Connection, store: Typestore | None = None
                            ) -> Connection:
        """Declare a connection like ``source`` (a connection of a ROS 2 bag being read): same
        topic, type, message definition, type hash, serialization format and offered QoS.
        Returns the new connection, for :meth:`write_raw`.

        Where ``source`` lacks its definition or hash (older bags), they come from ``store``
        (the reader's typestore, which knows the bag's own definitions) or the writer's.
        """
        if self._writer is None:
            raise BagError('BagWriter is not open; use it in a with-statement')
        ext = getattr(source, 'ext', None)
        qos = list(getattr(ext, 'offered_qos_profiles', None) or [])
        serialization = getattr(ext, 'serialization_format', None) or 'cdr'
        msgdef_text = getattr(getattr(source, 'msgdef', None), 'data', '') or ''
        digest = getattr(source, 'digest', '') or ''
        if not msgdef_text or not digest.startswith('RIHS01_'):
            for candidate in (store, self.factory.store):
                if candidate is not None and source.msgtype in candidate.fielddefs:
                    if not msgdef_text:
                        msgdef_text, _ = candidate.generate_msgdef(source.msgtype, ros_version=2)
                    digest = candidate.hash_rihs01(source.msgtype)
                    break
            else:
                raise BagError(
                    f'cannot copy topic {source.topic}: its type {source.msgtype} has no '
                    'definition in the bag and is not in the typestore')
        for known in self._writer.connections:
            known_ext = cast(ConnectionExtRosbag2, known.ext)
            if (known.topic, known.msgtype, known_ext.serialization_format,
                    known_ext.offered_qos_profiles) == (source.topic, source.msgtype,
                                                        serialization, qos):
                return known
        connection = self._writer.add_connection(
            source.topic, source.msgtype, msgdef=msgdef_text, rihs01=digest,
            serialization_format=serialization, offered_qos_profiles=qos)
        self.message_counts.setdefault(source.topic, 0)
        return connection

    def write_raw(self, connection: Connection, t_ns: int, data: bytes | memoryview) -> None:
        """Write already serialised ``data`` on a connection from :meth:`add_connection_from`
        at record time ``t_ns``."""
        if self._writer is None:
            raise BagError('BagWriter is not open; use it in a with-statement')
        self._writer.write(connection, int(t_ns), data)
        self.message_counts[connection.topic] += 1

    def write(self, topic: str, t_ns: int, message: Any) -> None:
        """Serialise and write ``message`` on a declared topic at record time ``t_ns``."""
        if self._writer is None:
            raise BagError('BagWriter is not open; use it in a with-statement')
        try:
            connection = self._connections[topic]
        except KeyError:
            raise BagError(f'topic {topic!r} was not declared with add_topic()') from None
        data = self.factory.store.serialize_cdr(message, connection.msgtype)
        self._writer.write(connection, int(t_ns), data)
        self.message_counts[topic] += 1

    def close(self) -> None:
        """Finish the bag and move it to its destination."""
        if self._writer is None or self._tmp_dir is None:
            return
        try:
            self._writer.close()
            if self.kind is not None:
                mark_output(self._tmp_dir / self.path.name, self.kind)
            os.rename(self._tmp_dir / self.path.name, self.path)
        finally:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._writer, self._tmp_dir = None, None

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._writer is not None:
            # The bag is discarded anyway; a failure to close it must not hide the real error.
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self._writer, self._tmp_dir = None, None


class _OpenedReader(AnyReader):
    """An ``AnyReader`` already opened by :func:`open_bags`: a with-statement only closes it
    (``AnyReader.__enter__`` would open it a second time and fail)."""

    def __enter__(self) -> _OpenedReader:
        return self


@dataclass(frozen=True)
class _SalvagedConnection:
    topic: str
    msgtype: str


class SalvagedMcap:
    """Sequential reader of an MCAP file that lost its end (a recorder killed mid-write).

    rosbags needs the MCAP footer and summary, so a truncated file cannot be opened with it.
    This reader walks the records from the start (schemas, channels, messages, chunks with
    no, lz4 or zstd compression) and stops cleanly at the first incomplete record, so every
    message written before the damage is kept. It offers the subset of ``AnyReader`` that
    :func:`read_raw`, :func:`deserialize` and :func:`header_stamp_ns` use.
    """

    is2 = True

    def __init__(self, path: Path, store: Typestore) -> None:
        self.path = path
        self.typestore = store
        self.truncated_at: int | None = None
        self._messages: list[tuple[int, int, bytes]] = []  # (channel, log time, data)
        self._channels: dict[int, _SalvagedConnection] = {}
        self._schemas: dict[int, str] = {}
        self.expected_counts = _metadata_counts(path.parent / 'metadata.yaml')
        data = path.read_bytes()
        self.size_bytes = len(data)
        if not data.startswith(_MCAP_MAGIC):
            raise BagError(f'{path} is not an MCAP file (bad magic bytes)')
        end = self._records(memoryview(data), len(_MCAP_MAGIC), len(data))
        if end < len(data):
            self.truncated_at = end
        self._messages.sort(key=lambda m: m[1])
        self.connections = list(dict.fromkeys(self._channels.values()))

    def _records(self, data: memoryview, pos: int, end: int) -> int:
        """Parse records in ``data[pos:end]``; returns where parsing stopped."""
        while pos + 9 <= end:
            opcode = data[pos]
            (length,) = struct.unpack_from('<Q', data, pos + 1)
            body = pos + 9
            if body + length > end:
                return pos
            try:
                self._record(opcode, data[body:body + length])
            except (struct.error, ValueError, UnicodeDecodeError):
                return pos
            pos = body + length
        return pos

    def _record(self, opcode: int, body: memoryview) -> None:
        def text(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from('<I', body, at)
            return bytes(body[at + 4:at + 4 + n]).decode(), at + 4 + n

        if opcode == 0x03:  # Schema: id, name, encoding, data
            (schema_id,) = struct.unpack_from('<H', body, 0)
            name, _ = text(2)
            self._schemas[schema_id] = name
        elif opcode == 0x04:  # Channel: id, schema id, topic, encoding, metadata
            channel_id, schema_id = struct.unpack_from('<HH', body, 0)
            topic, _ = text(4)
            self._channels[channel_id] = _SalvagedConnection(topic,
                                                             self._schemas.get(schema_id, ''))
        elif opcode == 0x05:  # Message: channel, sequence, log time, publish time, data
            channel_id, _, log_time, _ = struct.unpack_from('<HIQQ', body, 0)
            self._messages.append((channel_id, log_time, bytes(body[22:])))
        elif opcode == 0x06:  # Chunk: start, end, size, crc, compression, records
            compression, at = text(28)
            (size,) = struct.unpack_from('<Q', body, at)
            records = bytes(body[at + 8:at + 8 + size])
            if compression == 'lz4':
                import lz4.frame

                records = lz4.frame.decompress(records)
            elif compression == 'zstd':
                from backports import zstd

                records = zstd.decompress(records)
            elif compression:
                raise ValueError(f'unknown chunk compression {compression!r}')
            self._records(memoryview(records), 0, len(records))

    def messages(self, connections: Sequence[Any] = (), start: int | None = None,
                 stop: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
        topics = {c.topic for c in connections}
        for channel_id, t_ns, data in self._messages:
            connection = self._channels.get(channel_id)
            if connection is None or (topics and connection.topic not in topics):
                continue
            if (start is not None and t_ns < start) or (stop is not None and t_ns >= stop):
                continue
            yield connection, t_ns, data

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        self._messages.clear()

    def __enter__(self) -> SalvagedMcap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _metadata_counts(path: Path) -> dict[str, int]:
    """Messages per topic as listed in a rosbag2 ``metadata.yaml`` (empty if unreadable)."""
    import yaml

    try:
        info = yaml.safe_load(path.read_text())['rosbag2_bagfile_information']
        return {t['topic_metadata']['name']: int(t['message_count'])
                for t in info['topics_with_message_count']}
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return {}


def _starts_as_mcap(path: Path) -> bool:
    with path.open('rb') as stream:
        return stream.read(len(_MCAP_MAGIC)) == _MCAP_MAGIC


def _mcap_file(path: Path) -> Path | None:
    if path.suffix == '.mcap':
        return path
    files = sorted(path.glob('*.mcap')) if path.is_dir() else []
    return files[0] if len(files) == 1 else None


def open_bags(paths: Sequence[str | os.PathLike[str]], distro: str = 'humble') -> AnyReader:
    """An opened ``AnyReader`` over one or more bags (folders or bare ``.mcap``/``.db3``).

    ``distro`` picks the typestore used when a bag carries no message definitions (older
    Foxy/Galactic sqlite3 bags). Close it with ``.close()`` or use it in a with-statement.
    """
    bag_paths = [Path(p) for p in paths]
    for path in bag_paths:
        if not path.exists():
            raise BagError(f'bag {path} does not exist')
    store = typestore(distro)
    # AnyReader checks a bag folder for metadata.yaml in its constructor (FileNotFoundError)
    # and the rest in open() (AnyReaderError): both mean "not a readable bag".
    try:
        reader = _OpenedReader(bag_paths, default_typestore=store)
        reader.open()
    except (AnyReaderError, FileNotFoundError) as err:
        mcap = _mcap_file(bag_paths[0]) if len(bag_paths) == 1 else None
        if mcap is not None and 'magic' in str(err).lower() and _starts_as_mcap(mcap):
            return cast(AnyReader, SalvagedMcap(mcap, store))
        raise BagError(f'cannot open bag {", ".join(map(str, bag_paths))}: {err}') from err
    return reader


def read_messages(reader: AnyReader, topics: Sequence[str] = ()
                  ) -> Iterator[tuple[str, int, Any]]:
    """``(topic, record_time_ns, message)`` in record order, for ``topics`` (all if empty)."""
    connections = [c for c in reader.connections if not topics or c.topic in topics]
    for connection, t_ns, raw in reader.messages(connections=connections):
        yield connection.topic, t_ns, reader.deserialize(raw, connection.msgtype)


def raw_messages(reader: AnyReader) -> Iterator[tuple[Connection, int, bytes]]:
    """``(connection, record_time_ns, raw)`` of every message of an opened bag, in record
    order; the raw bytes are exactly as stored (CDR for ROS 2 bags)."""
    yield from reader.messages()


def bag_storage(path: str | os.PathLike[str]) -> Storage | None:
    """The storage of a ROS 2 bag (a folder, or a bare ``.mcap``/``.db3``): ``'mcap'``,
    ``'sqlite3'``, or None when neither (a ROS 1 ``.bag``, an empty folder)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.iterdir()) if path.is_dir() else []
    suffixes = {f.suffix for f in files}
    if '.mcap' in suffixes:
        return 'mcap'
    if '.db3' in suffixes:
        return 'sqlite3'
    return None


def bag_topics(reader: AnyReader) -> dict[str, str]:
    """Every topic of an opened bag and its message type."""
    return {c.topic: c.msgtype for c in reader.connections}


def read_raw(reader: AnyReader, topics: Sequence[str], start_ns: int | None = None,
             stop_ns: int | None = None) -> Iterator[tuple[str, int, str, bytes]]:
    """``(topic, record_time_ns, msgtype, raw)`` for ``topics`` in record order, optionally
    limited to record times in ``[start_ns, stop_ns)``; deserialize with :func:`deserialize`."""
    connections = [c for c in reader.connections if c.topic in topics]
    if not connections:
        return
    for connection, t_ns, raw in reader.messages(connections=connections, start=start_ns,
                                                 stop=stop_ns):
        yield connection.topic, t_ns, connection.msgtype, raw


def deserialize(reader: AnyReader, raw: bytes, msgtype: str) -> Any:
    """A message from :func:`read_raw`'s raw bytes."""
    return reader.deserialize(raw, msgtype)


def header_stamp_ns(reader: AnyReader, raw: bytes, msgtype: str) -> int:
    """``header.stamp`` of a raw message whose first field is a ``std_msgs/Header``.

    For ROS 2 (CDR) bags the stamp is read straight from the bytes after the 4-byte
    encapsulation header, which avoids deserializing images and clouds just to index them;
    ROS 1 bags (seq before stamp) are deserialized.
    """
    if getattr(reader, 'is2', True) and len(raw) >= 12:
        little = raw[1] & 1  # representation id 0x0001 = CDR little endian
        sec, nanosec = struct.unpack_from('<iI' if little else '>iI', raw, 4)
        return sec * 1_000_000_000 + nanosec
    message: Any = reader.deserialize(raw, msgtype)
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
