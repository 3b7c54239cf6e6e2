"""The ``mvc`` process's allocator policy: freed part buffers are reused, not unmapped.

Transfers and the tensors layout allocate and free buffers of a few MiB per part, on
several threads. glibc serves such blocks with a fresh ``mmap`` each time (its dynamic
threshold caps at 32 MiB only after a free), so every part paid its page faults again:
a 418 MiB tensors pull took ~200,000 minor faults and 1.4 s of system time. With blocks
up to 32 MiB served from the heaps and freed memory kept for reuse, the same pull takes
~50,000 faults (issue 19). Peak memory stays bounded by the parts in flight: up to 64 MiB
freed at the top of a heap is kept (measured peak RSS of a 1 GiB push: 280 -> 290 MiB).
"""

from __future__ import annotations

import contextlib
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 64 * 2**20


def keep_freed_buffers() -> bool:
    """Apply the policy above where the C library is glibc; True when it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no mallopt)
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return False
