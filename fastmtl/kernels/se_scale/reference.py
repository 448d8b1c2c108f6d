"""Plain-PyTorch references of ``se_scale`` and its backward (the CPU path and the numerical
reference of the kernels), and the activations and gates the op supports."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import compute_dtype, out_memory_format


ACTIVATIONS = {"relu": torch.relu, "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish}
"""The excitation's hidden activations ``act`` the op supports (GELU: the exact, erf form)."""
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}
"""The channel gates ``gate`` the op supports."""


def _excite_reference(s: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                      act: str, gate: str) -> Tensor:
    """``gate(W2 act(W1 s + b1) + b2)`` on the means ``s`` ``(N, C)`` in s's dtype (plain PyTorch)."""
    dt = s.dtype
    cast = lambda t: None if t is None else t.to(dt)  # noqa: E731
    h = ACTIVATIONS[act](F.linear(s, w1.reshape(w1.shape[0], -1).to(dt), cast(b1)))
    return GATES[gate](F.linear(h, w2.reshape(w2.shape[0], -1).to(dt), cast(b2)))


def se_scale_reference(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                       identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """Plain-PyTorch ``se_scale`` (same math, same compute dtype); output in x's dtype and
    :func:`fastmtl.kernels._utils.out_memory_format`."""
    dt = compute_dtype(x, w1)
    xa = x.to(dt)
    y = xa * _excite_reference(xa.mean(dim=(2, 3)), w1, b1, w2, b2, act, gate)[:, :, None, None]
    if identity is not None:
        y = torch.relu(y + identity.to(dt))
    return y.to(x.dtype).contiguous(memory_format=out_memory_format(x))


def _act_grad_reference(u: Tensor, act: str) -> Tensor:
    """``d act(u) / du`` (torch's conventions at the kinks)."""
    if act == "relu":
        return (u > 0).to(u.dtype)
    if act == "silu":
        sig = torch.sigmoid(u)
        return sig * (1 + u * (1 - sig))
    if act == "gelu":
        return 0.5 * (1 + torch.erf(u * 0.5 ** 0.5)) + u * torch.exp(-0.5 * u * u) / (2 * torch.pi) ** 0.5
    return torch.where(u < -3, 0, torch.where(u <= 3, u / 3 + 0.5, 1)).to(u.dtype)  # hardswish


def _gate_grad_reference(z: Tensor, g: Tensor, gate: str) -> Tensor:
    """``d gate(z) / dz`` given ``g = gate(z)``."""
    if gate == "sigmoid":
        return g * (1 - g)
    return ((z > -3) & (z < 3)).to(z.dtype) / 6  # hardsigmoid


def se_scale_backward_reference(grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Optional[Tensor],
                                w2: Tensor, b2: Optional[Tensor], act: str = "relu", gate: str = "sigmoid"):
    """Plain-PyTorch ``se_scale_backward`` (explicit formulas; results as :func:`.op.se_scale_backward`)."""
    dt = compute_dtype(x, w1)
    fmt = out_memory_format(x)
    dy = grad_out.to(dt)
    if out is not None:
        dy = torch.where(out > 0, dy, 0)
    xa = x.to(dt)
    hw = x.shape[2] * x.shape[3]
    w1f, w2f = w1.reshape(w1.shape[0], -1).to(dt), w2.reshape(w2.shape[0], -1).to(dt)
    s = xa.mean(dim=(2, 3))
    u = F.linear(s, w1f, b1.to(dt) if b1 is not None else None)
    h = ACTIVATIONS[act](u)
    z = F.linear(h, w2f, b2.to(dt) if b2 is not None else None)
    g = GATES[gate](z)
    dz = (dy * xa).sum(dim=(2, 3)) * _gate_grad_reference(z, g, gate)
    du = (dz @ w2f) * _act_grad_reference(u, act)
    ds = du @ w1f
    dx = (dy * g[:, :, None, None] + ds[:, :, None, None] / hw).to(x.dtype).contiguous(memory_format=fmt)
    d_identity = dy.to(x.dtype).contiguous(memory_format=fmt) if out is not None else x.new_empty(0)
    bias_grad = lambda d, b: d.sum(0).to(b.dtype) if b is not None else x.new_empty(0)  # noqa: E731
    return (dx, d_identity, (du.t() @ s).reshape(w1.shape).to(w1.dtype), bias_grad(du, b1),
            (dz.t() @ h).reshape(w2.shape).to(w2.dtype), bias_grad(dz, b2))
