"""Plain-PyTorch references of ``aspp_project`` and its backward (the CPU path and the
numerical reference of the kernels), and the ops' output layout rule."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._utils import compute_dtype


def _is_channels_last(t: Tensor) -> bool:
    """The output layout rule: channels_last iff ``t`` is channels_last and not NCHW-contiguous
    (stricter than :func:`fastmtl.kernels._utils.out_memory_format` of the other ops: e.g. a channel slice of a
    channels_last tensor gives NCHW outputs here)."""
    return (not t.is_contiguous()) and t.is_contiguous(memory_format=torch.channels_last)


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


def aspp_project_reference(branches: Sequence[Tensor], weight: Tensor, bias: Tensor,
                           scale: Optional[Tensor] = None, shift: Optional[Tensor] = None,
                           relu: bool = False) -> Tensor:
    """Plain PyTorch ``aspp_project``: 1x1 conv of the channel concat + bias (+ scale/shift) (+ ReLU).

    Shapes as in :func:`.op.aspp_project`; computed in the branches' dtype, output in the op's layout.
    """
    x = torch.cat(list(branches), dim=1)
    y = F.conv2d(x, weight[:, :, None, None]) + bias.to(x.dtype)[:, :, None, None]
    if scale is not None:
        y = y * scale.to(y.dtype)[:, None, None] + shift.to(y.dtype)[:, None, None]
    if relu:
        y = torch.relu(y)
    return y.contiguous(memory_format=_memory_format(branches[0]))


def aspp_project_backward_reference(grad: Tensor, out: Tensor, branches: Sequence[Tensor], weight: Tensor,
                                    bias: Tensor, scale: Optional[Tensor] = None, preact: Optional[Tensor] = None,
                                    relu: bool = False) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
    """Plain PyTorch ``aspp_project_backward`` (same arguments and results)."""
    dtype = branches[0].dtype
    acc = compute_dtype(branches[0])
    gz = grad.to(acc)
    if relu:
        gz = gz * (out > 0)
    gz_sum = gz.sum((2, 3))  # (N, Cout)
    affine = [gz_sum.sum(0)] + ([(gz * preact.to(acc)).sum((0, 2, 3))] if preact is not None else [])
    grad_bias = (gz_sum * scale.to(acc) if scale is not None else gz_sum).to(bias.dtype)
    gy = (gz * scale.to(acc)[:, None, None] if scale is not None else gz).to(dtype)
    cb = branches[0].shape[1]
    grad_branches = [
        F.conv2d(gy, weight[:, k * cb:(k + 1) * cb].t()[:, :, None, None]).contiguous(
            memory_format=_memory_format(branches[0]))
        for k in range(len(branches))
    ]
    grad_weight = torch.einsum("nohw,njhw->oj", gy, torch.cat(list(branches), dim=1)).to(weight.dtype)
    return grad_branches, grad_weight, grad_bias, torch.stack(affine)
