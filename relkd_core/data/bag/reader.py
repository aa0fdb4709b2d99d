"""Reading ROS 2 bags (MCAP and sqlite3 folders or bare files) through rosbags' AnyReader,
with a salvaging fallback for an MCAP file cut short."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from relkd_core.data.bag._rosbags import (
    AnyReader,
    AnyReaderError,
    Connection,
    Storage,
    typestore,
)
from relkd_core.data.bag.salvage import SalvagedMcap, mcap_file, starts_as_mcap
from relkd_core.errors import BagError

__all__ = ['bag_storage', 'bag_topics', 'deserialize', 'header_stamp_ns', 'open_bags',
           'raw_messages', 'read_messages', 'read_raw']


class _OpenedReader(AnyReader):
    """An ``AnyReader`` already opened by :func:`open_bags`: a with-statement only closes it
    (``AnyReader.__enter__`` would open it a second time and fail)."""

    def __enter__(self) -> _OpenedReader:
        return self



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
        mcap = mcap_file(bag_paths[0]) if len(bag_paths) == 1 else None
        if mcap is not None and 'magic' in str(err).lower() and starts_as_mcap(mcap):
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
