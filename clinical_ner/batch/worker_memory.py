"""Give a batch worker's free heap back to the OS before it loads its model.

A Beam worker reaches its model after it has read, parsed and shuffled
notes; the memory they used is free again but still held by the C allocator,
so the model and its working memory would sit on top of it and the worker's
peak RSS would count both. (A Spark worker gets its notes from the JVM and
has little to give back: not used there.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def release_free_memory() -> bool:
    """Collect garbage, then return the C heap's free pages (glibc's ``malloc_trim(0)``).

    Returns whether the heap was trimmed: ``False`` where the C library has
    no ``malloc_trim`` (macOS, Windows, musl), where only the collection runs.
    """
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
