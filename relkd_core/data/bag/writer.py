"""Atomic writing of ROS 2 bags.

A bag is built in a hidden temporary folder beside the destination and renamed into place
only when complete, so an interrupted run never leaves a half bag behind (and the next writer
of that path sweeps the temporary folders of writers that died).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from relkd_core.atomic import make_staging_dir
from relkd_core.data.bag._rosbags import (
    LATCHED_QOS,
    Connection,
    ConnectionExtRosbag2,
    Storage,
    StoragePlugin,
    Typestore,
    Writer,
    typestore,
)
from relkd_core.data.bag.messages import MessageFactory
from relkd_core.errors import BagError
from relkd_core.outputs import mark_output

__all__ = ['LATCHED_QOS', 'BagWriter']



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
