"""Squeeze-and-excitation scale, optionally fused with the ResNet BasicBlock tail.

Math (per image ``n`` and channel ``c``)::

    s   = mean_hw(x)                          (N, C)
    u   = s @ W1.T + b1,  h = act(u)          (N, Cr)    act: relu | silu | gelu | hardswish
    g   = gate(h @ W2.T + b2)                 (N, C)     gate: sigmoid | hardsigmoid
    y   = x * g[:, :, None, None]             (N, C, H, W)
    out = y            or   relu(y + identity)

Shapes and layouts: ``x`` and ``identity`` are ``(N, C, H, W)`` in any layout whose H and W
dims merge into one strided dim (NCHW-contiguous, channels_last, and channel slices of
either); other layouts are copied to NCHW first. ``w1`` is ``(Cr, C)`` or the 1x1 conv weight
``(Cr, C, 1, 1)``, ``b1`` ``(Cr,)`` or None, ``w2`` ``(C, Cr)`` or ``(C, Cr, 1, 1)``, ``b2``
``(C,)`` or None. The output is channels_last when ``x``'s channels are its innermost dim,
else NCHW-contiguous.

Dtypes: ``x`` and ``identity`` share one dtype (fp16/bf16/fp32/fp64); the weights share
one dtype that may differ from ``x``'s (autocast keeps fp32 weights with fp16 activations).
Everything is computed in fp32 (fp64 if any input is fp64) right after loading.

Triton path, forward in three launches: ``_se_reduce_kernel`` leaves partial sums of ``x``
over fixed-order chunks of H*W; ``_se_excite_kernel`` (one program per image) adds them, runs
the excitation MLP and writes the gate ``g``; ``_se_apply_kernel`` writes ``x * g`` (+ residual
+ ReLU). Backward in four: the reduction kernel leaves partial sums of ``x`` and ``dy * x``
(``dy`` masked by the ReLU of the residual tail); ``_se_excite_backward_kernel`` (per image)
recomputes the MLP and writes ``g``, ``ds`` and what the weight gradients need;
``_se_weight_grad_kernel`` sums those over the batch in a fixed order; ``_se_dx_kernel`` writes
``dx`` (and ``d_identity``). Deterministic, no atomics.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ._utils import (
    channels_inner, check_floating, check_same_device, compute_dtype, empty_out, merge_hw, next_pow2, on_input_device,
    out_memory_format, split_reduction, tile_grid, tile_shape, tl_dtype,
)
from .dispatch import HAS_TRITON, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._utils import program_tile


# --------------------------------------------------------------------------- Triton kernels
if HAS_TRITON:

    @triton.jit
    def _se_reduce_kernel(
        X, DY, OUT, PSUM_X, PSUM_DYX,
        C, HW, CHUNK,
        sxn, sxc, sxhw, sdn, sdc, sdhw, son, soc, sohw,
        WITH_DY: tl.constexpr, HAS_RES: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """Partial sums over one chunk of H*W: ``PSUM_X[n, chunk, c] = sum x`` and, WITH_DY,
        ``PSUM_DYX[n, chunk, c] = sum dy * x`` (``dy`` zeroed where ``OUT <= 0`` if HAS_RES).
        Grid ``(chunks, cdiv(C, BLOCK_C), N)``; partial buffers ``(N, chunks, C)`` contiguous."""
        pid_s = tl.program_id(0)
        n = tl.program_id(2).to(tl.int64)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        acc_x = tl.zeros([BLOCK_C, BLOCK_HW], ACC)
        acc_dyx = tl.zeros([BLOCK_C, BLOCK_HW], ACC)
        hw0 = pid_s.to(tl.int64) * CHUNK
        for off in range(0, CHUNK, BLOCK_HW):
            hw = hw0 + off + tl.arange(0, BLOCK_HW)
            mask = c_mask[:, None] & (hw < HW)[None, :]
            x = tl.load(X + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0).to(ACC)
            acc_x += x
            if WITH_DY:
                dy = tl.load(DY + n * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0).to(ACC)
                if HAS_RES:
                    o = tl.load(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, mask=mask, other=0).to(ACC)
                    dy = tl.where(o > 0, dy, 0.0)
                acc_dyx += dy * x
        dst = (n * tl.num_programs(0) + pid_s) * C + c
        tl.store(PSUM_X + dst, tl.sum(acc_x, axis=1), mask=c_mask)
        if WITH_DY:
            tl.store(PSUM_DYX + dst, tl.sum(acc_dyx, axis=1), mask=c_mask)

    @triton.jit
    def _se_apply_kernel(
        X, G, RES, OUT,
        C, HW,
        sxn, sxc, sxhw, srn, src, srhw, son, soc, sohw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``OUT = X * G[n, c]`` or ``relu(X * G[n, c] + RES)``; ``G`` ``(N, C)`` contiguous.
        Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        c_mask = c < C
        mask = c_mask[:, None] & (hw < HW)[None, :]
        x = tl.load(X + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0).to(ACC)
        g = tl.load(G + n * C + c, mask=c_mask, other=0).to(ACC)
        y = x * g[:, None]
        if HAS_RES:
            r = tl.load(RES + n * srn + c[:, None] * src + hw[None, :] * srhw, mask=mask, other=0).to(ACC)
            y = y + r
            y = tl.where(y < 0, 0.0, y)  # ReLU that keeps NaN, like torch.relu
        tl.store(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _se_dx_kernel(
        DY, OUT, G, DS, DX, DRES,
        C, HW,
        sdn, sdc, sdhw, son, soc, sohw, sxn, sxc, sxhw, srn, src, srhw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``dy = DY`` (zeroed where ``OUT <= 0`` if HAS_RES, then also written to ``DRES``);
        ``DX = dy * G[n, c] + DS[n, c]``. ``G``, ``DS`` ``(N, C)`` contiguous.
        Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        c_mask = c < C
        mask = c_mask[:, None] & (hw < HW)[None, :]
        dy = tl.load(DY + n * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0).to(ACC)
        if HAS_RES:
            o = tl.load(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, mask=mask, other=0).to(ACC)
            dy = tl.where(o > 0, dy, 0.0)
            tl.store(DRES + n * srn + c[:, None] * src + hw[None, :] * srhw, dy.to(DRES.dtype.element_ty), mask=mask)
        g = tl.load(G + n * C + c, mask=c_mask, other=0).to(ACC)
        ds = tl.load(DS + n * C + c, mask=c_mask, other=0).to(ACC)
        dx = dy * g[:, None] + ds[:, None]
        tl.store(DX + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, dx.to(DX.dtype.element_ty), mask=mask)

    @triton.jit
    def _act(u, ACT: tl.constexpr):
        """The excitation's hidden activation (see :data:`ACTIVATIONS`), elementwise in u's dtype."""
        if ACT == "relu":
            return tl.where(u > 0, u, 0.0)
        elif ACT == "silu":
            return u * tl.sigmoid(u)
        elif ACT == "gelu":
            return 0.5 * u * (1 + tl.erf(u * 0.7071067811865476))
        else:  # hardswish
            return u * tl.minimum(tl.maximum(u + 3, 0.0), 6.0) / 6

    @triton.jit
    def _act_grad(u, ACT: tl.constexpr):
        """``d act(u) / du`` with torch's conventions at the kinks (relu: 0 at 0)."""
        if ACT == "relu":
            return (u > 0).to(u.dtype)
        elif ACT == "silu":
            sig = tl.sigmoid(u)
            return sig * (1 + u * (1 - sig))
        elif ACT == "gelu":
            return 0.5 * (1 + tl.erf(u * 0.7071067811865476)) + u * 0.3989422804014327 * tl.exp(-0.5 * u * u)
        else:  # hardswish
            return tl.where(u < -3, 0.0, tl.where(u <= 3, u / 3 + 0.5, 1.0))

    @triton.jit
    def _gate(z, GATE: tl.constexpr):
        """The channel gate (see :data:`GATES`) of the excitation's output ``z``."""
        if GATE == "sigmoid":
            return tl.sigmoid(z)
        else:  # hardsigmoid
            return tl.minimum(tl.maximum(z + 3, 0.0), 6.0) / 6

    @triton.jit
    def _gate_grad(z, g, GATE: tl.constexpr):
        """``d gate(z) / dz`` given ``g = gate(z)``."""
        if GATE == "sigmoid":
            return g * (1 - g)
        else:  # hardsigmoid
            return ((z > -3) & (z < 3)).to(z.dtype) / 6

    @triton.jit
    def _se_hidden(PSUM, W1, B1, n, C, CR, CHUNKS, inv_hw, sw1r, sw1c,
                   HAS_B1: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CR: tl.constexpr):
        """``u = W1 @ s + b1`` ``(BLOCK_CR,)`` of sample ``n``, ``s = sum_chunks PSUM[n, :, c] * inv_hw``."""
        r = tl.arange(0, BLOCK_CR)
        r_mask = r < CR
        u = tl.zeros([BLOCK_CR], ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            s = tl.zeros([BLOCK_C], ACC)
            for k in range(CHUNKS):
                s += tl.load(PSUM + (n * CHUNKS + k) * C + c, mask=c_mask, other=0)
            w1 = tl.load(W1 + r[:, None] * sw1r + c[None, :] * sw1c, mask=r_mask[:, None] & c_mask[None, :], other=0).to(ACC)
            u += tl.sum(w1 * (s * inv_hw)[None, :], axis=1)
        if HAS_B1:
            u += tl.load(B1 + r, mask=r_mask, other=0).to(ACC)
        return u

    @triton.jit
    def _se_excite_kernel(
        PSUM, W1, B1, W2, B2, G,
        C, CR, CHUNKS, inv_hw,
        sw1r, sw1c, sw2c, sw2r,
        HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CR: tl.constexpr,
    ):
        """``G[n] = gate(W2 @ act(W1 @ s + b1) + b2)`` ``(N, C)`` contiguous, ``s`` the mean of
        sample ``n`` from the partial sums ``PSUM`` ``(N, CHUNKS, C)``. ``W1`` ``(CR, C)``, ``W2``
        ``(C, CR)`` with the given strides. Grid ``(N,)``."""
        n = tl.program_id(0).to(tl.int64)
        r = tl.arange(0, BLOCK_CR)
        r_mask = r < CR
        h = _act(_se_hidden(PSUM, W1, B1, n, C, CR, CHUNKS, inv_hw, sw1r, sw1c, HAS_B1, ACC, BLOCK_C, BLOCK_CR), ACT)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            w2 = tl.load(W2 + c[:, None] * sw2c + r[None, :] * sw2r, mask=c_mask[:, None] & r_mask[None, :], other=0).to(ACC)
            z = tl.sum(w2 * h[None, :], axis=1)
            if HAS_B2:
                z += tl.load(B2 + c, mask=c_mask, other=0).to(ACC)
            tl.store(G + n * C + c, _gate(z, GATE), mask=c_mask)

    @triton.jit
    def _se_excite_backward_kernel(
        PSUM_X, PSUM_DYX, W1, B1, W2, B2, G, DS, S, DZ, H, DU,
        C, CR, CHUNKS, inv_hw,
        sw1r, sw1c, sw2c, sw2r,
        HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CR: tl.constexpr,
    ):
        """Backward through the excitation of sample ``n`` from ``PSUM_X``, ``PSUM_DYX``
        ``(N, CHUNKS, C)`` (partial sums of ``x`` and ``dy * x``). Writes, all contiguous:
        ``G`` and ``DS = (W1^T du) * inv_hw`` ``(N, C)`` (for the dx kernel), and for the weight
        gradients ``S`` (the means) and ``DZ`` ``(N, C)``, ``H`` and ``DU`` ``(N, CR)``. Grid ``(N,)``."""
        n = tl.program_id(0).to(tl.int64)
        r = tl.arange(0, BLOCK_CR)
        r_mask = r < CR
        u = _se_hidden(PSUM_X, W1, B1, n, C, CR, CHUNKS, inv_hw, sw1r, sw1c, HAS_B1, ACC, BLOCK_C, BLOCK_CR)
        h = _act(u, ACT)
        dh = tl.zeros([BLOCK_CR], ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            s = tl.zeros([BLOCK_C], ACC)
            sdyx = tl.zeros([BLOCK_C], ACC)
            for k in range(CHUNKS):
                s += tl.load(PSUM_X + (n * CHUNKS + k) * C + c, mask=c_mask, other=0)
                sdyx += tl.load(PSUM_DYX + (n * CHUNKS + k) * C + c, mask=c_mask, other=0)
            w2 = tl.load(W2 + c[:, None] * sw2c + r[None, :] * sw2r, mask=c_mask[:, None] & r_mask[None, :], other=0).to(ACC)
            z = tl.sum(w2 * h[None, :], axis=1)
            if HAS_B2:
                z += tl.load(B2 + c, mask=c_mask, other=0).to(ACC)
            g = _gate(z, GATE)
            dz = tl.where(c_mask, sdyx * _gate_grad(z, g, GATE), 0.0)
            dh += tl.sum(w2 * dz[:, None], axis=0)
            tl.store(G + n * C + c, g, mask=c_mask)
            tl.store(DZ + n * C + c, dz, mask=c_mask)
            tl.store(S + n * C + c, s * inv_hw, mask=c_mask)
        du = tl.where(r_mask, dh * _act_grad(u, ACT), 0.0)
        tl.store(H + n * CR + r, h, mask=r_mask)
        tl.store(DU + n * CR + r, du, mask=r_mask)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_mask = c < C
            w1 = tl.load(W1 + r[:, None] * sw1r + c[None, :] * sw1c, mask=r_mask[:, None] & c_mask[None, :], other=0).to(ACC)
            tl.store(DS + n * C + c, tl.sum(w1 * du[:, None], axis=0) * inv_hw, mask=c_mask)

    @triton.jit
    def _se_weight_grad_kernel(
        S, H, DU, DZ, DW1, DB1, DW2, DB2,
        N, C, CR,
        HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_CR: tl.constexpr,
    ):
        """Weight gradients summed over the batch in a fixed order (deterministic):
        ``DW1[r, c] = sum_n DU[n, r] S[n, c]``, ``DW2[c, r] = sum_n DZ[n, c] H[n, r]``,
        ``DB2 = sum_n DZ``, ``DB1 = sum_n DU`` (program 0). ``DW1`` ``(CR, C)``, ``DW2`` ``(C, CR)``
        contiguous in the weights' dtype. Grid ``(cdiv(C, BLOCK_C),)``."""
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        r = tl.arange(0, BLOCK_CR)
        r_mask = r < CR
        dw1 = tl.zeros([BLOCK_CR, BLOCK_C], ACC)
        dw2 = tl.zeros([BLOCK_C, BLOCK_CR], ACC)
        db1 = tl.zeros([BLOCK_CR], ACC)
        db2 = tl.zeros([BLOCK_C], ACC)
        for n in range(N):
            s = tl.load(S + n * C + c, mask=c_mask, other=0)
            dz = tl.load(DZ + n * C + c, mask=c_mask, other=0)
            h = tl.load(H + n * CR + r, mask=r_mask, other=0)
            du = tl.load(DU + n * CR + r, mask=r_mask, other=0)
            dw1 += du[:, None] * s[None, :]
            dw2 += dz[:, None] * h[None, :]
            db1 += du
            db2 += dz
        mask = r_mask[:, None] & c_mask[None, :]
        tl.store(DW1 + r[:, None] * C + c[None, :], dw1.to(DW1.dtype.element_ty), mask=mask)
        tl.store(DW2 + c[:, None] * CR + r[None, :], dw2.to(DW2.dtype.element_ty), mask=c_mask[:, None] & r_mask[None, :])
        if HAS_B2:
            tl.store(DB2 + c, db2.to(DB2.dtype.element_ty), mask=c_mask)
        if HAS_B1:
            if tl.program_id(0) == 0:
                tl.store(DB1 + r, db1.to(DB1.dtype.element_ty), mask=r_mask)


# --------------------------------------------------------------------------- references
ACTIVATIONS = {"relu": torch.relu, "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish}
"""The excitation's hidden activations ``act`` the op supports (GELU: the exact, erf form)."""
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}
"""The channel gates ``gate`` the op supports."""


def _excite_reference(s: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                      act: str, gate: str) -> Tensor:
    """``gate(W2 act(W1 s + b1) + b2)`` on the means ``s`` ``(N, C)`` in s's dtype (plain PyTorch)."""
    dt = s.dtype
    cast = lambda t: None if t is None else t.to(dt)  # noqa: E731
    h = ACTIVATIONS[act](F.linear(s, w1.reshape(w1.shape[0], -1).to(dt), cast(b1)))
    return GATES[gate](F.linear(h, w2.reshape(w2.shape[0], -1).to(dt), cast(b2)))


def se_scale_reference(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                       identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """Plain-PyTorch ``se_scale`` (same math, same compute dtype); output in x's dtype and
    :func:`out_memory_format`."""
    dt = compute_dtype(x, w1)
    xa = x.to(dt)
    y = xa * _excite_reference(xa.mean(dim=(2, 3)), w1, b1, w2, b2, act, gate)[:, :, None, None]
    if identity is not None:
        y = torch.relu(y + identity.to(dt))
    return y.to(x.dtype).contiguous(memory_format=out_memory_format(x))


def _act_grad_reference(u: Tensor, act: str) -> Tensor:
    """``d act(u) / du`` (torch's conventions at the kinks)."""
    if act == "relu":
        return (u > 0).to(u.dtype)
    if act == "silu":
        sig = torch.sigmoid(u)
        return sig * (1 + u * (1 - sig))
    if act == "gelu":
        return 0.5 * (1 + torch.erf(u * 0.5 ** 0.5)) + u * torch.exp(-0.5 * u * u) / (2 * torch.pi) ** 0.5
    return torch.where(u < -3, 0, torch.where(u <= 3, u / 3 + 0.5, 1)).to(u.dtype)  # hardswish


def _gate_grad_reference(z: Tensor, g: Tensor, gate: str) -> Tensor:
    """``d gate(z) / dz`` given ``g = gate(z)``."""
    if gate == "sigmoid":
        return g * (1 - g)
    return ((z > -3) & (z < 3)).to(z.dtype) / 6  # hardsigmoid


def se_scale_backward_reference(grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Optional[Tensor],
                                w2: Tensor, b2: Optional[Tensor], act: str = "relu", gate: str = "sigmoid"):
    """Plain-PyTorch ``se_scale_backward`` (explicit formulas; results as :func:`se_scale_backward`)."""
    dt = compute_dtype(x, w1)
    fmt = out_memory_format(x)
    dy = grad_out.to(dt)
    if out is not None:
        dy = torch.where(out > 0, dy, 0)
    xa = x.to(dt)
    hw = x.shape[2] * x.shape[3]
    w1f, w2f = w1.reshape(w1.shape[0], -1).to(dt), w2.reshape(w2.shape[0], -1).to(dt)
    s = xa.mean(dim=(2, 3))
    u = F.linear(s, w1f, b1.to(dt) if b1 is not None else None)
    h = ACTIVATIONS[act](u)
    z = F.linear(h, w2f, b2.to(dt) if b2 is not None else None)
    g = GATES[gate](z)
    dz = (dy * xa).sum(dim=(2, 3)) * _gate_grad_reference(z, g, gate)
    du = (dz @ w2f) * _act_grad_reference(u, act)
    ds = du @ w1f
    dx = (dy * g[:, :, None, None] + ds[:, :, None, None] / hw).to(x.dtype).contiguous(memory_format=fmt)
    d_identity = dy.to(x.dtype).contiguous(memory_format=fmt) if out is not None else x.new_empty(0)
    bias_grad = lambda d, b: d.sum(0).to(b.dtype) if b is not None else x.new_empty(0)  # noqa: E731
    return (dx, d_identity, (du.t() @ s).reshape(w1.shape).to(w1.dtype), bias_grad(du, b1),
            (dz.t() @ h).reshape(w2.shape).to(w2.dtype), bias_grad(dz, b2))



def se_scale_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): the residual tail at odd shapes, fp32
    weights; forward output then all six gradients, launchers against references."""
    c, cr = 19, 5
    x, identity = (randn((2, c, 5, 7), gen, device, dtype, channels_last) for _ in range(2))
    w1, b1 = randn((cr, c, 1, 1), gen, device, torch.float32, scale=c ** -0.5), randn((cr,), gen, device, torch.float32)
    w2, b2 = randn((c, cr, 1, 1), gen, device, torch.float32, scale=cr ** -0.5), randn((c,), gen, device, torch.float32)
    dy = randn((2, c, 5, 7), gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(x, identity, dy, *weights):
            out = forward(x, *weights, identity)
            return [out, *backward(dy, x, out, *weights)]
        return both

    return Probe((x, identity, dy, w1, b1, w2, b2), run(se_scale_forward_triton, se_scale_backward_triton),
                 run(se_scale_reference, se_scale_backward_reference))


# --------------------------------------------------------------------------- launchers
def _excite_blocks(c: int, cr: int) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_CR)`` of the excitation kernels: every hidden unit in one block, tiles
    of about 2048 weights (4096 spill registers on sm_90)."""
    block_cr = next_pow2(max(cr, 2))
    return min(next_pow2(c), max(2, 2048 // block_cr)), block_cr


def _fc_args(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor]):
    """Kernel arguments of the four weights: ``(pointers, strides, flags)``; a missing bias is
    replaced by ``w1`` (never read)."""
    w1f, w2f = w1.reshape(w1.shape[0], -1), w2.reshape(w2.shape[0], -1)  # views of conv / linear weights
    ptrs = (w1f, b1 if b1 is not None else w1f, w2f, b2 if b2 is not None else w1f)
    return ptrs, (*w1f.stride(), *w2f.stride()), dict(HAS_B1=b1 is not None, HAS_B2=b2 is not None)


def _partial_sums(x: Tensor, dy: Optional[Tensor], out: Optional[Tensor], dt: torch.dtype, block_c, block_hw, chunks):
    """Partial sums over H*W by _se_reduce_kernel: ``(psum_x, psum_dyx)``, each ``(N, chunks, C)``
    in ``dt`` (``psum_dyx`` is None without ``dy``). ``out`` (optional) masks ``dy`` to ``out > 0``."""
    n, c, h, w = x.shape
    hw = h * w
    x, sx = merge_hw(x)
    bc, bhw = tile_shape(c, hw, channels_inner(sx), not x.is_cuda)
    bc, bhw = block_c or bc, block_hw or bhw
    cblocks = triton.cdiv(c, bc)
    chunk, chunks = split_reduction(hw, bhw, n * cblocks, x.device, chunks)
    psum_x = torch.empty((n, chunks, c), dtype=dt, device=x.device)
    psum_dyx = torch.empty_like(psum_x) if dy is not None else psum_x  # not written without dy
    dy_t, sd = merge_hw(dy) if dy is not None else (x, sx)
    out_t, so = merge_hw(out) if out is not None else (x, sx)
    _se_reduce_kernel[(chunks, cblocks, n)](
        x, dy_t, out_t, psum_x, psum_dyx, c, hw, chunk, *sx, *sd, *so,
        WITH_DY=dy is not None, HAS_RES=out is not None, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return psum_x, (psum_dyx if dy is not None else None)


@on_input_device
def se_scale_forward_triton(
    x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], identity: Optional[Tensor] = None,
    act: str = "relu", gate: str = "sigmoid", *,
    out: Optional[Tensor] = None, block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
) -> Tensor:
    """Triton ``se_scale`` in three launches: partial sums, excitation, gate (+ residual).
    ``out``: optional preallocated output (x's shape and dtype, H and W mergeable);
    ``block_c``/``block_hw``/``chunks`` override the launch heuristics of the two big kernels."""
    n, c, h, w = x.shape
    dt = compute_dtype(x, w1)
    out = empty_out(x) if out is None else out
    x, sx = merge_hw(x)  # before the two passes: an unmergeable x is copied once
    psum, _ = _partial_sums(x, None, None, dt, block_c, block_hw, chunks)
    g = torch.empty((n, c), dtype=dt, device=x.device)
    fc, fc_strides, fc_flags = _fc_args(w1, b1, w2, b2)
    ebc, ebcr = _excite_blocks(c, w1.shape[0])
    _se_excite_kernel[(n,)](
        psum, *fc, g, c, w1.shape[0], psum.shape[1], 1.0 / (h * w), *fc_strides,
        **fc_flags, ACT=act, GATE=gate, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )
    res, sr = merge_hw(identity) if identity is not None else (x, sx)
    _, so = merge_hw(out)
    grid, bc, bhw = tile_grid(out, so, block_c, block_hw)
    _se_apply_kernel[grid](
        x, g, res, out, c, h * w, *sx, *sr, *so,
        HAS_RES=identity is not None, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return out


@on_input_device
def se_scale_backward_triton(
    grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Optional[Tensor], w2: Tensor,
    b2: Optional[Tensor], act: str = "relu", gate: str = "sigmoid", *,
    dx: Optional[Tensor] = None, d_identity: Optional[Tensor] = None,
    block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
):
    """Triton ``se_scale_backward`` in four launches: partial sums, excitation backward, weight
    gradients, dx (+ d_identity). ``dx``/``d_identity``: optional preallocated outputs."""
    n, c, h, w = x.shape
    cr = w1.shape[0]
    dt = compute_dtype(x, w1)
    has_res = out is not None
    dx = empty_out(x) if dx is None else dx
    if not has_res:
        d_identity = x.new_empty(0)
    elif d_identity is None:
        d_identity = empty_out(x)
    x, grad_out = merge_hw(x)[0], merge_hw(grad_out)[0]  # unmergeable layouts are copied once
    out = merge_hw(out)[0] if has_res else None
    psum_x, psum_dyx = _partial_sums(x, grad_out, out, dt, block_c, block_hw, chunks)

    per_c = torch.empty((4, n, c), dtype=dt, device=x.device)  # g, ds, s, dz
    per_r = torch.empty((2, n, cr), dtype=dt, device=x.device)  # h, du
    fc, fc_strides, fc_flags = _fc_args(w1, b1, w2, b2)
    ebc, ebcr = _excite_blocks(c, cr)
    _se_excite_backward_kernel[(n,)](
        psum_x, psum_dyx, *fc, *per_c, *per_r, c, cr, psum_x.shape[1], 1.0 / (h * w), *fc_strides,
        **fc_flags, ACT=act, GATE=gate, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )
    dw1, dw2 = torch.empty(w1.shape, dtype=w1.dtype, device=x.device), torch.empty(w2.shape, dtype=w2.dtype, device=x.device)
    db1 = torch.empty_like(b1, memory_format=torch.contiguous_format) if b1 is not None else x.new_empty(0)
    db2 = torch.empty_like(b2, memory_format=torch.contiguous_format) if b2 is not None else x.new_empty(0)
    _se_weight_grad_kernel[(triton.cdiv(c, ebc),)](
        per_c[2], per_r[0], per_r[1], per_c[3], dw1, db1 if b1 is not None else dw1, dw2, db2 if b2 is not None else dw1,
        n, c, cr, **fc_flags, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )

    _, sd = merge_hw(grad_out)
    out_t, so = merge_hw(out) if has_res else (grad_out, sd)
    _, sx = merge_hw(dx)
    dres, sr = (d_identity, merge_hw(d_identity)[1]) if has_res else (dx, sx)
    grid, bc, bhw = tile_grid(dx, sx, block_c, block_hw)
    _se_dx_kernel[grid](
        grad_out, out_t, per_c[0], per_c[1], dx, dres,
        c, h * w, *sd, *so, *sx, *sr,
        HAS_RES=has_res, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return dx, d_identity, dw1, db1, dw2, db2


# --------------------------------------------------------------------------- validation
def _check_inputs(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                  identity: Optional[Tensor], act: str, gate: str) -> None:
    op = "fastmtl.se_scale"
    if act not in ACTIVATIONS:
        raise ValueError(f"{op}: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    if gate not in GATES:
        raise ValueError(f"{op}: gate must be one of {', '.join(GATES)}, got {gate!r}")
    check_floating(op, x=x, w1=w1, b1=b1, w2=w2, b2=b2, identity=identity)
    check_same_device(op, x=x, w1=w1, b1=b1, w2=w2, b2=b2, identity=identity)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if w1.dim() not in (2, 4) or tuple(w1.shape[1:]) not in ((c,), (c, 1, 1)):
        raise ValueError(f"{op}: w1 must be (Cr, C={c}) or (Cr, {c}, 1, 1), got {tuple(w1.shape)}")
    cr = w1.shape[0]
    if tuple(w2.shape) not in ((c, cr), (c, cr, 1, 1)):
        raise ValueError(f"{op}: w2 must be (C={c}, Cr={cr}) or ({c}, {cr}, 1, 1), got {tuple(w2.shape)}")
    if b1 is not None and tuple(b1.shape) != (cr,):
        raise ValueError(f"{op}: b1 must be (Cr={cr},), got {tuple(b1.shape)}")
    if b2 is not None and tuple(b2.shape) != (c,):
        raise ValueError(f"{op}: b2 must be (C={c},), got {tuple(b2.shape)}")
    for name, t in (("b1", b1), ("w2", w2), ("b2", b2)):
        if t is not None and t.dtype != w1.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but w1 is {w1.dtype}; the weights must share one dtype")
    if identity is not None:
        if identity.shape != x.shape:
            raise ValueError(f"{op}: identity must have x's shape {tuple(x.shape)}, got {tuple(identity.shape)}")
        if identity.dtype != x.dtype:
            raise TypeError(f"{op}: identity is {identity.dtype} but x is {x.dtype}")


# --------------------------------------------------------------------------- torch.library
@torch.library.custom_op("fastmtl::se_scale", mutates_args=())
def se_scale(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
             identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``, or ``relu(that + identity)``.

    ``x``, ``identity`` ``(N, C, H, W)``; weights as in the module docstring, biases optional;
    ``act`` one of :data:`ACTIVATIONS`, ``gate`` one of :data:`GATES`. Returns ``(N, C, H, W)``
    in x's dtype, channels_last iff x's channels are innermost.
    """
    _check_inputs(x, w1, b1, w2, b2, identity, act, gate)
    if use_triton(x) and passes("se_scale", x):
        return se_scale_forward_triton(x, w1, b1, w2, b2, identity, act, gate)
    return se_scale_reference(x, w1, b1, w2, b2, identity, act, gate)


@se_scale.register_fake
def _se_scale_fake(x, w1, b1, w2, b2, identity=None, act="relu", gate="sigmoid"):
    _check_inputs(x, w1, b1, w2, b2, identity, act, gate)
    return empty_out(x)


@torch.library.custom_op("fastmtl::se_scale_backward", mutates_args=())
def se_scale_backward(
    grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Optional[Tensor], w2: Tensor,
    b2: Optional[Tensor], act: str = "relu", gate: str = "sigmoid",
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`se_scale`: ``(dx, d_identity, dw1, db1, dw2, db2)``.

    ``out`` is se_scale's output when it was called with ``identity`` (its sign gives the
    ReLU mask), else None; ``d_identity`` is then an empty tensor, as are ``db1``/``db2`` for
    missing biases. ``dx``/``d_identity`` are ``(N, C, H, W)`` in x's dtype and
    :func:`out_memory_format`; weight grads have the weights' shapes and dtypes.
    """
    if use_triton(grad_out) and passes("se_scale", x):
        return se_scale_backward_triton(grad_out, x, out, w1, b1, w2, b2, act, gate)
    return se_scale_backward_reference(grad_out, x, out, w1, b1, w2, b2, act, gate)


@se_scale_backward.register_fake
def _se_scale_backward_fake(grad_out, x, out, w1, b1, w2, b2, act="relu", gate="sigmoid"):
    d_identity = empty_out(x) if out is not None else x.new_empty(0)
    bias_grad = lambda b: torch.empty_like(b) if b is not None else x.new_empty(0)  # noqa: E731
    return empty_out(x), d_identity, torch.empty_like(w1), bias_grad(b1), torch.empty_like(w2), bias_grad(b2)


def _se_scale_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, identity, act, gate = inputs
    ctx.has_identity = identity is not None
    ctx.has_bias = (b1 is not None, b2 is not None)
    ctx.act, ctx.gate = act, gate
    ctx.save_for_backward(x, output if identity is not None else None, w1, b1, w2, b2)


def _se_scale_autograd(ctx, grad):
    x, out, w1, b1, w2, b2 = ctx.saved_tensors
    dx, d_identity, dw1, db1, dw2, db2 = se_scale_backward(grad, x, out, w1, b1, w2, b2, ctx.act, ctx.gate)
    db1 = db1 if ctx.has_bias[0] else None
    db2 = db2 if ctx.has_bias[1] else None
    return dx, dw1, db1, dw2, db2, (d_identity if ctx.has_identity else None), None, None


se_scale.register_autograd(_se_scale_autograd, setup_context=_se_scale_setup_context)


@register_flop_formula(torch.ops.fastmtl.se_scale)
def _se_scale_flop(x_shape, w1_shape, *args, out_shape=None, **kwargs) -> int:
    """Two FC layers ``C -> Cr -> C`` per image: 2 * 2 * N * C * Cr (as two 1x1 convs count)."""
    return 2 * 2 * x_shape[0] * x_shape[1] * w1_shape[0]


@register_flop_formula(torch.ops.fastmtl.se_scale_backward)
def _se_scale_backward_flop(grad_shape, x_shape, saved_out_shape, w1_shape, *args, out_shape=None, **kwargs) -> int:
    """Input and weight gradients of both FC layers: 4 * 2 * N * C * Cr."""
    return 4 * 2 * x_shape[0] * x_shape[1] * w1_shape[0]
