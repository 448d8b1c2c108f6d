"""Training-mode BatchNorm2d followed by ReLU, in two passes over memory each way.

Math (per channel ``c``, over the ``M = N * H * W`` values of the batch)::

    mean  = mean(x),  var = mean((x - mean)^2)          (batch statistics, biased variance)
    invstd = 1 / sqrt(var + eps),  xhat = (x - mean) * invstd
    out   = relu(xhat * w + b)
    running_mean <- (1 - momentum) * running_mean + momentum * mean
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)

Backward, with ``gz = grad`` where ``xhat * w + b > 0`` (else 0; the mask is recomputed from
``x``, so ``out`` is neither saved nor read)::

    dx = w * invstd * (gz - sum(gz) / M - xhat * sum(gz * xhat) / M)
    dw = sum(gz * xhat),  db = sum(gz)

Ops (namespace ``fastmtl``):

* ``bn_relu(x, weight, bias, running_mean, running_var, momentum, eps) -> (out, mean, invstd)``,
  which updates ``running_mean``/``running_var`` in place (both None: no running statistics);
* ``bn_relu_backward(grad, x, weight, bias, mean, invstd) -> (dx, dweight, dbias)``,

both with fake (meta) kernels. torch.library refuses an autograd formula on an op that mutates
its inputs, so the differentiable entry point is :func:`batch_norm_relu` (an
``autograd.Function``: ``bn_relu`` forward, ``bn_relu_backward`` backward, no double backward;
``torch.compile`` traces it whole). No FLOP formula: like ``aten.native_batch_norm``, the op
counts no FLOPs.

Shapes, layouts, dtypes: ``x`` ``(N, C, H, W)`` in any layout whose H and W merge into one
strided dim (NCHW, channels_last, channel slices of either; others are copied to NCHW first),
read in place as ``(N, C, P)`` with its strides; fp16 / bf16 / fp32 / fp64. ``weight``/``bias``
``(C,)`` or None (``affine=False``), ``running_mean``/``running_var`` ``(C,)`` or both None,
each of any floating dtype (fp32 under autocast). ``out`` has x's dtype and is channels_last
when x's channels are innermost, NCHW otherwise; ``mean``/``invstd`` ``(C,)`` are fp32 (fp64 if
``x`` or ``weight`` is fp64), the compute dtype of the kernels.

Modules: :mod:`.reference` (the plain-PyTorch references), :mod:`.kernels` (the
``@triton.jit`` kernels), :mod:`.launch` (their launchers: tiles, splits, grids), :mod:`.op`
(the ``torch.library`` ops: checks, fake kernels; the ``autograd.Function`` and
:func:`batch_norm_relu`), :mod:`.probe` (the self-check problem of
:mod:`fastmtl.kernels.selfcheck`).
"""
from .launch import MAX_INNER_CHANNELS, MERGE_SHARE, bn_relu_backward_triton, bn_relu_forward_triton
from .op import batch_norm_relu, bn_relu, bn_relu_backward
from .probe import bn_relu_probe
from .reference import bn_relu_backward_reference, bn_relu_reference

__all__ = [
    "MAX_INNER_CHANNELS", "MERGE_SHARE", "batch_norm_relu", "bn_relu", "bn_relu_backward",
    "bn_relu_backward_reference", "bn_relu_backward_triton", "bn_relu_forward_triton", "bn_relu_probe",
    "bn_relu_reference",
]
