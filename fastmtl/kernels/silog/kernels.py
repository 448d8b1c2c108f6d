"""The Triton kernels of ``silog_stats`` and its backward (launched by :mod:`.launch`).

``_silog_fwd_kernel`` leaves per image and chunk of pixels the partial ``(sum d, sum d^2,
count)``; ``_silog_bwd_kernel`` writes ``d(pred)``; both through ``_log_ratio``, the kernels'
twin of :func:`.reference._log_ratio_reference`. Defined only when triton imports.
"""
from __future__ import annotations

from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT: tl.constexpr):
        """``(d, valid, pc)`` per pixel: ``valid = t finite and > 0``, ``pc = clamp(p, LO, HI)``
        (NaN kept), ``d = log(max(t, EPS)) - log(pc)`` (``- pc`` when LOG_INPUT), 0 where not
        valid. Mirrors :func:`.reference._log_ratio_reference`."""
        valid = (t > 0) & (t < INF)
        t = tl.where(valid, t, 1.0)
        pc = tl.where(p < LO, LO, tl.where(p > HI, HI, p))
        if LOG_INPUT:
            lp = pc
        else:
            lp = tl.log(pc)
        d = tl.where(valid, tl.log(tl.maximum(t, EPS)) - lp, 0.0)
        return d, valid, pc

    @triton.jit
    def _silog_fwd_kernel(
        P, T, PART,
        HW, CHUNK, spn, sphw, stn, sthw,
        LO, HI, EPS, INF,
        LOG_INPUT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """``PART[n, chunk] = (sum d, sum d^2, count)`` over one chunk of the H*W pixels.
        Grid ``(chunks, N)``; ``PART`` ``(N, chunks, 3)`` contiguous. LO/HI are already logs
        when LOG_INPUT."""
        pid_s = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        acc_d = tl.zeros([BLOCK], ACC)
        acc_d2 = tl.zeros([BLOCK], ACC)
        acc_n = tl.zeros([BLOCK], ACC)
        i0 = pid_s.to(tl.int64) * CHUNK
        for off in range(0, CHUNK, BLOCK):
            i = i0 + off + tl.arange(0, BLOCK)
            m = i < HW
            t = tl.load(T + n * stn + i * sthw, mask=m, other=0).to(ACC)  # masked lanes: not valid
            p = tl.load(P + n * spn + i * sphw, mask=m, other=1).to(ACC)
            d, valid, _ = _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT)
            acc_d += d
            acc_d2 += d * d
            acc_n += valid.to(ACC)
        dst = PART + (n * tl.num_programs(0) + pid_s) * 3
        tl.store(dst, tl.sum(acc_d, axis=0))
        tl.store(dst + 1, tl.sum(acc_d2, axis=0))
        tl.store(dst + 2, tl.sum(acc_n, axis=0))

    @triton.jit
    def _silog_bwd_kernel(
        GS, P, T, DP,
        HW, spn, sphw, stn, sthw, sdn, sdhw,
        LO, HI, EPS, INF,
        LOG_INPUT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """``DP = valid * inside * (GS[n, 0] + 2 GS[n, 1] d) * dd/dpred``; ``GS`` ``(N, 3)``
        contiguous. Grid ``(cdiv(HW, BLOCK), N)``."""
        n = tl.program_id(1).to(tl.int64)
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < HW
        g1 = tl.load(GS + n * 3).to(ACC)
        g2 = tl.load(GS + n * 3 + 1).to(ACC)
        t = tl.load(T + n * stn + i * sthw, mask=m, other=0).to(ACC)  # masked lanes: not valid
        p = tl.load(P + n * spn + i * sphw, mask=m, other=1).to(ACC)
        d, valid, pc = _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT)
        keep = valid & (p >= LO) & (p <= HI)
        dp = -(g1 + 2 * g2 * d)
        if not LOG_INPUT:
            dp = dp / pc
        tl.store(DP + n * sdn + i * sdhw, tl.where(keep, dp, 0.0).to(DP.dtype.element_ty), mask=m)
