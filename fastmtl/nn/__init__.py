"""Fused drop-in modules (same constructor and ``state_dict`` as :mod:`fastmtl.models.heads`)
and :func:`fuse`, which swaps them into an existing model.

The modules run fastmtl's Triton kernels or their plain-PyTorch references per call, as
``FASTMTL_KERNELS`` says (see :mod:`fastmtl.kernels.dispatch`).
"""
from .aspp import ASPP
from .attention import SelfAttention
from .fuse import fuse
from .losses import SILogLoss
from .se import SqueezeExcitation

__all__ = ["ASPP", "SILogLoss", "SelfAttention", "SqueezeExcitation", "fuse"]
