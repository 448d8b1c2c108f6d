"""ASPP projection without the five-branch concat.

DeepLabV3's ASPP concatenates ``K`` same-shape branch outputs ``b_k (N, Cb, H, W)`` and the
spatially constant image-pooling branch, then projects with a 1x1 conv ``Wp (Cout, (K+1)*Cb)``.
Splitting ``Wp`` by branch, the pooled part becomes a per-sample bias ``bias_n = Wp_pool @ p_n``
and the rest is one GEMM over pixels that reads every branch where it lies::

    y[n, o, p]  = sum_k sum_c weight[o, k*Cb + c] * b_k[n, c, p] + bias[n, o]
    out         = relu?(y * scale[o] + shift[o])        # optional eval-mode BatchNorm epilogue

Ops (namespace ``fastmtl``):

* ``aspp_project(branches, weight, bias, scale=None, shift=None, relu=False) -> out``
* ``aspp_project_backward(grad, out, branches, weight, bias, scale, preact, relu)
  -> (grad_branches, grad_weight, grad_bias, grad_affine)``

both with fake (meta) kernels and FLOP formulas; ``aspp_project`` has an autograd formula that
calls ``aspp_project_backward`` (no double backward). Each op runs the Triton kernels
(:func:`aspp_project_forward_triton`, :func:`aspp_project_backward_triton`) when
:func:`fastmtl.kernels.dispatch.use_triton` says so and the plain-PyTorch references
(:func:`aspp_project_reference`, :func:`aspp_project_backward_reference`) otherwise.

Kernels (all accumulate in fp32, fp64 for fp64 inputs; int64 addressing):

* ``_project_kernel``: the forward GEMM over up to 4 branch pointers per launch (more branches
  chain launches through an accumulator buffer) with the bias / scale-shift / ReLU epilogue.
* Backward, three launches for up to 4 branches (one launch per kernel per 4 branches):
  ``_branch_grad_kernel`` (``grad_b_k = weight_k^T @ gy`` for all branches, plus per-tile pixel
  sums of ``gz``), ``_weight_grad_kernel`` (``grad_weight = sum_{n,p} gy @ b^T`` for all branches,
  partial sums over pixel splits, about one program per SM) and ``_finish_kernel`` (the fixed-order
  sums of both partials: weight, bias, shift and scale gradients; deterministic, no atomics).
  ``gy = grad * (out > 0) * scale`` is made while loading in both GEMM kernels and never stored,
  so the backward reads ``grad`` and ``out`` twice and everything else once.

Layouts: any strides; NCHW and channels_last are read in place (``H*W`` flattens to one pixel
axis), other layouts are copied first. Outputs are channels_last when ``branches[0]`` is
channels_last (and not also NCHW-contiguous), NCHW otherwise. fp16 / bf16 / fp32 use ``tl.dot``
(fp32 in TF32 when ``torch.backends.cudnn.allow_tf32``, like the cuDNN conv it replaces); fp64,
and bf16 under the Triton interpreter (whose bf16 ``tl.dot`` is wrong), use broadcast
multiply + ``tl.sum`` products through the same kernels.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ._utils import (
    FLOAT_DTYPES, compute_dtype, device_capability, on_input_device, pow2_block, split_reduction, tl_dtype,
)
from .dispatch import HAS_TRITON, interpreter_enabled, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._utils import program_tile

MAX_BRANCHES_PER_LAUNCH = 4


# ----------------------------------------------------------------------------- kernels
if HAS_TRITON:
    @triton.jit
    def _mac(acc, a, b, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
        """``acc + a @ b`` for ``a (M, K)``, ``b (K, N)``: tensor cores, or exact products in acc's dtype."""
        if USE_DOT:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        else:
            acc += tl.sum(a.to(acc.dtype)[:, :, None] * b.to(acc.dtype)[None, :, :], axis=1)
        return acc


    @triton.jit
    def _branch_pointer(k, p0, p1, p2, p3):
        """Pointer ``p_k`` of the (up to) four branch tensors of one launch (``k`` constexpr or runtime)."""
        if k == 0:
            p = p0
        elif k == 1:
            p = p1
        elif k == 2:
            p = p2
        else:
            p = p3
        return p


    @triton.jit
    def _project_kernel(
        b0_ptr, b1_ptr, b2_ptr, b3_ptr, w_ptr, bias_ptr, scale_ptr, shift_ptr, acc_ptr, out_ptr,
        R, C, P,
        s_bn, s_bc, s_bp,
        s_wr, s_wc,
        s_biasn, s_biasr,
        s_on, s_or, s_op,
        NB: tl.constexpr, HAS_ACC: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_AFFINE: tl.constexpr,
        RELU: tl.constexpr, ACC: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """``out[n, r, p] = epilogue(acc[n, r, p] + sum_{k<NB, c<C} w[r, k*C + c] * b_k[n, c, p])``.

        Branches ``b_k`` are ``(N, C, P)`` with shared strides ``s_b*``; ``w`` is ``(R, NB*C)``;
        ``acc`` (read when HAS_ACC) and ``out`` are ``(N, R, P)`` with strides ``s_o*``.
        Grid: ``(cdiv(P, BLOCK_P), cdiv(R, BLOCK_R), N)``.
        """
        n, offs_r, offs_p = program_tile(BLOCK_R, BLOCK_P)
        mask_r = offs_r < R
        mask_p = offs_p < P
        mask_out = mask_r[:, None] & mask_p[None, :]
        out_offs = n * s_on + offs_r[:, None] * s_or + offs_p[None, :] * s_op
        if HAS_ACC:
            acc = tl.load(acc_ptr + out_offs, mask=mask_out, other=0.0).to(ACC)
        else:
            acc = tl.zeros((BLOCK_R, BLOCK_P), dtype=ACC)
        for k in tl.static_range(NB):
            b_base = _branch_pointer(k, b0_ptr, b1_ptr, b2_ptr, b3_ptr) + n * s_bn
            for c0 in range(0, C, BLOCK_C):
                offs_c = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
                mask_c = offs_c < C
                a = tl.load(w_ptr + offs_r[:, None] * s_wr + (k * C + offs_c)[None, :] * s_wc,
                            mask=mask_r[:, None] & mask_c[None, :], other=0.0)
                b = tl.load(b_base + offs_c[:, None] * s_bc + offs_p[None, :] * s_bp,
                            mask=mask_c[:, None] & mask_p[None, :], other=0.0)
                acc = _mac(acc, a, b, USE_DOT, PRECISION)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + n * s_biasn + offs_r * s_biasr, mask=mask_r, other=0.0).to(ACC)
            acc += bias[:, None]
        if HAS_AFFINE:
            scale = tl.load(scale_ptr + offs_r, mask=mask_r, other=0.0).to(ACC)
            shift = tl.load(shift_ptr + offs_r, mask=mask_r, other=0.0).to(ACC)
            acc = acc * scale[:, None] + shift[:, None]
        if RELU:
            acc = tl.where(acc > 0, acc, 0.0)
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


    @triton.jit
    def _grad_tile(g_ptr, out_ptr, scale_ptr, n, offs_r, offs_p, mask_r, mask_p,
                   s_gn, s_gr, s_gp, s_on, s_or, s_op,
                   RELU: tl.constexpr, HAS_SCALE: tl.constexpr, ACC: tl.constexpr):
        """``(gz, gy)`` for rows ``offs_r`` and pixels ``offs_p`` of sample ``n`` (broadcastable
        index vectors: ``offs_r`` ``(R, 1)`` and ``offs_p`` ``(1, P)``, or ``(1, R)`` / ``(P, 1)``):
        the output gradient through the ReLU, ``gz = grad * (out > 0)`` (``grad`` without RELU),
        and through the scale, ``gy = gz * scale[r]`` (``gz`` without HAS_SCALE); both in ACC,
        zero outside the masks."""
        mask = mask_r & mask_p
        gz = tl.load(g_ptr + n * s_gn + offs_r * s_gr + offs_p * s_gp, mask=mask, other=0.0).to(ACC)
        if RELU:
            o = tl.load(out_ptr + n * s_on + offs_r * s_or + offs_p * s_op, mask=mask, other=0.0)
            gz = tl.where(o > 0, gz, 0.0)
        gy = gz
        if HAS_SCALE:
            gy = gz * tl.load(scale_ptr + offs_r, mask=mask_r, other=0.0).to(ACC)
        return gz, gy


    @triton.jit
    def _branch_grad_kernel(
        g_ptr, out_ptr, scale_ptr, pre_ptr, w_ptr, d0_ptr, d1_ptr, d2_ptr, d3_ptr, sums_ptr,
        R, C, P, M_BLOCKS,
        s_gn, s_gr, s_gp,
        s_on, s_or, s_op,
        s_pn, s_pr, s_pp,
        s_wr, s_wc,
        s_dn, s_dc, s_dp,
        s_sb, s_ss, s_sn,
        RELU: tl.constexpr, HAS_SCALE: tl.constexpr, SUMS: tl.constexpr, HAS_PRE: tl.constexpr,
        ACC: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """Branch gradients ``d_k[n, c, p] = sum_r w[r, k*C + c] * gy[n, r, p]`` for up to 4
        branches in one launch, ``gy`` made on the fly from grad / out / scale (:func:`_grad_tile`).

        ``grad``, ``out``, ``pre`` ``(N, R, P)``; ``w`` ``(R, NB*C)``; ``d_k`` ``(N, C, P)`` with
        shared strides ``s_d*``. With SUMS, the programs of the first row block also store the
        per-tile pixel sums ``sums[pid_p, 0, n, r] = sum_p gz`` and, with HAS_PRE,
        ``sums[pid_p, 1, n, r] = sum_p gz * pre`` (``sums`` ``(n_pblocks, S, N, R)``, contiguous in ``r``).
        Grid ``(NB * M_BLOCKS, cdiv(P, BLOCK_P), N)`` with ``M_BLOCKS = cdiv(C, BLOCK_M)``: the
        row blocks of one pixel tile run next to each other and share its gradient tile in L2.
        """
        pid_m = tl.program_id(0)
        k = pid_m // M_BLOCKS
        n = tl.program_id(2).to(tl.int64)
        offs_m = ((pid_m % M_BLOCKS) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_p = tl.program_id(1).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_m = offs_m < C
        mask_p = offs_p < P
        first = pid_m == 0
        acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=ACC)
        for r0 in range(0, R, BLOCK_R):
            offs_r = (r0 + tl.arange(0, BLOCK_R)).to(tl.int64)
            mask_r = offs_r < R
            gz, gy = _grad_tile(g_ptr, out_ptr, scale_ptr, n, offs_r[:, None], offs_p[None, :],
                                mask_r[:, None], mask_p[None, :], s_gn, s_gr, s_gp, s_on, s_or, s_op,
                                RELU, HAS_SCALE, ACC)
            if SUMS:
                if first:
                    sums_base = sums_ptr + tl.program_id(1).to(tl.int64) * s_sb + n * s_sn + offs_r
                    tl.store(sums_base, tl.sum(gz, axis=1), mask=mask_r)
                    if HAS_PRE:
                        pre = tl.load(pre_ptr + n * s_pn + offs_r[:, None] * s_pr + offs_p[None, :] * s_pp,
                                      mask=mask_r[:, None] & mask_p[None, :], other=0.0)
                        tl.store(sums_base + s_ss, tl.sum(gz * pre.to(ACC), axis=1), mask=mask_r)
            a = tl.load(w_ptr + offs_r[None, :] * s_wr + (k * C + offs_m)[:, None] * s_wc,
                        mask=mask_m[:, None] & mask_r[None, :], other=0.0)
            acc = _mac(acc, a, gy.to(a.dtype), USE_DOT, PRECISION)
        d_ptr = _branch_pointer(k, d0_ptr, d1_ptr, d2_ptr, d3_ptr)
        tl.store(d_ptr + n * s_dn + offs_m[:, None] * s_dc + offs_p[None, :] * s_dp,
                 acc.to(d_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_p[None, :])


    @triton.jit
    def _weight_grad_kernel(
        g_ptr, out_ptr, scale_ptr, b0_ptr, b1_ptr, b2_ptr, b3_ptr, part_ptr,
        R, C, P, NP, Q_PER_SPLIT, C_BLOCKS,
        s_gn, s_gr, s_gp,
        s_on, s_or, s_op,
        s_bn, s_bc, s_bp,
        s_ts, s_tr, s_tc,
        RELU: tl.constexpr, HAS_SCALE: tl.constexpr,
        ACC: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr,
    ):
        """``part[split, r, k*C + c] = sum_{q in split} gy[n, r, p] * b_k[n, c, p]`` over flat
        ``q = n*P + p``, for up to 4 branches in one launch, ``gy`` made on the fly (:func:`_grad_tile`).

        ``grad``, ``out`` ``(N, R, P)``; ``b_k`` ``(N, C, P)`` with shared strides ``s_b*``; each
        split covers ``Q_PER_SPLIT`` (a multiple of BLOCK_Q) consecutive ``q``.
        Grid ``(cdiv(R, BLOCK_R), NB * C_BLOCKS, n_splits)`` with ``C_BLOCKS = cdiv(C, BLOCK_C)``.
        """
        pid_c = tl.program_id(1)
        k = pid_c // C_BLOCKS
        split = tl.program_id(2).to(tl.int64)
        offs_r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        offs_c = ((pid_c % C_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask_r = offs_r < R
        mask_c = offs_c < C
        b_ptr = _branch_pointer(k, b0_ptr, b1_ptr, b2_ptr, b3_ptr)
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=ACC)
        q_start = split * Q_PER_SPLIT
        q_end = tl.minimum(q_start + Q_PER_SPLIT, NP)
        for q0 in range(q_start, q_end, BLOCK_Q):
            offs_q = q0 + tl.arange(0, BLOCK_Q).to(tl.int64)
            mask_q = offs_q < q_end
            n = offs_q // P
            p = offs_q % P
            _, gy = _grad_tile(g_ptr, out_ptr, scale_ptr, n[None, :], offs_r[:, None], p[None, :],
                               mask_r[:, None], mask_q[None, :], s_gn, s_gr, s_gp, s_on, s_or, s_op,
                               RELU, HAS_SCALE, ACC)
            b = tl.load(b_ptr + n[:, None] * s_bn + offs_c[None, :] * s_bc + p[:, None] * s_bp,
                        mask=mask_q[:, None] & mask_c[None, :], other=0.0)
            acc = _mac(acc, gy.to(b.dtype), b, USE_DOT, PRECISION)
        tl.store(part_ptr + split * s_ts + offs_r[:, None] * s_tr + (k * C + offs_c)[None, :] * s_tc, acc,
                 mask=mask_r[:, None] & mask_c[None, :])


    @triton.jit
    def _finish_kernel(
        pw_ptr, gw_ptr, N_SPLIT, NW, W_PROGRAMS,
        sums_ptr, scale_ptr, gbias_ptr, gaff_ptr, N_PB, N, R,
        s_sb, s_ss, s_sn, s_gbn, s_gbr,
        HAS_SCALE: tl.constexpr, HAS_PRE: tl.constexpr, ACC: tl.constexpr,
        BLOCK: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        """The two small fixed-order reductions that end the backward, in one launch.

        Programs ``< W_PROGRAMS``: ``gw[i] = sum_s pw[s, i]`` over the ``N_SPLIT`` weight-gradient
        partials (``pw`` ``(N_SPLIT, NW)`` contiguous, ``gw`` ``(NW,)`` in the weight's dtype).
        The others, one per ``BLOCK_R`` rows: ``gsum[n, r] = sum_b sums[b, 0, n, r]`` over the
        ``N_PB`` pixel tiles, ``gbias[n, r] = gsum * scale[r]`` (``gsum`` without HAS_SCALE),
        ``gaff[0, r] = sum_n gsum`` (the shift gradient) and, with HAS_PRE,
        ``gaff[1, r] = sum_{b, n} sums[b, 1, n, r]`` (the scale gradient).
        Grid ``(W_PROGRAMS + cdiv(R, BLOCK_R),)``.
        """
        pid = tl.program_id(0)
        if pid < W_PROGRAMS:
            offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < NW
            acc = tl.zeros((BLOCK,), dtype=ACC)
            for s in range(N_SPLIT):
                acc += tl.load(pw_ptr + s * NW + offs, mask=mask, other=0.0)
            tl.store(gw_ptr + offs, acc.to(gw_ptr.dtype.element_ty), mask=mask)
        else:
            offs_r = ((pid - W_PROGRAMS) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
            mask_r = offs_r < R
            if HAS_SCALE:
                scale = tl.load(scale_ptr + offs_r, mask=mask_r, other=0.0).to(ACC)
            shift_acc = tl.zeros((BLOCK_R,), dtype=ACC)
            scale_acc = tl.zeros((BLOCK_R,), dtype=ACC)
            for n in range(N):
                gsum = tl.zeros((BLOCK_R,), dtype=ACC)
                for b in range(N_PB):
                    base = sums_ptr + b * s_sb + n * s_sn + offs_r
                    gsum += tl.load(base, mask=mask_r, other=0.0)
                    if HAS_PRE:
                        scale_acc += tl.load(base + s_ss, mask=mask_r, other=0.0)
                shift_acc += gsum
                if HAS_SCALE:
                    gsum = gsum * scale
                tl.store(gbias_ptr + n * s_gbn + offs_r * s_gbr, gsum.to(gbias_ptr.dtype.element_ty), mask=mask_r)
            tl.store(gaff_ptr + offs_r, shift_acc, mask=mask_r)
            if HAS_PRE:
                tl.store(gaff_ptr + R + offs_r, scale_acc, mask=mask_r)


# ----------------------------------------------------------------------------- helpers
def _is_channels_last(t: Tensor) -> bool:
    """The output layout rule: channels_last iff ``t`` is channels_last and not NCHW-contiguous
    (stricter than :func:`._utils.out_memory_format` of the other ops: e.g. a channel slice of a
    channels_last tensor gives NCHW outputs here)."""
    return (not t.is_contiguous()) and t.is_contiguous(memory_format=torch.channels_last)


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


def _empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device, channels_last: bool = False) -> Tensor:
    """Every buffer the ops return or the kernels write (tests replace it to poison them)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(tuple(shape), dtype=dtype, device=device, memory_format=fmt)


def _new_like(like: Tensor, channels: int, dtype: torch.dtype) -> Tensor:
    """``(N, channels, H, W)`` in ``like``'s layout (see :func:`_is_channels_last`)."""
    n, _, h, w = like.shape
    return _empty((n, channels, h, w), dtype, like.device, _is_channels_last(like))


def _check_forward(branches: Sequence[Tensor], weight: Tensor, bias: Tensor,
                   scale: Optional[Tensor], shift: Optional[Tensor]) -> None:
    if len(branches) == 0:
        raise ValueError("aspp_project needs at least one branch")
    b0 = branches[0]
    if b0.dim() != 4 or b0.dtype not in FLOAT_DTYPES:
        raise ValueError(f"branches must be 4-D (N, C, H, W) float tensors, got {tuple(b0.shape)} {b0.dtype}")
    for b in branches[1:]:
        if b.shape != b0.shape or b.dtype != b0.dtype or b.device != b0.device:
            raise ValueError("all branches must have the same shape, dtype and device")
    n, cb = b0.shape[0], b0.shape[1]
    if weight.dim() != 2 or weight.shape[1] != len(branches) * cb or weight.dtype != b0.dtype:
        raise ValueError(f"weight must be (Cout, {len(branches)}*{cb}) of dtype {b0.dtype}, "
                         f"got {tuple(weight.shape)} {weight.dtype}")
    cout = weight.shape[0]
    if any(t is not None and t.device != b0.device for t in (weight, bias, scale, shift)):
        raise ValueError("weight, bias, scale and shift must be on the branches' device")
    if tuple(bias.shape) != (n, cout):
        raise ValueError(f"bias must be (N, Cout) = ({n}, {cout}), got {tuple(bias.shape)}")
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift go together")
    if scale is not None and (tuple(scale.shape) != (cout,) or tuple(shift.shape) != (cout,)):
        raise ValueError(f"scale and shift must be ({cout},)")


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


# ----------------------------------------------------------------------------- launchers
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
    """Triton ``aspp_project`` (arguments and result as :func:`aspp_project`)."""
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
    """Triton ``aspp_project_backward`` (arguments and results as :func:`aspp_project_backward`).

    Three launches for up to 4 branches (two more per further 4): the branch gradients
    (:func:`_branch_grad_kernel`, which also leaves the per-tile pixel sums), the weight-gradient
    partials over pixel splits (:func:`_weight_grad_kernel`), and :func:`_finish_kernel`.
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


# ----------------------------------------------------------------------------- references
def aspp_project_reference(branches: Sequence[Tensor], weight: Tensor, bias: Tensor,
                           scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
                           relu: bool = False) -> Tensor:
    """Plain PyTorch ``aspp_project``: 1x1 conv of the channel concat + bias (+ scale/shift) (+ ReLU).

    Shapes as in :func:`aspp_project`; computed in the branches' dtype, output in the op's layout.
    """
    x = torch.cat(list(branches), dim=1)
    y = F.conv2d(x, weight[:, :, None, None]) + bias.to(x.dtype)[:, :, None, None]
    if scale is not None:
        y = y * scale.to(y.dtype)[:, None, None] + shift.to(y.dtype)[:, None, None]
    if relu:
        y = torch.relu(y)
    return y.contiguous(memory_format=_memory_format(branches[0]))


def aspp_project_backward_reference(grad: Tensor, out: Tensor, branches: Sequence[Tensor], weight: Tensor,
                                    bias: Tensor, scale: Optional[Tensor] = None, preact: Optional[Tensor] = None,
                                    relu: bool = False) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
    """Plain PyTorch ``aspp_project_backward`` (same arguments and results)."""
    dtype = branches[0].dtype
    acc = compute_dtype(branches[0])
    gz = grad.to(acc)
    if relu:
        gz = gz * (out > 0)
    gz_sum = gz.sum((2, 3))  # (N, Cout)
    affine = [gz_sum.sum(0)] + ([(gz * preact.to(acc)).sum((0, 2, 3))] if preact is not None else [])
    grad_bias = (gz_sum * scale.to(acc) if scale is not None else gz_sum).to(bias.dtype)
    gy = (gz * scale.to(acc)[:, None, None] if scale is not None else gz).to(dtype)
    cb = branches[0].shape[1]
    grad_branches = [
        F.conv2d(gy, weight[:, k * cb:(k + 1) * cb].t()[:, :, None, None]).contiguous(
            memory_format=_memory_format(branches[0]))
        for k in range(len(branches))
    ]
    grad_weight = torch.einsum("nohw,njhw->oj", gy, torch.cat(list(branches), dim=1)).to(weight.dtype)
    return grad_branches, grad_weight, grad_bias, torch.stack(affine)



def aspp_project_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): four branches at odd sizes with the folded
    BatchNorm + ReLU epilogue and the scale gradient's ``preact``; the output then the branch
    weight, bias, shift and scale gradients."""
    k, cb, cout, shape = 4, 19, 21, (2, 19, 5, 7)
    branches = [randn(shape, gen, device, dtype, channels_last) for _ in range(k)]
    weight = randn((cout, k * cb), gen, device, dtype, scale=(k * cb) ** -0.5)
    bias = randn((2, cout), gen, device, dtype, scale=0.1)
    scale = torch.rand((cout,), generator=gen, device=device) + 0.5
    shift = randn((cout,), gen, device, torch.float32, scale=0.1)
    grad = randn((2, cout, 5, 7), gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(branches, weight, bias, scale, shift, grad):
            out = forward(branches, weight, bias, scale, shift, True)
            preact = forward(branches, weight, bias)
            grad_branches, grad_weight, grad_bias, grad_affine = backward(
                grad, out, branches, weight, bias, scale, preact, True)
            return [out, *grad_branches, grad_weight, grad_bias, grad_affine]
        return both

    # fp32 GEMMs run in TF32 here, and cuDNN may pick an exact fp32 algorithm for the reference
    tf32 = {torch.float32: 8 * 2.0 ** -10} if _precision(torch.float32) == "tf32" else {}
    return Probe((branches, weight, bias, scale, shift, grad),
                 run(aspp_project_forward_triton, aspp_project_backward_triton),
                 run(aspp_project_reference, aspp_project_backward_reference), tf32)


# ----------------------------------------------------------------------------- ops
@torch.library.custom_op("fastmtl::aspp_project", mutates_args=())
def aspp_project(branches: List[Tensor], weight: Tensor, bias: Tensor, scale: Optional[Tensor] = None,
                 shift: Optional[Tensor] = None, relu: bool = False) -> Tensor:
    """ASPP projection GEMM with a per-sample bias and an optional BatchNorm(eval)+ReLU epilogue.

    Args:
        branches: ``K`` tensors ``(N, Cb, H, W)`` of one dtype (fp16/bf16/fp32/fp64), any strides.
        weight: ``(Cout, K*Cb)``, the branches' dtype, any strides (e.g. a column slice of the
            projection conv's weight).
        bias: ``(N, Cout)``, any float dtype: the pooled branch's contribution.
        scale, shift: ``(Cout,)`` or both None: ``y * scale + shift`` (folded eval BatchNorm).
        relu: apply ReLU last.

    Returns ``(N, Cout, H, W)`` in the branches' dtype; channels_last if ``branches[0]`` is.
    """
    _check_forward(branches, weight, bias, scale, shift)
    if not (use_triton(branches[0]) and passes("aspp_project", branches[0])):
        return aspp_project_reference(branches, weight, bias, scale, shift, relu)
    return aspp_project_forward_triton(branches, weight, bias, scale, shift, relu)


@aspp_project.register_fake
def _aspp_project_fake(branches, weight, bias, scale=None, shift=None, relu=False):
    _check_forward(branches, weight, bias, scale, shift)
    return _new_like(branches[0], weight.shape[0], branches[0].dtype)


@torch.library.custom_op("fastmtl::aspp_project_backward", mutates_args=())
def aspp_project_backward(grad: Tensor, out: Tensor, branches: List[Tensor], weight: Tensor, bias: Tensor,
                          scale: Optional[Tensor], preact: Optional[Tensor],
                          relu: bool) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
    """Backward of :func:`aspp_project`.

    Args:
        grad, out: ``(N, Cout, H, W)``: the output gradient and the forward output (its sign
            is the ReLU mask), any strides.
        branches, weight, bias, scale, relu: as given to the forward (``bias`` gives the dtype
            of its gradient; its values are not read).
        preact: ``(N, Cout, H, W)`` pre-epilogue ``y`` (the forward recomputed without
            scale/shift/relu) when the scale gradient is wanted, else None.

    With ``gz = grad * (out > 0 if relu else 1)``, returns ``(grad_branches, grad_weight,
    grad_bias, grad_affine)``: ``K`` tensors ``(N, Cb, H, W)`` (layout as the forward output),
    ``(Cout, K*Cb)`` contiguous in weight's dtype, ``grad_bias = sum_hw gz * scale`` ``(N, Cout)``
    in bias's dtype, and ``grad_affine`` ``(S, Cout)`` in fp32 (fp64 for fp64):
    ``grad_affine[0] = sum_{n,hw} gz`` (the shift gradient) and, when ``preact`` is given,
    ``grad_affine[1] = sum_{n,hw} gz * preact`` (the scale gradient).
    """
    if not (use_triton(branches[0]) and passes("aspp_project", branches[0])):
        return aspp_project_backward_reference(grad, out, branches, weight, bias, scale, preact, relu)
    return aspp_project_backward_triton(grad, out, branches, weight, bias, scale, preact, relu)


@aspp_project_backward.register_fake
def _aspp_project_backward_fake(grad, out, branches, weight, bias, scale, preact, relu):
    b0 = branches[0]
    n, cb = b0.shape[0], b0.shape[1]
    cout = weight.shape[0]
    grad_branches = [_new_like(b0, cb, b0.dtype) for _ in branches]
    grad_weight = torch.empty((cout, weight.shape[1]), dtype=weight.dtype, device=weight.device)
    grad_bias = torch.empty((n, cout), dtype=bias.dtype, device=bias.device)
    grad_affine = torch.empty((2 if preact is not None else 1, cout), dtype=compute_dtype(b0), device=b0.device)
    return grad_branches, grad_weight, grad_bias, grad_affine


def _setup_context(ctx, inputs, output):
    branches, weight, bias, scale, shift, relu = inputs
    ctx.relu = relu
    ctx.save_for_backward(*branches, weight, bias, scale, shift, output)


def _backward(ctx, grad):
    *branches, weight, bias, scale, shift, out = ctx.saved_tensors
    passed = len(ctx.needs_input_grad)  # the dispatcher drops trailing defaulted arguments
    _, _, need_bias, need_scale, need_shift, _ = (*ctx.needs_input_grad, *([False] * (6 - passed)))
    preact = None
    if scale is not None and need_scale:
        preact = aspp_project(branches, weight, bias)
    grad_branches, grad_weight, grad_bias, grad_affine = aspp_project_backward(
        grad, out, branches, weight, bias, scale, preact, ctx.relu)
    grad_scale = grad_affine[1].to(scale.dtype) if preact is not None else None
    grad_shift = grad_affine[0].to(shift.dtype) if shift is not None and need_shift else None
    return (grad_branches, grad_weight, grad_bias if need_bias else None, grad_scale, grad_shift, None)[:passed]


aspp_project.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.fastmtl.aspp_project)
def _aspp_project_flops(branches_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """One GEMM: ``2 * N*H*W * (K*Cb) * Cout``."""
    n, cout, h, w = out_shape
    return 2 * n * h * w * weight_shape[1] * cout


@register_flop_formula(torch.ops.fastmtl.aspp_project_backward)
def _aspp_project_backward_flops(grad_shape, out_arg_shape, branches_shape, weight_shape, *args,
                                 out_shape=None, **kwargs) -> int:
    """Two GEMMs (branch and weight gradients): ``4 * N*H*W * (K*Cb) * Cout``."""
    n, cout, h, w = grad_shape
    return 4 * n * h * w * weight_shape[1] * cout
