"""Fused drop-in modules (same constructor and ``state_dict`` as :mod:`fastmtl.models.heads`),
:func:`fuse`, which swaps fused modules into an existing model, and :func:`compile`, which
puts fastmtl's ops into ``torch.compile``'s graphs instead.

The modules run fastmtl's Triton kernels or their plain-PyTorch references per call, as
``FASTMTL_KERNELS`` says (see :mod:`fastmtl.kernels.dispatch`).
"""
from .aspp import ASPP
from .attention import FusedGatedConv, SelfAttention
from .compiler import FusedBackend, compile, rewrite_graph
from .fuse import fuse
from .losses import SILogLoss
from .se import FusedSqueezeExcitation, SqueezeExcitation

__all__ = ["ASPP", "FusedBackend", "FusedGatedConv", "FusedSqueezeExcitation", "SILogLoss", "SelfAttention",
           "SqueezeExcitation", "compile", "fuse", "rewrite_graph"]
