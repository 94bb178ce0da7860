"""Handing memory back to the operating system once a crowd of connections has gone.

Python keeps what it frees for reuse, and glibc's allocator keeps most of that from the system too:
after a thousand streams close, the process would stay at its peak size for ever. `malloc_trim`
returns the free pages; elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def release_free_memory() -> None:
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
