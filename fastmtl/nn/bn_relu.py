"""Fused BatchNorm2d + ReLU: :class:`FusedBatchNormReLU`, a drop-in for ``nn.BatchNorm2d``
followed by ``nn.ReLU`` (what :func:`fastmtl.nn.fuse` swaps in for that pair)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _NormBase

from fastmtl.kernels.bn_relu import batch_norm_relu
from fastmtl.kernels.dispatch import use_triton


class FusedBatchNormReLU(_NormBase):
    """``relu(BatchNorm2d(x))``; in training mode one ``fastmtl::bn_relu`` op each way.

    ``FusedBatchNormReLU(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)``: the constructor, parameters, buffers and ``state_dict`` keys
    of ``nn.BatchNorm2d`` (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``), and its statistics rules: batch statistics in training mode (and
    in eval mode without running statistics), ``num_batches_tracked`` counted, ``momentum=None``
    a cumulative average. :attr:`fuses_relu` tells callers the ReLU is done.

    ``forward(x)``: ``x`` ``(N, C, H, W)`` (NCHW or channels_last) -> same shape, dtype and
    layout. With batch statistics and :func:`fastmtl.kernels.use_triton` true for ``x`` it runs
    :func:`fastmtl.kernels.bn_relu.batch_norm_relu` (Triton: two passes over ``x`` forward,
    the ReLU mask recomputed in the backward, running statistics updated in the kernel);
    otherwise -- eval mode with running statistics, CPU tensors under ``auto``,
    ``FASTMTL_KERNELS=reference`` -- ``F.batch_norm`` + ``F.relu`` (cuDNN on a GPU). Under
    ``torch.compile`` (``torch.compiler.is_compiling()``) it is always ``F.batch_norm`` +
    ``F.relu``: Inductor then fuses the normalisation with its neighbours (the ReLU, casts,
    the residual add) itself, which an opaque custom op would prevent.

    Not a subclass of torch's ``_BatchNorm``, so ``nn.SyncBatchNorm.convert_sync_batchnorm``
    leaves it alone (it would drop the ReLU): convert *before* fusing (:func:`fastmtl.step.build_step`
    does under DDP) -- a fused module keeps per-process statistics.
    """

    fuses_relu = True

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average (as torch: a host read)
                momentum = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        if batch_stats and not torch.compiler.is_compiling() and use_triton(x):
            return batch_norm_relu(x, self.weight, self.bias, running_mean, running_var, momentum, self.eps)
        y = F.batch_norm(x, running_mean, running_var, self.weight, self.bias, batch_stats, momentum, self.eps)
        return F.relu(y, inplace=True)  # as nn.ReLU(inplace=True) after nn.BatchNorm2d
