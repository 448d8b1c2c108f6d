"""The ``torch.library`` ops ``fastmtl::sigmoid_gate``, ``fastmtl::sigmoid_gate_halves`` and
their backwards: input checks, dispatch (Triton launchers or references), fake kernels, autograd.

The launchers are looked up on :mod:`.launch` at every call, as the self-check probe does, so
that replacing one there (tests) reaches every caller.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import check_floating, check_same_device, empty_out, out_memory_format
from ..dispatch import use_triton
from ..selfcheck import passes
from . import launch
from .reference import sigmoid_gate_backward_reference, sigmoid_gate_reference


def _check_inputs(f: Tensor, a: Tensor, r: Optional[Tensor]) -> None:
    op = "fastmtl.sigmoid_gate"
    check_floating(op, f=f, a=a, r=r)
    check_same_device(op, f=f, a=a, r=r)
    if f.dim() != 4:
        raise ValueError(f"{op}: f must be (N, C, H, W), got shape {tuple(f.shape)}")
    for name, t in (("a", a), ("r", r)):
        if t is None:
            continue
        if t.shape != f.shape:
            raise ValueError(f"{op}: {name} must have f's shape {tuple(f.shape)}, got {tuple(t.shape)}")
        if t.dtype != f.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but f is {f.dtype}")


@torch.library.custom_op("fastmtl::sigmoid_gate", mutates_args=())
def sigmoid_gate(f: Tensor, a: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """``f * sigmoid(a)`` or ``r + f * sigmoid(a)``; all ``(N, C, H, W)``, one dtype."""
    _check_inputs(f, a, r)
    if use_triton(f) and passes("sigmoid_gate", f):
        return launch.sigmoid_gate_forward_triton(f, a, r)
    return sigmoid_gate_reference(f, a, r)


@sigmoid_gate.register_fake
def _sigmoid_gate_fake(f, a, r=None):
    _check_inputs(f, a, r)
    return empty_out(f)


@torch.library.custom_op("fastmtl::sigmoid_gate_backward", mutates_args=())
def sigmoid_gate_backward(grad: Tensor, f: Tensor, a: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients ``(df, da)`` of :func:`sigmoid_gate` for the output gradient ``grad``."""
    if use_triton(grad) and passes("sigmoid_gate", f):
        return launch.sigmoid_gate_backward_triton(grad, f, a)
    return sigmoid_gate_backward_reference(grad, f, a)


@sigmoid_gate_backward.register_fake
def _sigmoid_gate_backward_fake(grad, f, a):
    return empty_out(f), empty_out(f)


def _setup_context(ctx, inputs, output):
    f, a, r = inputs
    ctx.has_res = r is not None
    ctx.save_for_backward(f, a)


def _autograd(ctx, grad):
    f, a = ctx.saved_tensors
    df, da = sigmoid_gate_backward(grad, f, a)
    return df, da, (grad if ctx.has_res else None)


sigmoid_gate.register_autograd(_autograd, setup_context=_setup_context)


def _halves(y: Tensor) -> Tuple[Tensor, Tensor]:
    if y.dim() != 4 or y.shape[1] % 2:
        raise ValueError(f"fastmtl.sigmoid_gate_halves: y must be (N, 2C, H, W), got shape {tuple(y.shape)}")
    c = y.shape[1] // 2
    return y[:, :c], y[:, c:]


@torch.library.custom_op("fastmtl::sigmoid_gate_halves", mutates_args=())
def sigmoid_gate_halves(y: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """:func:`sigmoid_gate` of the channel halves of ``y (N, 2C, H, W)``: ``f * sigmoid(a)`` (+ ``r``),
    ``(N, C, H, W)``."""
    f, a = _halves(y)
    _check_inputs(f, a, r)
    if use_triton(f) and passes("sigmoid_gate", f):
        return launch.sigmoid_gate_forward_triton(f, a, r)
    return sigmoid_gate_reference(f, a, r)


@sigmoid_gate_halves.register_fake
def _sigmoid_gate_halves_fake(y, r=None):
    f, a = _halves(y)
    _check_inputs(f, a, r)
    return empty_out(f)


@torch.library.custom_op("fastmtl::sigmoid_gate_halves_backward", mutates_args=())
def sigmoid_gate_halves_backward(grad: Tensor, y: Tensor) -> Tensor:
    """``dy (N, 2C, H, W)`` of :func:`sigmoid_gate_halves` in ``y``'s layout: ``(df, da)`` in its halves."""
    f, a = _halves(y)
    if use_triton(grad) and passes("sigmoid_gate", f):
        dy = torch.empty_like(y)
        launch.sigmoid_gate_backward_triton(grad, f, a, df=dy[:, :f.shape[1]], da=dy[:, f.shape[1]:])
        return dy
    return torch.cat(sigmoid_gate_backward_reference(grad, f, a), dim=1).contiguous(
        memory_format=out_memory_format(y))


@sigmoid_gate_halves_backward.register_fake
def _sigmoid_gate_halves_backward_fake(grad, y):
    return torch.empty_like(y)


def _halves_setup_context(ctx, inputs, output):
    y, r = inputs
    ctx.has_res = r is not None
    ctx.save_for_backward(y)


def _halves_autograd(ctx, grad):
    (y,) = ctx.saved_tensors
    return sigmoid_gate_halves_backward(grad, y), (grad if ctx.has_res else None)


sigmoid_gate_halves.register_autograd(_halves_autograd, setup_context=_halves_setup_context)
