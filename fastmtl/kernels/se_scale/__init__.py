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

Modules: :mod:`.reference` (the plain-PyTorch references and the supported ``act`` / ``gate``),
:mod:`.kernels` (the ``@triton.jit`` kernels), :mod:`.launch` (their launchers: tile sizes,
reduction splits, grids), :mod:`.op` (the ``torch.library`` ops: checks, fake kernels, autograd,
FLOP formulas), :mod:`.probe` (the self-check problem of :mod:`fastmtl.kernels.selfcheck`).
"""
from .launch import se_scale_backward_triton, se_scale_forward_triton
from .op import se_scale, se_scale_backward
from .probe import se_scale_probe
from .reference import ACTIVATIONS, GATES, se_scale_backward_reference, se_scale_reference

__all__ = [
    "ACTIVATIONS", "GATES", "se_scale", "se_scale_backward", "se_scale_backward_reference",
    "se_scale_backward_triton", "se_scale_forward_triton", "se_scale_probe", "se_scale_reference",
]
