"""Plain-PyTorch references of ``sigmoid_gate`` and its backward (the CPU path and the
numerical reference of the kernels)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import compute_dtype, out_memory_format


def sigmoid_gate_reference(f: Tensor, a: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """Plain-PyTorch ``sigmoid_gate`` in the compute dtype; output in f's dtype and layout rule."""
    dt = compute_dtype(f)
    y = f.to(dt) * torch.sigmoid(a.to(dt))
    if r is not None:
        y = y + r.to(dt)
    return y.to(f.dtype).contiguous(memory_format=out_memory_format(f))


def sigmoid_gate_backward_reference(grad: Tensor, f: Tensor, a: Tensor) -> Tuple[Tensor, Tensor]:
    """Plain-PyTorch ``sigmoid_gate_backward``: ``(df, da)``."""
    dt = compute_dtype(f)
    fmt = out_memory_format(f)
    s = torch.sigmoid(a.to(dt))
    df = grad.to(dt) * s
    da = df * f.to(dt) * (1 - s)
    return df.to(f.dtype).contiguous(memory_format=fmt), da.to(f.dtype).contiguous(memory_format=fmt)
