"""Helpers shared by the ops of :mod:`fastmtl.kernels` (layouts, dtypes, checks, launch sizes).

Everything here is plain Python / PyTorch except the ``@triton.jit`` helper :func:`program_tile`
at the end, which exists only when triton imports. (Kernels call few such helpers: under the
Triton interpreter every call of one costs about a millisecond of re-patching.)
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional, Tuple, TypeVar

import torch
from torch import Tensor

from .dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The dtypes every op accepts for its tensors."""

_F = TypeVar("_F", bound=Callable)


# --------------------------------------------------------------------------- layouts
def merge_hw(t: Tensor) -> Tuple[Tensor, Tuple[int, ...]]:
    """``(t', strides)``: the strides of ``t``'s leading dims plus one stride for its merged
    last two dims (H*W). ``t' is t`` unless H and W cannot merge, then ``t' = t.contiguous()``.
    """
    *lead, sh, sw = t.stride()
    h, w = t.shape[-2:]
    if w == 1:
        return t, (*lead, sh)
    if h == 1 or sh == w * sw:
        return t, (*lead, sw)
    return merge_hw(t.contiguous())


def out_memory_format(t: Tensor) -> torch.memory_format:
    """channels_last when the channels of the 4-d ``t`` are its innermost dim (channels_last
    tensors and their channel slices), else contiguous: the output layout of se_scale and
    sigmoid_gate."""
    return torch.channels_last if t.stride(1) < t.stride(3) else torch.contiguous_format


def empty_out(t: Tensor) -> Tensor:
    """An uninitialised tensor of ``t``'s shape, dtype and device in :func:`out_memory_format`."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=out_memory_format(t))


def channels_inner(strides: Tuple[int, ...]) -> bool:
    """Whether ``(sn, sc, shw)`` strides (from :func:`merge_hw`) have channels innermost."""
    return strides[1] == 1 and strides[2] != 1


# --------------------------------------------------------------------------- dtypes and checks
def compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """fp64 if any given tensor is fp64, else fp32: the accumulation dtype of the kernels."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def tl_dtype(dtype: torch.dtype):
    """The Triton accumulation dtype for a torch compute dtype (``tl.float64`` for fp64, else
    ``tl.float32``); the kernels take it as their ``ACC`` constexpr."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def check_same_device(op: str, **tensors: Optional[Tensor]) -> None:
    """Raise a ValueError naming the first tensor whose device differs from the first one's."""
    named = [(k, t) for k, t in tensors.items() if t is not None]
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")


def check_floating(op: str, **tensors: Optional[Tensor]) -> None:
    """Raise a TypeError naming the first tensor whose dtype is not in :data:`FLOAT_DTYPES`."""
    for name, t in tensors.items():
        if t is not None and t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be fp16, bf16, fp32 or fp64, got {t.dtype}")


# --------------------------------------------------------------------------- launch sizes
def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


def pow2_block(n: int, lo: int, hi: int) -> int:
    """``next_pow2(n)`` clamped to ``[lo, hi]`` (both powers of two): a block size for ``n`` items."""
    return max(lo, min(hi, next_pow2(n)))


def tile_shape(c: int, hw: int, chan_inner: bool, interpret: bool) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_HW)`` of a 2-d tile over (channels, pixels). The contiguous dim gets
    the long side. Under the interpreter tiles are large (its cost is per program)."""
    tile = 16384 if interpret else 2048
    if chan_inner:
        block_c = min(next_pow2(c), tile if interpret else 256)
        block_hw = min(next_pow2(hw), max(1, tile // block_c))
    else:
        block_hw = min(next_pow2(hw), tile if interpret else 1024)
        block_c = min(next_pow2(c), max(1, tile // block_hw))
    return max(2, block_c), max(2, block_hw)


def tile_grid(
    t: Tensor, strides: Tuple[int, ...], block_c: Optional[int] = None, block_hw: Optional[int] = None,
) -> Tuple[Tuple[int, int, int], int, int]:
    """``(grid, BLOCK_C, BLOCK_HW)`` of an elementwise kernel over the ``(N, C, H, W)`` tensor
    ``t``, one program per tile of :func:`tile_shape` (laid out for ``strides``, from
    :func:`merge_hw`): grid ``(cdiv(H*W, BLOCK_HW), cdiv(C, BLOCK_C), N)``.
    ``block_c``/``block_hw`` override the heuristic."""
    n, c, h, w = t.shape
    bc, bhw = tile_shape(c, h * w, channels_inner(strides), not t.is_cuda)
    bc, bhw = block_c or bc, block_hw or bhw
    return (cdiv(h * w, bhw), cdiv(c, bc), n), bc, bhw


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (cached)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> Tuple[int, int]:
    """Compute capability ``(major, minor)`` of CUDA device ``index`` (cached)."""
    return torch.cuda.get_device_capability(index)


def device_capability(device: torch.device) -> Tuple[int, int]:
    """The CUDA compute capability of ``device`` (e.g. ``(9, 0)`` for H100/H200); ``(0, 0)`` off CUDA."""
    if device.type != "cuda":
        return (0, 0)
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def reduction_chunks(programs: int, length: int, block: int, device: torch.device, *,
                     per_sm: int = 4, cpu_programs: int = 1) -> int:
    """How many fixed-order chunks to split a reduction of ``length`` into so that
    ``programs * chunks`` fills a GPU (about ``per_sm`` programs per SM; ``cpu_programs``
    in all off GPU), at most one chunk per ``block``; at least 1."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        wanted = per_sm * _sm_count(index)
    else:
        wanted = cpu_programs
    return max(1, min(cdiv(wanted, programs), cdiv(length, block)))


def split_reduction(length: int, block: int, programs: int, device: torch.device, chunks: Optional[int] = None,
                    **kwargs) -> Tuple[int, int]:
    """``(chunk, chunks)``: a reduction of ``length`` items split into ``chunks`` consecutive
    runs of ``chunk`` items (a multiple of ``block``; the last run may be shorter).
    ``chunks`` (a wish, rounded to whole blocks) defaults to :func:`reduction_chunks`, which
    also takes ``kwargs``."""
    chunks = chunks or reduction_chunks(programs, length, block, device, **kwargs)
    chunk = cdiv(cdiv(length, chunks), block) * block
    return chunk, cdiv(length, chunk)


# --------------------------------------------------------------------------- launching
def on_input_device(launcher: _F) -> _F:
    """Decorator for launchers: run with the CUDA device of the first tensor argument (or the
    first tensor of a first list argument) made current, since Triton launches on the current
    device and stream. No-op for CPU tensors."""

    @functools.wraps(launcher)
    def wrapper(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        if isinstance(first, (list, tuple)):
            first = first[0]
        guard = torch.cuda.device(first.device) if first.is_cuda else contextlib.nullcontext()
        with guard:
            return launcher(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


if HAS_TRITON:

    @triton.jit
    def program_tile(BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        """``(n, rows, cols)`` of this program in a grid ``(cdiv(cols, BLOCK_COLS),
        cdiv(rows, BLOCK_ROWS), N)``: the sample and its row and column indices, all int64 (so
        offsets built from them do not overflow past 2**31 elements)."""
        n = tl.program_id(2).to(tl.int64)
        rows = tl.program_id(1).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.program_id(0).to(tl.int64) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        return n, rows, cols
