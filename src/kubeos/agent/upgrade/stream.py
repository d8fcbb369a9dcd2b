"""The download side of the single streaming pass: read, count and hash on the fly.

A producer thread pulls the HTTP body into a small pool of page-aligned 1 MiB buffers and feeds
sha256 with each one while the consumer (the partition writer or the tar extractor) works on
the previous buffers. ``ssl`` reads, ``hashlib`` on large buffers and ``os.write`` release the
GIL, so downloading, hashing and writing overlap the way ``curl | tee >(sha256sum) | dd`` does,
and no byte is stored anywhere but in the target partition. The buffers are ``mmap`` pages,
reused rather than allocated per chunk, and aligned so the raw writer can use ``O_DIRECT``.
"""

from __future__ import annotations

import hashlib
import mmap
import queue
import threading
from collections.abc import Iterator
from typing import Protocol

from kubeos.agent.errors import AgentError, ChecksumMismatchError, DownloadError

CHUNK = 1 << 20
DEPTH = 16  # buffers in the pool: at most 16 MiB in flight


class Readable(Protocol):
    length: int | None

    def readinto(self, buffer: memoryview) -> int: ...


_Item = tuple[mmap.mmap, int] | BaseException | None


class HashingStream:
    """Reads ``source`` in a background thread and hashes everything. Consume it either with
    :meth:`chunks` (each chunk is valid until the next is requested) or file-like with
    :meth:`read` (for ``tarfile``); then :meth:`finish` drains it and checks its length.
    """

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._sha = hashlib.sha256()
        self.received = 0
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(DEPTH):
            self._free.put(mmap.mmap(-1, CHUNK))
        self._full: queue.Queue[_Item] = queue.Queue()
        self._stop = threading.Event()
        self._eof = False
        self._held: mmap.mmap | None = None  # buffer behind ``_pending``
        self._pending = memoryview(b"")
        self._thread = threading.Thread(target=self._produce, name="download", daemon=True)
        self._thread.start()

    def _take_free(self) -> mmap.mmap | None:
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def _produce(self) -> None:
        try:
            while (buf := self._take_free()) is not None:
                view = memoryview(buf)
                filled = 0
                while filled < CHUNK:
                    n = self._source.readinto(view[filled:])
                    if n == 0:
                        break
                    filled += n
                if filled:
                    self._sha.update(view[:filled])
                    self.received += filled
                view.release()
                if filled == 0:
                    break
                self._full.put((buf, filled))
            if self._stop.is_set():
                return
            length = self._source.length
            if length is not None and self.received != length:
                raise DownloadError(f"download truncated: got {self.received} of {length} bytes")
            self._full.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            if not isinstance(exc, AgentError):
                exc = DownloadError(f"download failed: {exc}")
            self._full.put(exc)

    def _next(self) -> tuple[mmap.mmap, int] | None:
        if self._held is not None:  # the consumer is done with the previous buffer
            self._free.put(self._held)
            self._held = None
        if self._eof:
            return None
        item = self._full.get()
        if item is None or isinstance(item, BaseException):
            self._eof = True
            if item is not None:
                raise item
            return None
        self._held = item[0]
        return item

    def chunks(self) -> Iterator[memoryview]:
        """The remaining bytes, one buffer at a time (after what :meth:`read` returned)."""
        if self._pending:
            rest, self._pending = self._pending, memoryview(b"")
            yield rest
        while (item := self._next()) is not None:
            yield memoryview(item[0])[: item[1]]

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the start of what comes next (the first buffer's worth)."""
        if not self._pending and (item := self._next()) is not None:
            self._pending = memoryview(item[0])[: item[1]]
        return bytes(self._pending[:size])

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            item = self._next()
            if item is None:
                return b""
            self._pending = memoryview(item[0])[: item[1]]
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
        """Stop the producer (the consumer failed or is done); safe to call more than once."""
        self._stop.set()
        self._thread.join(timeout=5)


def check_digest(expected: str, actual: str) -> None:
    if expected.strip().lower() != actual:
        raise ChecksumMismatchError(f"Checksum {actual} mismatch to {expected.strip().lower()}")
