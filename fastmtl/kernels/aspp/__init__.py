"""ASPP projection without the five-branch concat.

DeepLabV3's ASPP concatenates ``K`` same-shape branch outputs ``b_k (N, Cb, H, W)`` and the
spatially constant image-pooling branch, then projects with a 1x1 conv ``Wp (Cout, (K+1)*Cb)``.
Splitting ``Wp`` by branch, the pooled part becomes a per-sample bias ``bias_n = Wp_pool @ p_n``
and the rest is one GEMM over pixels that reads every branch where it lies::

    y[n, o, p]  = sum_k sum_c weight[o, k*Cb + c] * b_k[n, c, p] + bias[n, o]
    out         = relu?(y * scale[o] + shift[o])        # optional eval-mode BatchNorm epilogue

Ops (namespace ``fastmtl``):

* ``aspp_project(branches, weight, bias, scale=None, shift=None, relu=False) -> out``
* ``aspp_project_backward(grad, out, branches, weight, bias, scale, preact, relu)
  -> (grad_branches, grad_weight, grad_bias, grad_affine)``

both with fake (meta) kernels and FLOP formulas; ``aspp_project`` has an autograd formula that
calls ``aspp_project_backward`` (no double backward). Each op runs the Triton kernels
(:func:`aspp_project_forward_triton`, :func:`aspp_project_backward_triton`) when
:func:`fastmtl.kernels.dispatch.use_triton` says so and the plain-PyTorch references
(:func:`aspp_project_reference`, :func:`aspp_project_backward_reference`) otherwise.

Layouts: any strides; NCHW and channels_last are read in place (``H*W`` flattens to one pixel
axis), other layouts are copied first. Outputs are channels_last when ``branches[0]`` is
channels_last (and not also NCHW-contiguous), NCHW otherwise.

Modules: :mod:`.reference` (the plain-PyTorch references and the output layout rule),
:mod:`.kernels` (the ``@triton.jit`` kernels), :mod:`.launch` (their launchers: tile sizes,
grids, buffers), :mod:`.op` (the ``torch.library`` ops: checks, fake kernels, autograd, FLOP
formulas), :mod:`.probe` (the self-check problem of :mod:`fastmtl.kernels.selfcheck`).
"""
from .launch import MAX_BRANCHES_PER_LAUNCH, aspp_project_backward_triton, aspp_project_forward_triton
from .op import aspp_project, aspp_project_backward
from .probe import aspp_project_probe
from .reference import aspp_project_backward_reference, aspp_project_reference

__all__ = [
    "MAX_BRANCHES_PER_LAUNCH", "aspp_project", "aspp_project_backward", "aspp_project_backward_reference",
    "aspp_project_backward_triton", "aspp_project_forward_triton", "aspp_project_probe", "aspp_project_reference",
]
