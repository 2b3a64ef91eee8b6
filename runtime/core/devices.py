"""Which GPUs this process can use, found without importing a framework.

Asks the CUDA driver (libcuda) directly through ctypes: cheap, and it honours
CUDA_VISIBLE_DEVICES. No driver, or no device, means no GPU.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def gpu_ids() -> tuple[int, ...]:
    """Device ids 0..N-1 of the visible CUDA GPUs; empty where there is none."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ()
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    return tuple(range(count.value))
