"""The download side of the single streaming pass: read, count and hash on the fly.

A producer thread pulls the HTTP body into 1 MiB chunks and feeds sha256 with each one while
the consumer (the partition writer or the tar extractor) works on the previous chunks. Both
``ssl`` reads, ``hashlib`` on large buffers and ``os.write`` release the GIL, so downloading,
hashing and writing overlap on two cores the way ``curl | tee >(sha256sum) | dd`` does, and no
byte is stored anywhere but in the target partition.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import Protocol

from kubeos.agent.errors import AgentError, ChecksumMismatchError, DownloadError

CHUNK = 1 << 20
DEPTH = 16  # chunks in flight between the threads (16 MiB)


class Readable(Protocol):
    length: int | None

    def readinto(self, buffer: memoryview) -> int: ...


class HashingStream:
    """Reads ``source`` in a background thread; hashes everything; consumed via :meth:`chunks`
    or file-like :meth:`read` (for ``tarfile``). Call :meth:`finish` to drain and verify length.
    """

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._sha = hashlib.sha256()
        self.received = 0
        self._queue: queue.Queue[bytearray | BaseException | None] = queue.Queue(DEPTH)
        self._stop = threading.Event()
        self._eof = False
        self._pending = memoryview(b"")
        self._thread = threading.Thread(target=self._produce, name="download", daemon=True)
        self._thread.start()

    def _put(self, item: bytearray | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                filled = 0
                while filled < CHUNK:
                    n = self._source.readinto(view[filled:])
                    if n == 0:
                        break
                    filled += n
                if filled == 0:
                    break
                self._sha.update(view[:filled])
                self.received += filled
                view.release()
                if filled < CHUNK:
                    del buf[filled:]
                if not self._put(buf):
                    return
            length = self._source.length
            if length is not None and self.received != length:
                raise DownloadError(
                    f"download truncated: got {self.received} of {length} bytes"
                )
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            if not isinstance(exc, AgentError):
                exc = DownloadError(f"download failed: {exc}")
            self._put(exc)

    def _next(self) -> bytearray | None:
        if self._eof:
            return None
        item = self._queue.get()
        if item is None:
            self._eof = True
            return None
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        return item

    def chunks(self) -> Iterator[bytes | bytearray]:
        """Every remaining byte, chunk by chunk (after what :meth:`read` already returned)."""
        if self._pending:
            rest = bytes(self._pending)
            self._pending = memoryview(b"")
            yield rest
        while (chunk := self._next()) is not None:
            yield chunk

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the start of what :meth:`read` will return next."""
        data = bytes(self._pending)
        while len(data) < size:
            chunk = self._next()
            if chunk is None:
                break
            data += chunk
        self._pending = memoryview(data)
        return data[:size]

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            chunk = self._next()
            if chunk is None:
                return b""
            self._pending = memoryview(chunk)
        if size < 0 or size >= len(self._pending):
            out = bytes(self._pending)
            self._pending = memoryview(b"")
            return out
        out = bytes(self._pending[:size])
        self._pending = self._pending[size:]
        return out

    def finish(self) -> str:
        """Consume the rest of the stream (e.g. tar padding) and return the sha256 hex digest."""
        for _ in self.chunks():
            pass
        self._thread.join()
        return self._sha.hexdigest()

    def abort(self) -> None:
        """Stop the producer (the consumer failed); safe to call more than once."""
        self._stop.set()
        self._thread.join(timeout=5)


def check_digest(expected: str, actual: str) -> None:
    if expected.strip().lower() != actual:
        raise ChecksumMismatchError(f"Checksum {actual} mismatch to {expected.strip().lower()}")

