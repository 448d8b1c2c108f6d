"""The Triton kernels of ``bn_relu`` and its backward (launched by :mod:`.launch`).

The ``M`` values of a channel are cut into tiles of ``BLOCK_P`` pixels of one
image; a launch's programs each take a channel block and a *split*, a fixed run of consecutive
tiles. Forward in two launches: ``_bn_stats_kernel`` leaves per split and channel the partial
``(count, mean, M2)``, merged tile by tile with Chan's parallel formula (each tile's own mean
and squared deviations first: no ``sum x^2 - (sum x)^2 / M`` cancellation when |mean| >> std);
``_bn_relu_apply_kernel`` merges the partials of its channel block (the same fixed order in
every program: deterministic, no atomics), writes ``out`` over its split, and its split-0
programs write ``mean``/``invstd`` and update the running statistics. Backward in two:
``_bn_relu_grad_sums_kernel`` leaves per-split sums of ``gz`` and ``gz * xhat``;
``_bn_relu_dx_kernel`` adds them in a fixed order, writes ``dx`` over its split, and its
split-0 programs write ``dweight``/``dbias``. Bytes: the forward reads ``x`` twice and writes
``out`` once; the backward reads ``grad`` and ``x`` twice and writes ``dx`` once (eager
PyTorch: BatchNorm 3 + ReLU 2 passes forward, threshold_backward 3 + BatchNorm ~5 backward).
Defined only when triton imports.
"""
from __future__ import annotations

from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _bn_stats_kernel(
        X, PMEAN, PM2, PCOUNT,
        C, P, TP, TILES, CHUNK,
        sxn, sxc, sxp,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """Partial statistics of split ``s`` (tiles ``[s*CHUNK, min((s+1)*CHUNK, TILES))``; tile
        ``t`` is pixels ``(t % TP) * BLOCK_P ...`` of image ``t // TP``): ``PMEAN[s, c]``,
        ``PM2[s, c]`` (sum of squared deviations from that mean) and ``PCOUNT[s]`` (the values
        per channel). Grid ``(splits, cdiv(C, BLOCK_C))``; partial buffers contiguous."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        pr = tl.arange(0, BLOCK_P)
        count = tl.zeros([BLOCK_C], ACC)
        mean = tl.zeros([BLOCK_C], ACC)
        m2 = tl.zeros([BLOCK_C], ACC)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n = t // TP
            p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
            p_mask = p < P
            mask = c_mask[:, None] & p_mask[None, :]
            x = tl.load(X + n.to(tl.int64) * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            k = tl.sum(p_mask.to(ACC), axis=0)
            tile_mean = tl.sum(x, axis=1) / k
            d = tl.where(mask, x - tile_mean[:, None], 0.0)
            total = count + k
            delta = tile_mean - mean
            mean += delta * (k / total)
            m2 += tl.sum(d * d, axis=1) + delta * delta * (count * (k / total))
            count = total
        tl.store(PMEAN + s * C + c, mean, mask=c_mask)
        tl.store(PM2 + s * C + c, m2, mask=c_mask)
        tl.store(PCOUNT + s + c * 0, count, mask=c == 0)

    @triton.jit
    def _bn_merge(PMEAN, PM2, PCOUNT, c, c_mask, C, S,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
        """``(mean, m2, count)`` of channels ``c`` from the ``S`` partials, in a fixed order: the
        mean as split 0's mean plus the count-weighted deviations of the others, then
        ``m2 = sum M2_s + count_s * (mean_s - mean)^2``."""
        ref = tl.load(PMEAN + c, mask=c_mask, other=0)
        shift = tl.zeros([BLOCK_C], ACC)
        count = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            s_mask = s < S
            k = tl.load(PCOUNT + s, mask=s_mask, other=0)
            m = tl.load(PMEAN + s[:, None] * C + c[None, :], mask=s_mask[:, None] & c_mask[None, :], other=0)
            shift += tl.sum(k[:, None] * (m - ref[None, :]), axis=0)
            count += tl.sum(k, axis=0)
        mean = ref + shift / count
        m2 = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            mask = (s < S)[:, None] & c_mask[None, :]
            k = tl.load(PCOUNT + s, mask=s < S, other=0)
            m = tl.load(PMEAN + s[:, None] * C + c[None, :], mask=mask, other=0)
            d = m - mean[None, :]
            m2 += tl.sum(tl.load(PM2 + s[:, None] * C + c[None, :], mask=mask, other=0) + k[:, None] * d * d, axis=0)
        return mean, m2, count

    @triton.jit
    def _scale_shift(W, B, invstd, c, c_mask, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_C: tl.constexpr):
        """``(scale, shift)`` of channels ``c``: ``invstd * W`` (``invstd`` without a weight) and
        ``B`` (0 without a bias), so ``y = (x - mean) * scale + shift``."""
        scale = invstd
        if HAS_W:
            scale = invstd * tl.load(W + c, mask=c_mask, other=0).to(ACC)
        shift = tl.zeros([BLOCK_C], ACC)
        if HAS_B:
            shift = tl.load(B + c, mask=c_mask, other=0).to(ACC)
        return scale, shift

    @triton.jit
    def _tile(t, TP, P, pr, c_mask, BLOCK_P: tl.constexpr):
        """``(n, p, mask)`` of tile ``t``: image ``n = t // TP``, its pixels ``p`` (int64) and the
        ``(BLOCK_C, BLOCK_P)`` mask of the channels ``c_mask`` and pixels in range."""
        n = (t // TP).to(tl.int64)
        p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
        return n, p, c_mask[:, None] & (p < P)[None, :]

    @triton.jit
    def _relu_grad_tile(DY, X, n, p, c, mask, mean, invstd, scale, shift,
                        sdn, sdc, sdp, sxn, sxc, sxp, ACC: tl.constexpr):
        """``(gz, xhat)`` of one tile: ``DY`` masked by the ReLU of the forward's ``y`` (recomputed
        bit for bit) and ``xhat = (X - mean) * invstd``, both in ``ACC``."""
        x = tl.load(X + n * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
        dy = tl.load(DY + n * sdn + c[:, None] * sdc + p[None, :] * sdp, mask=mask, other=0).to(ACC)
        y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
        return tl.where(y <= 0, 0.0, dy), (x - mean[:, None]) * invstd[:, None]

    @triton.jit
    def _bn_relu_apply_kernel(
        X, OUT, W, B, PMEAN, PM2, PCOUNT, MEAN, INVSTD, RMEAN, RVAR,
        C, P, TP, TILES, CHUNK, S,
        eps_hi, eps_lo, mom_hi, mom_lo,
        sxn, sxc, sxp, son, soc, sop,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RUNNING: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """``OUT = relu((X - mean) * invstd * W + B)`` over split ``s``'s tiles, the statistics
        merged from the partials; split 0 writes ``MEAN``/``INVSTD`` and updates ``RMEAN``/``RVAR``
        (in their dtype). ``eps``/``momentum`` come as fp32 pairs ``hi + lo`` (fp64-exact sums).
        Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        mean, m2, count = _bn_merge(PMEAN, PM2, PCOUNT, c, c_mask, C, S, ACC, BLOCK_C, BLOCK_S)
        eps = tl.zeros([BLOCK_C], ACC) + eps_hi + eps_lo  # in ACC: fp64 kernels add them exactly
        invstd = tl.rsqrt(m2 / count + eps)
        scale, shift = _scale_shift(W, B, invstd, c, c_mask, HAS_W, HAS_B, ACC, BLOCK_C)
        if s == 0:
            tl.store(MEAN + c, mean, mask=c_mask)
            tl.store(INVSTD + c, invstd, mask=c_mask)
            if HAS_RUNNING:
                mom = tl.zeros([BLOCK_C], ACC) + mom_hi + mom_lo
                rm = tl.load(RMEAN + c, mask=c_mask, other=0).to(ACC)
                rv = tl.load(RVAR + c, mask=c_mask, other=0).to(ACC)
                tl.store(RMEAN + c, ((1 - mom) * rm + mom * mean).to(RMEAN.dtype.element_ty), mask=c_mask)
                tl.store(RVAR + c, ((1 - mom) * rv + mom * (m2 / (count - 1))).to(RVAR.dtype.element_ty), mask=c_mask)
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n, p, mask = _tile(t, TP, P, pr, c_mask, BLOCK_P)
            x = tl.load(X + n * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
            y = tl.where(y < 0, 0.0, y)  # ReLU that keeps NaN, like torch.relu
            tl.store(OUT + n * son + c[:, None] * soc + p[None, :] * sop, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _bn_relu_grad_sums_kernel(
        DY, X, W, B, MEAN, INVSTD, PSUM_G, PSUM_GX,
        C, P, TP, TILES, CHUNK,
        sdn, sdc, sdp, sxn, sxc, sxp,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """Per split ``s``: ``PSUM_G[s, c] = sum gz`` and ``PSUM_GX[s, c] = sum gz * xhat``, ``gz``
        the gradient ``DY`` masked by the recomputed ReLU. Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        mean = tl.load(MEAN + c, mask=c_mask, other=0)
        invstd = tl.load(INVSTD + c, mask=c_mask, other=0)
        scale, shift = _scale_shift(W, B, invstd, c, c_mask, HAS_W, HAS_B, ACC, BLOCK_C)
        acc_g = tl.zeros([BLOCK_C], ACC)
        acc_gx = tl.zeros([BLOCK_C], ACC)
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n, p, mask = _tile(t, TP, P, pr, c_mask, BLOCK_P)
            gz, xhat = _relu_grad_tile(DY, X, n, p, c, mask, mean, invstd, scale, shift,
                                       sdn, sdc, sdp, sxn, sxc, sxp, ACC)
            acc_g += tl.sum(gz, axis=1)
            acc_gx += tl.sum(gz * xhat, axis=1)
        tl.store(PSUM_G + s * C + c, acc_g, mask=c_mask)
        tl.store(PSUM_GX + s * C + c, acc_gx, mask=c_mask)

    @triton.jit
    def _bn_relu_dx_kernel(
        DY, X, W, B, MEAN, INVSTD, PSUM_G, PSUM_GX, DX, DW, DB,
        C, P, TP, TILES, CHUNK, S, M,
        sdn, sdc, sdp, sxn, sxc, sxp, son, soc, sop,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """``DX = W * invstd * (gz - sum_g / M - xhat * sum_gx / M)`` over split ``s``'s tiles, the
        sums added from the partials in a fixed order; split 0 writes ``DW = sum_gx`` and
        ``DB = sum_g`` (in their dtype). Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        sum_g = tl.zeros([BLOCK_C], ACC)
        sum_gx = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            sp = s0 + tl.arange(0, BLOCK_S)
            mask = (sp < S)[:, None] & c_mask[None, :]
            sum_g += tl.sum(tl.load(PSUM_G + sp[:, None] * C + c[None, :], mask=mask, other=0), axis=0)
            sum_gx += tl.sum(tl.load(PSUM_GX + sp[:, None] * C + c[None, :], mask=mask, other=0), axis=0)
        mean = tl.load(MEAN + c, mask=c_mask, other=0)
        invstd = tl.load(INVSTD + c, mask=c_mask, other=0)
        scale, shift = _scale_shift(W, B, invstd, c, c_mask, HAS_W, HAS_B, ACC, BLOCK_C)
        if s == 0:
            if HAS_W:
                tl.store(DW + c, sum_gx.to(DW.dtype.element_ty), mask=c_mask)
            if HAS_B:
                tl.store(DB + c, sum_g.to(DB.dtype.element_ty), mask=c_mask)
        inv_m = 1.0 / (tl.zeros([BLOCK_C], ACC) + M)
        mean_g = sum_g * inv_m
        mean_gx = sum_gx * inv_m
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n, p, mask = _tile(t, TP, P, pr, c_mask, BLOCK_P)
            gz, xhat = _relu_grad_tile(DY, X, n, p, c, mask, mean, invstd, scale, shift,
                                       sdn, sdc, sdp, sxn, sxc, sxp, ACC)
            dx = scale[:, None] * (gz - mean_g[:, None] - xhat * mean_gx[:, None])
            tl.store(DX + n * son + c[:, None] * soc + p[None, :] * sop, dx.to(DX.dtype.element_ty), mask=mask)
