"""Sigmoid gate: ``out = f * sigmoid(a)`` or ``out = r + f * sigmoid(a)``.

The spatial attention of the task-distillation model (``conv(x) * sigmoid(attention(x))``
plus the other task's features) in one pass over memory.

Shapes and layouts: ``f``, ``a``, ``r`` are ``(N, C, H, W)`` with any strides whose H and W
dims merge into one strided dim: NCHW-contiguous, channels_last, and channel slices of either
-- so ``f`` and ``a`` can be the two halves ``y[:, :C]``, ``y[:, C:]`` of one ``2C``-channel
convolution output without a copy. Other layouts are copied to NCHW first. The output (and
``df``, ``da``) is channels_last when ``f``'s channels are its innermost dim, else
NCHW-contiguous. ``f``, ``a``, ``r`` share one dtype (fp16/bf16/fp32/fp64); the math runs in
fp32 (fp64 for fp64 inputs).

Backward: ``df = g * sigmoid(a)``, ``da = g * f * sigmoid(a) * (1 - sigmoid(a))``, ``dr = g``
(returned as is by the autograd formula, not by the backward op).

``sigmoid_gate_halves(y, r=None)`` is the same gate on the halves ``f = y[:, :C]``,
``a = y[:, C:]`` of one ``(N, 2C, H, W)`` tensor, taken inside the op: its backward
(``sigmoid_gate_halves_backward``) writes ``dy`` as ONE tensor in ``y``'s layout, ``df`` and
``da`` into its two halves. With ``sigmoid_gate`` on two views instead, autograd assembles
``dy`` from two ``slice_backward`` zero-filled, NCHW-contiguous, full-size buffers and an add --
three more passes over ``dy``, and an NCHW gradient for a channels_last convolution's backward.

Ops (namespace ``fastmtl``): ``sigmoid_gate(f, a, r=None)`` and ``sigmoid_gate_backward``,
``sigmoid_gate_halves(y, r=None)`` and ``sigmoid_gate_halves_backward``, with fake kernels and
autograd formulas.

Modules: :mod:`.reference` (the plain-PyTorch references), :mod:`.kernels` (the
``@triton.jit`` kernels), :mod:`.launch` (their launchers: tiles, grids), :mod:`.op` (the
``torch.library`` ops: checks, fake kernels, autograd), :mod:`.probe` (the self-check problem
of :mod:`fastmtl.kernels.selfcheck`).
"""
from .launch import sigmoid_gate_backward_triton, sigmoid_gate_forward_triton
from .op import sigmoid_gate, sigmoid_gate_backward, sigmoid_gate_halves, sigmoid_gate_halves_backward
from .probe import sigmoid_gate_probe
from .reference import sigmoid_gate_backward_reference, sigmoid_gate_reference

__all__ = [
    "sigmoid_gate", "sigmoid_gate_backward", "sigmoid_gate_backward_reference", "sigmoid_gate_backward_triton",
    "sigmoid_gate_forward_triton", "sigmoid_gate_halves", "sigmoid_gate_halves_backward", "sigmoid_gate_probe",
    "sigmoid_gate_reference",
]
