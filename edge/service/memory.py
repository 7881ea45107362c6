"""Process memory tuning shared by the long-running commands.

glibc gives every thread its own malloc arena and keeps freed memory in it, so
the encoder's large, short-lived buffers (freed after each utterance) inflate
RSS long after they are gone. One arena, and blocks of 1 MiB or more mapped and
unmapped directly, return that memory to the OS. Over the eval sets (onnxruntime
arena off) `edge-asr transcribe` peaked at 232 MiB instead of 271 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc mallopt() parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_HEAP_SETTINGS = ((_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, 1 << 20), (_M_MMAP_THRESHOLD, 1 << 20))


def limit_heap_growth() -> None:
    """Call before the threads and the model exist (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return
    for param, value in _HEAP_SETTINGS:
        libc.mallopt(param, value)
