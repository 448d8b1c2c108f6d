"""Timing and the machine: median milliseconds of a call (:func:`median_ms`), the device's copy
bandwidth, GB/s and TFLOP/s arithmetic, the rotating input-set count, and device / version info.

``triton`` is imported inside :func:`median_ms` (CUDA only) and :func:`triton_version`: it is
optional and this module must import without it."""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch


CPU_TIMING_NOTE = ("CPU: time.perf_counter median of repeats; reference rows only -- the Triton kernels would "
                   "run in the Triton interpreter here, whose timing is meaningless")

CUDA_TIMING_NOTE = ("CUDA: triton.testing.do_bench median (CUDA events, L2 flushed before each call, warm-up), "
                    "inputs rotated among several sets larger than L2 together")

# Bytes of the copy that measures the device's bandwidth (per buffer; read + write are counted).
COPY_BYTES = {"tiny": 1 << 20, "small": 64 << 20, "full": 512 << 20}

# What the rotating input sets must exceed together when the device's cache size is unknown (CPU).
DEFAULT_CACHE_BYTES = 32 << 20



def gbps(num_bytes: float, ms: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes per second) of moving ``num_bytes`` in ``ms`` milliseconds."""
    return num_bytes / (ms * 1e-3) / 1e9



def tflops(flops: float, ms: float) -> float:
    """TFLOP/s of ``flops`` in ``ms`` milliseconds."""
    return flops / (ms * 1e-3) / 1e12



def input_sets(bytes_per_set: int, cache_bytes: int, lo: int = 2, hi: int = 64) -> int:
    """How many input sets to rotate so that together they are at least twice ``cache_bytes``
    (clamped to ``[lo, hi]``): consecutive calls then read from memory, not from the cache."""
    wanted = math.ceil(2 * cache_bytes / max(1, bytes_per_set))
    return max(lo, min(hi, wanted))



def device_cache_bytes(device: torch.device) -> int:
    """The last-level cache the rotating inputs must exceed: L2 on CUDA, a 32 MiB guess on CPU."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0) or 50 << 20)
    return DEFAULT_CACHE_BYTES



def median_ms(fn: Callable, device: torch.device, *, repeats: Optional[int] = None, budget_s: float = 0.5,
              min_repeats: int = 5, max_repeats: int = 100) -> float:
    """Median milliseconds of ``fn()``.

    CUDA: ``triton.testing.do_bench(fn, return_mode="median")``. CPU: a warm-up call, then
    ``repeats`` timed calls (default: as many as fit in ``budget_s``, within
    ``[min_repeats, max_repeats]``), ``time.perf_counter`` around each.
    """
    device = torch.device(device)
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    t0 = time.perf_counter()
    fn()
    estimate = time.perf_counter() - t0
    if repeats is None:
        repeats = int(budget_s / max(estimate, 1e-6))
        repeats = max(min_repeats, min(max_repeats, repeats))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3



def copy_bandwidth(device: torch.device, num_bytes: int, repeats: Optional[int] = None) -> Dict[str, float]:
    """Measured copy bandwidth: ``dst.copy_(src)`` of ``num_bytes`` (fp32, random), counting
    read + write (``2 * num_bytes``) per copy."""
    device = torch.device(device)
    numel = max(1, num_bytes // 4)
    src = torch.rand(numel, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, repeats=repeats)
    moved = 2 * numel * 4
    return {"bytes": moved, "ms": ms, "gbps": gbps(moved, ms)}



def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"



def load_average() -> Optional[List[float]]:
    """The 1/5/15-minute load averages (a shared machine's numbers depend on them); None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on Windows
        return None



def triton_version() -> Optional[str]:
    try:
        import triton

        return triton.__version__
    except Exception:  # pragma: no cover - triton missing or broken
        return None
