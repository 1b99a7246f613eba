"""Memory-mapped windows of a blob file, and whether their pages are already in memory.

``BlobResponse`` hands the server a window's bytes straight from the page cache, so the kernel
copies them once (page cache -> socket) instead of twice (read, then write). ``resident()`` asks
the kernel (``mincore``) whether every page of the window is in memory: then the server may
write it from the event loop at once; otherwise ``fault_in()`` must first run in a thread, so
a cold file waits on the disk there and never stalls the event loop.

Each window is its own small mapping (8 MiB by default), so the process maps about one window
per response whatever the file size, and no mapping is larger than the window (a whole-file
private mapping of a 30 GB shard could exceed the kernel's overcommit heuristic on a small host).

Blobs are immutable: the store only ever replaces or removes a blob file (rename, unlink), never
truncates one in place, and a mapping outlives both. The caller checks the file is long enough
before mapping; reading a mapping past the end of its file would raise SIGBUS.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable

_PAGE = mmap.PAGESIZE
_GRAIN = mmap.ALLOCATIONGRANULARITY
_LOW_BIT = bytes(i & 1 for i in range(256))  # mincore sets bit 0 per resident page; the rest is reserved


def _load_mincore() -> Callable[[int, int, ctypes.Array[ctypes.c_char]], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).mincore
    except (OSError, AttributeError):  # no mincore here: every window is faulted in from a thread
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_MINCORE = _load_mincore()


class MappedWindow:
    """Bytes ``[start, stop)`` of an open file, mapped read-only for the caller: ``view``."""

    def __init__(self, fd: int, start: int, stop: int) -> None:
        base = start - start % _GRAIN
        # A private mapping with PROT_WRITE only so that ctypes can take its address for mincore;
        # nothing writes to it, the view handed out is read-only, and a private page could never
        # reach the file anyway (so dropping its pages, in ``release``, never loses a byte).
        self._mm = mmap.mmap(fd, stop - base, flags=mmap.MAP_PRIVATE,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        self.view = memoryview(self._mm)[start - base :].toreadonly()

    def resident(self) -> bool:
        """Whether every page is in memory now (False when the kernel cannot say)."""
        if _MINCORE is None:
            return False
        size = len(self._mm)
        vec = ctypes.create_string_buffer(-(-size // _PAGE))
        anchor = ctypes.c_char.from_buffer(self._mm)  # an export of the map, released below
        try:
            if _MINCORE(ctypes.addressof(anchor), size, vec) != 0:
                return False
        finally:
            del anchor
        return b"\x00" not in vec.raw.translate(_LOW_BIT)

    def fault_in(self) -> None:
        """Blocking: touch one byte per page, so every page is read and mapped."""
        bytes(self.view[::_PAGE])

    def release(self) -> None:
        """Unmap its pages from this process once sent. They stay in the page cache: if the server still
        holds part of the view to write, those pages map again and it sends the same bytes."""
        if not self._mm.closed:
            self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.view.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # the server still holds part of it to write: unmapped when it lets go
