"""Launchers of the ASPP kernels (:mod:`.kernels`): tile sizes, grids, the buffers they write.

:func:`aspp_project_forward_triton` and :func:`aspp_project_backward_triton` take the arguments
of the ops (:mod:`.op`) and return their results; they run only when triton imports.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._utils import compute_dtype, device_capability, on_input_device, pow2_block, split_reduction, tl_dtype
from ..dispatch import HAS_TRITON, interpreter_enabled
from .reference import _is_channels_last

if HAS_TRITON:
    import triton

    from .kernels import _branch_grad_kernel, _finish_kernel, _project_kernel, _weight_grad_kernel

MAX_BRANCHES_PER_LAUNCH = 4
"""Branch pointers one kernel launch takes; more branches take more launches."""


def _empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device, channels_last: bool = False) -> Tensor:
    """Every buffer the ops return or the kernels write (tests replace it to poison them)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=fmt)


def _new_like(like: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """``(N, channels, H, W)`` in ``like``'s layout (see :func:`.reference._is_channels_last`)."""
    n, _, h, w = like.shape
    return _empty((n, channels, h, w), dtype, like.device, _is_channels_last(like))


def _use_dot(dtype: torch.dtype, device: torch.device) -> bool:
    if dtype == torch.float64:
        return False
    return not (dtype == torch.bfloat16 and device.type == "cpu" and interpreter_enabled())


def _precision(dtype: torch.dtype) -> str:
    return "tf32" if dtype != torch.float32 or torch.backends.cudnn.allow_tf32 else "ieee"


def _gemm_stages(dtype: torch.dtype, device: torch.device) -> int:
    """Software-pipeline depth of the GEMM kernels. fp32 (TF32) on sm_90: 1. Hopper's wgmma
    takes TF32 operands only K-major from shared memory; with pipelining Triton transposes an
    operand whose contiguous dim is not the reduction dim (e.g. NCHW pixels) with 4-byte async
    copies, without it the loads are 128-bit and the transpose happens on the store to shared
    memory (the compile gate shows the load widths). Not on sm_100, where the unpipelined
    forward GEMM spills. bf16/fp16 operands transpose for free: 3."""
    return 1 if dtype == torch.float32 and device_capability(device)[0] == 9 else 3


def _gemm_blocks(dtype: torch.dtype, device: torch.device, rows: int, inner: int, cols: int) -> dict:
    """Tile sizes: big ones under the interpreter (its cost is per program), MMA tiles on GPU."""
    if device.type == "cpu":
        return dict(BLOCK_R=pow2_block(rows, 16, 64), BLOCK_C=pow2_block(inner, 16, 64), BLOCK_P=pow2_block(cols, 16, 64))
    if not _use_dot(dtype, device):
        return dict(BLOCK_R=16, BLOCK_C=16, BLOCK_P=32, num_warps=4)
    return dict(BLOCK_R=pow2_block(rows, 16, 128), BLOCK_C=64 if dtype.itemsize == 2 else 32,
                BLOCK_P=128, num_warps=8, num_stages=_gemm_stages(dtype, device))


def _pixels(t: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, C, H*W)``, a view for NCHW / channels_last, a copy otherwise."""
    return t.flatten(2)


def _branch_groups(count: int) -> List[range]:
    """The branches one launch handles (its kernels take up to MAX_BRANCHES_PER_LAUNCH pointers)."""
    return [range(i, min(i + MAX_BRANCHES_PER_LAUNCH, count)) for i in range(0, count, MAX_BRANCHES_PER_LAUNCH)]


def _padded(ptrs: List[Tensor]) -> List[Tensor]:
    """``ptrs`` repeated up to MAX_BRANCHES_PER_LAUNCH pointers (the unused ones are never read)."""
    return ptrs + [ptrs[0]] * (MAX_BRANCHES_PER_LAUNCH - len(ptrs))


def _launch_project(branches: Sequence[Tensor], weight: Tensor, bias: Optional[Tensor],
                    scale: Optional[Tensor], shift: Optional[Tensor], relu: bool, out: Tensor) -> Tensor:
    """Fill ``out (N, R, H, W)`` with ``epilogue(weight @ concat(branches) + bias)``; ``weight (R, K*C)``."""
    flat = [_pixels(b) for b in branches]
    if len({f.stride() for f in flat}) > 1:  # one set of strides for all branch pointers
        flat = [f.contiguous() for f in flat]
    n, c, p = flat[0].shape
    r = weight.shape[0]
    dtype, device = flat[0].dtype, flat[0].device
    out_flat = _pixels(out)
    blocks = _gemm_blocks(dtype, device, r, c, p)
    grid = (triton.cdiv(p, blocks["BLOCK_P"]), triton.cdiv(r, blocks["BLOCK_R"]), n)
    if scale is not None:
        scale, shift = scale.contiguous(), shift.contiguous()
    groups = _branch_groups(len(flat))
    acc_buf = None
    if len(groups) > 1:  # partial sums of the earlier groups, in out's layout
        acc_buf = _pixels(_new_like(out, r, compute_dtype(flat[0])))
    for gi, group in enumerate(groups):
        last = gi == len(groups) - 1
        dst = out_flat if last else acc_buf
        w = weight[:, group[0] * c:]
        _project_kernel[grid](
            *_padded([flat[k] for k in group]), w,
            bias if (last and bias is not None) else dst,
            scale if (last and scale is not None) else dst,
            shift if (last and shift is not None) else dst,
            acc_buf if gi > 0 else dst, dst,
            r, c, p,
            *flat[0].stride(), *w.stride(),
            *(bias.stride() if bias is not None else (0, 0)),
            *dst.stride(),
            NB=len(group), HAS_ACC=gi > 0, HAS_BIAS=last and bias is not None,
            HAS_AFFINE=last and scale is not None, RELU=last and relu,
            ACC=tl_dtype(dtype), USE_DOT=_use_dot(dtype, device), PRECISION=_precision(dtype),
            **blocks,
        )
    return out


@on_input_device
def aspp_project_forward_triton(branches: Sequence[Tensor], weight: Tensor, bias: Tensor,
                                scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
                                relu: bool = False) -> Tensor:
    """Triton ``aspp_project`` (arguments and result as :func:`.op.aspp_project`)."""
    out = _new_like(branches[0], weight.shape[0], branches[0].dtype)
    return _launch_project(branches, weight, bias, scale, shift, relu, out)


def _backward_blocks(dtype: torch.dtype, device: torch.device, cout: int, cb: int, p: int, nq: int):
    """``(branch_grad, weight_grad, finish)`` launch parameters of the backward kernels."""
    if device.type == "cpu":  # the interpreter: few, big programs
        return (dict(BLOCK_M=pow2_block(cb, 16, 64), BLOCK_R=pow2_block(cout, 16, 64), BLOCK_P=pow2_block(p, 16, 64)),
                dict(BLOCK_R=pow2_block(cout, 16, 64), BLOCK_C=pow2_block(cb, 16, 64), BLOCK_Q=pow2_block(nq, 16, 64)),
                dict(BLOCK=1024, BLOCK_R=pow2_block(cout, 16, 256)))
    finish = dict(BLOCK=1024, BLOCK_R=128, num_warps=4)
    if not _use_dot(dtype, device):
        return (dict(BLOCK_M=16, BLOCK_R=16, BLOCK_P=32, num_warps=4),
                dict(BLOCK_R=16, BLOCK_C=16, BLOCK_Q=32, num_warps=4), finish)
    half, stages = dtype.itemsize == 2, _gemm_stages(dtype, device)
    # sm_80, fp32: 3 stages of the branch-gradient tiles spill (bf16 spills with 2, not 3)
    branch_stages = 2 if not half and device_capability(device) < (9, 0) else stages
    return (dict(BLOCK_M=128, BLOCK_R=64 if half else 32, BLOCK_P=128, num_warps=8, num_stages=branch_stages),
            dict(BLOCK_R=64, BLOCK_C=64, BLOCK_Q=64 if half else 32, num_warps=4, num_stages=stages), finish)


@on_input_device
def aspp_project_backward_triton(grad: Tensor, out: Tensor, branches: Sequence[Tensor], weight: Tensor,
                                 bias: Tensor, scale: Optional[Tensor] = None, preact: Optional[Tensor] = None,
                                 relu: bool = False) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
    """Triton ``aspp_project_backward`` (arguments and results as :func:`.op.aspp_project_backward`).

    Three launches for up to 4 branches (two more per further 4): the branch gradients
    (:func:`.kernels._branch_grad_kernel`, which also leaves the per-tile pixel sums), the weight-gradient
    partials over pixel splits (:func:`.kernels._weight_grad_kernel`), and :func:`.kernels._finish_kernel`.
    ``grad * relu'(out) * scale`` is never stored: both GEMM kernels make it while loading.
    """
    n, cb, h, w = branches[0].shape
    cout, p = weight.shape[0], h * w
    dtype, device = branches[0].dtype, branches[0].device
    acc = compute_dtype(branches[0])
    flat = [_pixels(b) for b in branches]
    if len({f.stride() for f in flat}) > 1:  # one set of strides for all branch pointers
        flat = [f.contiguous() for f in flat]
    g_f, o_f = _pixels(grad), _pixels(out)
    pre_f = _pixels(preact) if preact is not None else o_f
    scale_t = scale.contiguous() if scale is not None else o_f
    flags = dict(RELU=relu, HAS_SCALE=scale is not None, ACC=tl_dtype(dtype))
    dot = dict(USE_DOT=_use_dot(dtype, device), PRECISION=_precision(dtype))
    ba, bb, bf = _backward_blocks(dtype, device, cout, cb, p, n * p)

    grad_branches = [_new_like(branches[0], cb, dtype) for _ in branches]
    d_f = [_pixels(d) for d in grad_branches]
    n_pb = triton.cdiv(p, ba["BLOCK_P"])
    sums = _empty((n_pb, 2 if preact is not None else 1, n, cout), acc, device)
    m_blocks = triton.cdiv(cb, ba["BLOCK_M"])
    c_blocks = triton.cdiv(cb, bb["BLOCK_C"])
    tiles = triton.cdiv(cout, bb["BLOCK_R"]) * len(branches) * c_blocks
    # one program per SM (two splits under the interpreter, so that the split path is tested)
    q_per_split, n_split = split_reduction(n * p, bb["BLOCK_Q"], tiles, device, per_sm=1, cpu_programs=2 * tiles)
    part_w = _empty((n_split, cout, len(branches) * cb), acc, device)
    for gi, group in enumerate(_branch_groups(len(branches))):
        w_g = weight[:, group[0] * cb:]
        _branch_grad_kernel[(len(group) * m_blocks, n_pb, n)](
            g_f, o_f, scale_t, pre_f, w_g, *_padded([d_f[k] for k in group]), sums,
            cout, cb, p, m_blocks,
            *g_f.stride(), *o_f.stride(), *pre_f.stride(), *w_g.stride(), *d_f[0].stride(),
            sums.stride(0), sums.stride(1), sums.stride(2),
            SUMS=gi == 0, HAS_PRE=preact is not None, **flags, **dot, **ba,
        )
        part_g = part_w[:, :, group[0] * cb:]
        _weight_grad_kernel[(triton.cdiv(cout, bb["BLOCK_R"]), len(group) * c_blocks, n_split)](
            g_f, o_f, scale_t, *_padded([flat[k] for k in group]), part_g,
            cout, cb, p, n * p, q_per_split, c_blocks,
            *g_f.stride(), *o_f.stride(), *flat[0].stride(), *part_g.stride(),
            **flags, **dot, **bb,
        )

    grad_weight = _empty((cout, len(branches) * cb), weight.dtype, device)
    grad_bias = _empty((n, cout), bias.dtype, device)
    grad_affine = _empty((sums.shape[1], cout), acc, device)
    w_programs = triton.cdiv(grad_weight.numel(), bf["BLOCK"])
    _finish_kernel[(w_programs + triton.cdiv(cout, bf["BLOCK_R"]),)](
        part_w, grad_weight, n_split, grad_weight.numel(), w_programs,
        sums, scale_t, grad_bias, grad_affine, n_pb, n, cout,
        sums.stride(0), sums.stride(1), sums.stride(2), *grad_bias.stride(),
        HAS_SCALE=scale is not None, HAS_PRE=preact is not None, ACC=tl_dtype(dtype), **bf,
    )
    return grad_branches, grad_weight, grad_bias, grad_affine
