"""The self-check problem of ``bn_relu`` (:mod:`fastmtl.kernels.selfcheck`)."""
from __future__ import annotations

import torch

from ..selfcheck import Probe, randn
from . import launch
from .reference import bn_relu_backward_reference, bn_relu_reference


def bn_relu_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`fastmtl.kernels.selfcheck`): odd shapes, channel means away from 0,
    fp32 parameters and running statistics; the forward's results, the updated running
    statistics, then the three gradients."""
    c = 19
    x = randn((3, c, 5, 7), gen, device, torch.float32)
    x = (x + randn((1, c, 1, 1), gen, device, torch.float32, scale=3.0)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = randn((c,), gen, device, torch.float32) + 1, randn((c,), gen, device, torch.float32, scale=0.5)
    running_mean, running_var = randn((c,), gen, device, torch.float32), randn((c,), gen, device, torch.float32).abs() + 0.5
    dy = randn(x.shape, gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(x, weight, bias, running_mean, running_var, dy):
            rm, rv = running_mean.clone(), running_var.clone()
            out, mean, invstd = forward(x, weight, bias, rm, rv, 0.1, 1e-5)
            return [out, mean, invstd, rm, rv, *backward(dy, x, weight, bias, mean, invstd)]
        return both

    return Probe((x, weight, bias, running_mean, running_var, dy),
                 run(launch.bn_relu_forward_triton, launch.bn_relu_backward_triton),
                 run(bn_relu_reference, bn_relu_backward_reference))
