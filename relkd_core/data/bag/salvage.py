"""Reading what is left of an MCAP file that lost its end (a recorder killed mid-write)."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relkd_core.data.bag._rosbags import Typestore
from relkd_core.errors import BagError

__all__ = ['MCAP_MAGIC', 'SalvagedMcap', 'mcap_file', 'starts_as_mcap']

MCAP_MAGIC = b'\x89MCAP0\r\n'


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
        if not data.startswith(MCAP_MAGIC):
            raise BagError(f'{path} is not an MCAP file (bad magic bytes)')
        end = self._records(memoryview(data), len(MCAP_MAGIC), len(data))
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


def starts_as_mcap(path: Path) -> bool:
    with path.open('rb') as stream:
        return stream.read(len(MCAP_MAGIC)) == MCAP_MAGIC


def mcap_file(path: Path) -> Path | None:
    if path.suffix == '.mcap':
        return path
    files = sorted(path.glob('*.mcap')) if path.is_dir() else []
    return files[0] if len(files) == 1 else None

