"""fastmtl's Triton kernels (installed as ``fastmtl.kernels``).

One file per op: Triton kernels, launcher, ``torch.library`` registration in the
``fastmtl`` namespace (forward, backward, fake, flop formula) and the plain-PyTorch
reference. :mod:`fastmtl.kernels.dispatch` picks the implementation per call.
"""
from .dispatch import HAS_TRITON, kernel_mode, kernels_available, use_triton  # noqa: F401
