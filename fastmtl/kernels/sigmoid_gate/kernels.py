"""The Triton kernels of ``sigmoid_gate`` and its backward (launched by :mod:`.launch`):
one elementwise pass each, ``_gate_fwd_kernel`` and ``_gate_bwd_kernel``, over tiles of
(channels, pixels). Defined only when triton imports.
"""
from __future__ import annotations

from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .._utils import program_tile

    @triton.jit
    def _gate_fwd_kernel(
        F, A, R, OUT,
        C, HW,
        sfn, sfc, sfhw, san, sac, sahw, srn, src, srhw, son, soc, sohw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``OUT = F * sigmoid(A) (+ R)``. Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        mask = (c < C)[:, None] & (hw < HW)[None, :]
        f = tl.load(F + n * sfn + c[:, None] * sfc + hw[None, :] * sfhw, mask=mask, other=0).to(ACC)
        a = tl.load(A + n * san + c[:, None] * sac + hw[None, :] * sahw, mask=mask, other=0).to(ACC)
        y = f * tl.sigmoid(a)
        if HAS_RES:
            y += tl.load(R + n * srn + c[:, None] * src + hw[None, :] * srhw, mask=mask, other=0).to(ACC)
        tl.store(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_bwd_kernel(
        G, F, A, DF, DA,
        C, HW,
        sgn, sgc, sghw, sfn, sfc, sfhw, san, sac, sahw, son, soc, sohw,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``DF = G * s``, ``DA = G * F * s * (1 - s)`` with ``s = sigmoid(A)``; ``DF`` and
        ``DA`` share the strides ``so*``. Grid as the forward."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        mask = (c < C)[:, None] & (hw < HW)[None, :]
        g = tl.load(G + n * sgn + c[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0).to(ACC)
        f = tl.load(F + n * sfn + c[:, None] * sfc + hw[None, :] * sfhw, mask=mask, other=0).to(ACC)
        a = tl.load(A + n * san + c[:, None] * sac + hw[None, :] * sahw, mask=mask, other=0).to(ACC)
        s = tl.sigmoid(a)
        df = g * s
        da = df * f * (1 - s)
        dst = n * son + c[:, None] * soc + hw[None, :] * sohw
        tl.store(DF + dst, df.to(DF.dtype.element_ty), mask=mask)
        tl.store(DA + dst, da.to(DA.dtype.element_ty), mask=mask)
