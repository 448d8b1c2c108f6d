"""Fused drop-in modules ``Fused*`` (same constructor and ``state_dict`` as their references in :mod:`fastmtl.layers`),
:func:`fuse`, which swaps fused modules into an existing model, and :func:`compile`, which
puts fastmtl's ops into ``torch.compile``'s graphs instead.

The modules run fastmtl's Triton kernels or their plain-PyTorch references per call, as
``FASTMTL_KERNELS`` says (see :mod:`fastmtl.kernels.dispatch`).
"""
from .aspp import FusedASPP
from .attention import FusedGatedConv, FusedSelfAttention
from .bn_relu import FusedBatchNormReLU
from .compiler import FusedBackend, compile, rewrite_graph
from .fuse import fuse
from .losses import SILogLoss
from .se import FusedSEBlock, FusedSqueezeExcitation

__all__ = ["FusedASPP", "FusedBackend", "FusedBatchNormReLU", "FusedGatedConv", "FusedSEBlock", "FusedSelfAttention", "FusedSqueezeExcitation",
           "SILogLoss", "compile", "fuse", "rewrite_graph"]
