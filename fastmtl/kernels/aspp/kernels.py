"""The Triton kernels of ``aspp_project`` and its backward (launched by :mod:`.launch`).

All accumulate in fp32 (fp64 for fp64 inputs) and address with int64:

* ``_project_kernel``: the forward GEMM over up to 4 branch pointers per launch (more branches
  chain launches through an accumulator buffer) with the bias / scale-shift / ReLU epilogue.
* Backward, three launches for up to 4 branches (one launch per kernel per 4 branches):
  ``_branch_grad_kernel`` (``grad_b_k = weight_k^T @ gy`` for all branches, plus per-tile pixel
  sums of ``gz``), ``_weight_grad_kernel`` (``grad_weight = sum_{n,p} gy @ b^T`` for all branches,
  partial sums over pixel splits, about one program per SM) and ``_finish_kernel`` (the fixed-order
  sums of both partials: weight, bias, shift and scale gradients; deterministic, no atomics).
  ``gy = grad * (out > 0) * scale`` is made while loading in both GEMM kernels and never stored,
  so the backward reads ``grad`` and ``out`` twice and everything else once.

fp16 / bf16 / fp32 use ``tl.dot`` (fp32 in TF32 when ``torch.backends.cudnn.allow_tf32``, like
the cuDNN conv it replaces); fp64, and bf16 under the Triton interpreter (whose bf16 ``tl.dot``
is wrong), use broadcast multiply + ``tl.sum`` products through the same kernels (``USE_DOT``).
Defined only when triton imports.
"""
from __future__ import annotations

from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton
    import triton.language as tl

    from .._utils import program_tile


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
