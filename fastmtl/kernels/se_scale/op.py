"""The ``torch.library`` ops ``fastmtl::se_scale`` and ``fastmtl::se_scale_backward``: input
checks, dispatch (Triton launchers or references), fake kernels, autograd, FLOP formulas.

The launchers are looked up on :mod:`.launch` at every call, as the self-check probe does, so
that replacing one there (tests) reaches every caller.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .._utils import check_floating, check_same_device, empty_out
from ..dispatch import use_triton
from ..selfcheck import passes
from . import launch
from .reference import ACTIVATIONS, GATES, se_scale_backward_reference, se_scale_reference


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


@torch.library.custom_op("fastmtl::se_scale", mutates_args=())
def se_scale(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
             identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``, or ``relu(that + identity)``.

    ``x``, ``identity`` ``(N, C, H, W)``; weights as in the package docstring
    (:mod:`fastmtl.kernels.se_scale`), biases optional; ``act`` one of
    :data:`.reference.ACTIVATIONS`, ``gate`` one of :data:`.reference.GATES`. Returns
    ``(N, C, H, W)`` in x's dtype, channels_last iff x's channels are innermost.
    """
    _check_inputs(x, w1, b1, w2, b2, identity, act, gate)
    if use_triton(x) and passes("se_scale", x):
        return launch.se_scale_forward_triton(x, w1, b1, w2, b2, identity, act, gate)
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
    :func:`fastmtl.kernels._utils.out_memory_format`; weight grads have the weights' shapes and dtypes.
    """
    if use_triton(grad_out) and passes("se_scale", x):
        return launch.se_scale_backward_triton(grad_out, x, out, w1, b1, w2, b2, act, gate)
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
