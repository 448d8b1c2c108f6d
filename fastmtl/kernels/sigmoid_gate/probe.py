"""The self-check problem of ``sigmoid_gate`` (:mod:`fastmtl.kernels.selfcheck`)."""
from __future__ import annotations

import torch

from ..selfcheck import Probe, randn
from . import launch
from .reference import sigmoid_gate_backward_reference, sigmoid_gate_reference


def sigmoid_gate_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`fastmtl.kernels.selfcheck`): ``f``, ``a`` the channel halves of one
    tensor, plus a residual, at odd shapes; the output then ``(df, da)``."""
    y = randn((2, 22, 5, 7), gen, device, dtype, channels_last)
    r, grad = (randn((2, 11, 5, 7), gen, device, dtype, channels_last) for _ in range(2))

    def run(forward, backward):
        def both(y, r, grad):
            f, a = y[:, :11], y[:, 11:]
            return [forward(f, a, r), *backward(grad, f, a)]
        return both

    return Probe((y, r, grad), run(launch.sigmoid_gate_forward_triton, launch.sigmoid_gate_backward_triton),
                 run(sigmoid_gate_reference, sigmoid_gate_backward_reference))
