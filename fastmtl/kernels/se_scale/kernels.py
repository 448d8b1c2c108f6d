"""The Triton kernels of ``se_scale`` and its backward (launched by :mod:`.launch`).

Forward in three launches: ``_se_reduce_kernel`` leaves partial sums of ``x``
over fixed-order chunks of H*W; ``_se_excite_kernel`` (one program per image) adds them, runs
the excitation MLP and writes the gate ``g``; ``_se_apply_kernel`` writes ``x * g`` (+ residual
+ ReLU). Backward in four: the reduction kernel leaves partial sums of ``x`` and ``dy * x``
(``dy`` masked by the ReLU of the residual tail); ``_se_excite_backward_kernel`` (per image)
recomputes the MLP and writes ``g``, ``ds`` and what the weight gradients need;
``_se_weight_grad_kernel`` sums those over the batch in a fixed order; ``_se_dx_kernel`` writes
``dx`` (and ``d_identity``). Deterministic, no atomics. Defined only when triton imports.
"""
from __future__ import annotations

from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .._utils import program_tile

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
        """The excitation's hidden activation (see :data:`.reference.ACTIVATIONS`), elementwise in u's dtype."""
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
        """The channel gate (see :data:`.reference.GATES`) of the excitation's output ``z``."""
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
