"""The speed trick of the default CPU path: keep freed tensor memory in the process (glibc's mallopt).

Every training step frees and reallocates the same large activations (12.8 MB for a 128 x 32 x 28 x 28
float32 tensor); glibc serves blocks this large with mmap or trims them once freed, so each step faults
its pages in again, zeroed. PyTorch's CPU allocator keeps no cache of its own. Measured (one default VAE
epoch, 2-core AMD EPYC capped to AVX2): 11.7 M -> 0.34 M minor page faults, 683 -> 1,205 images/s,
bit-identical losses. The process keeps its peak memory, which the next step needs anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30  # blocks below 1 GiB come from the heap, and up to 1 GiB of free heap stays


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to KEEP_BYTES (setting either ends glibc's adaptive
    threshold, hence both); True where that took effect, False off glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library to load, or one without mallopt (musl)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def keep_freed_memory_on(device) -> bool:
    """keep_freed_memory() where `device` (a torch.device) is a CPU, whose tensors live in host memory."""
    return device.type == "cpu" and keep_freed_memory()
