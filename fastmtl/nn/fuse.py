"""``fuse(model)``: swap reference and look-alike blocks for fastmtl's fused modules, in place."""
from __future__ import annotations

import itertools
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from fastmtl.models import heads

from .aspp import ASPP
from .attention import SelfAttention
from .se import SqueezeExcitation

_FUSED = (SqueezeExcitation, SelfAttention, ASPP)
_PROBE_TOL = {torch.float64: 1e-7, torch.float32: 5e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def fuse(model: nn.Module, verify: bool = True) -> int:
    """Swap, in place, the sub-modules of ``model`` that have a fused twin; return how many.

    Recognised (the root module itself is never swapped):

    1. :class:`fastmtl.models.heads.SqueezeExcitation`, ``SelfAttention`` and ``ASPP`` (exact
       types) -> :class:`fastmtl.nn.SqueezeExcitation`, ``SelfAttention``, ``ASPP``.
    2. A foreign squeeze-and-excitation block: children ``fc1`` and ``fc2``, both 1x1
       ``Conv2d`` (stride 1, no padding, dilation or groups) or both ``Linear``, with bias,
       ``C -> Cr`` and ``Cr -> C``; any other children are parameter-free ``ReLU``,
       ``Sigmoid`` or ``AdaptiveAvgPool2d(1)``; no parameters or buffers of its own; and
       ``forward(x) == x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` (e.g. torchvision's
       ``SqueezeExcitation`` with its default activations) -> ``fastmtl.nn.SqueezeExcitation``.
    3. A foreign attention block: children ``conv`` and ``attention``, both bias-free 3x3
       ``Conv2d`` ``in_ch -> out_ch`` (stride 1, padding 1, no dilation or groups); any
       other children are parameter-free ``Sigmoid``; no parameters or buffers of its own;
       and ``forward(x) == conv(x) * sigmoid(attention(x))`` -> ``fastmtl.nn.SelfAttention``.

    Not recognised, because the swap would change the ``state_dict`` or the computation is
    not inside the block: a ``Sequential(AdaptiveAvgPool2d(1), Conv2d, ReLU, Conv2d,
    Sigmoid)`` gate (its parent does the multiply; its keys are ``1.weight`` ...), SE blocks
    whose layers sit in a ``Sequential`` (``fc.0.weight`` ...) or have no bias, and attention
    convs with bias.

    The fused module takes over the original's child modules -- the same ``Parameter`` and
    buffer objects, so the ``state_dict`` (keys and values), device, dtype,
    ``requires_grad`` and any optimizer holding them are unchanged -- and its train/eval
    flag. Hooks registered on a swapped module itself are not carried over. A module that
    appears several times in the model is swapped for one shared fused module (counted once).

    ``verify`` (default True): before swapping a foreign block (2., 3.), run it and its
    fused twin on a small random input (no grad; a private generator, the global RNG is not
    touched) and swap only if the outputs agree (fp32 to 5e-3). This needs real weights
    (not on the meta device); ``verify=False`` trusts the structure alone.
    """
    memo: Dict[int, Tuple[nn.Module, Optional[nn.Module]]] = {}

    def visit(module: nn.Module) -> None:
        for name, child in list(module._modules.items()):  # named_children() skips repeats
            if child is None:
                continue
            if id(child) not in memo:
                memo[id(child)] = (child, _fused_twin(child, verify))
                if memo[id(child)][1] is None:
                    visit(child)
            new = memo[id(child)][1]
            if new is not None:
                setattr(module, name, new)

    visit(model)
    return sum(new is not None for _, new in memo.values())


def _fused_twin(m: nn.Module, verify: bool) -> Optional[nn.Module]:
    """The fused module that replaces ``m``, or None."""
    kind = type(m)
    if kind is heads.SqueezeExcitation:
        return _adopt(SqueezeExcitation, (m.fc1.in_channels,), m, ("fc1", "fc2"))
    if kind is heads.SelfAttention:
        return _adopt(SelfAttention, (m.conv.in_channels, m.conv.out_channels), m, ("conv", "attention"))
    if kind is heads.ASPP:
        first = m.convs[0][0]
        return _adopt(ASPP, (first.in_channels, first.out_channels, m.rates, m.project[3].p), m, ("convs", "pool", "project"))
    if isinstance(m, _FUSED):
        return None
    channels = _se_channels(m)
    if channels is not None:
        new = _adopt(SqueezeExcitation, (channels,), m, ("fc1", "fc2"))
        return new if not verify or _same_output(m, new, channels) else None
    channels = _attention_channels(m)
    if channels is not None:
        new = _adopt(SelfAttention, (channels, m.conv.out_channels), m, ("conv", "attention"))
        return new if not verify or _same_output(m, new, channels) else None
    return None


def _adopt(cls, args: Sequence, old: nn.Module, children: Sequence[str]) -> nn.Module:
    """``cls(*args)`` built on the meta device that takes over ``old``'s ``children`` and
    train/eval flag."""
    with torch.device("meta"):
        new = cls(*args)
    for name in children:
        setattr(new, name, getattr(old, name))
    new.training = old.training
    if _has_meta(new) and not _has_meta(old):
        raise RuntimeError(f"fuse: {cls.__name__} has state that {type(old).__name__} does not provide")
    if list(new.state_dict()) != list(old.state_dict()):
        raise RuntimeError(f"fuse: {cls.__name__} would change the state_dict keys of {type(old).__name__}")
    return new


def _has_meta(m: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(m.parameters(), m.buffers()))


def _stateless_extras(m: nn.Module, core: Sequence[str], allowed) -> bool:
    """``m`` has no parameters or buffers of its own, and its children other than ``core``
    are parameter-free modules accepted by ``allowed``."""
    if any(True for _ in itertools.chain(m.parameters(recurse=False), m.buffers(recurse=False))):
        return False
    extras = [c for n, c in m.named_children() if n not in core]
    return all(allowed(c) and not any(True for _ in itertools.chain(c.parameters(), c.buffers())) for c in extras)


def _is_global_pool(c: nn.Module) -> bool:
    return isinstance(c, nn.AdaptiveAvgPool2d) and c.output_size in (1, (1, 1))


def _se_channels(m: nn.Module) -> Optional[int]:
    """C when ``m`` has the structure of a foreign SE block (see :func:`fuse`), else None."""
    fc1, fc2 = m._modules.get("fc1"), m._modules.get("fc2")
    if isinstance(fc1, nn.Conv2d) and isinstance(fc2, nn.Conv2d):
        if not all(_is_pointwise(c) for c in (fc1, fc2)):
            return None
        c, cr, c2, cr2 = fc1.in_channels, fc1.out_channels, fc2.out_channels, fc2.in_channels
    elif type(fc1) is nn.Linear and type(fc2) is nn.Linear:
        if fc1.bias is None or fc2.bias is None:
            return None
        c, cr, c2, cr2 = fc1.in_features, fc1.out_features, fc2.out_features, fc2.in_features
    else:
        return None
    if (c, cr) != (c2, cr2):
        return None
    allowed = lambda e: isinstance(e, (nn.ReLU, nn.Sigmoid)) or _is_global_pool(e)  # noqa: E731
    return c if _stateless_extras(m, ("fc1", "fc2"), allowed) else None


def _is_pointwise(c: nn.Conv2d) -> bool:
    return (c.kernel_size, c.stride, c.padding, c.dilation, c.groups) == ((1, 1), (1, 1), (0, 0), (1, 1), 1) and (
        c.bias is not None and c.padding_mode == "zeros"
    )


def _attention_channels(m: nn.Module) -> Optional[int]:
    """in_ch when ``m`` has the structure of a foreign attention block (see :func:`fuse`)."""
    conv, att = m._modules.get("conv"), m._modules.get("attention")
    if not (isinstance(conv, nn.Conv2d) and isinstance(att, nn.Conv2d)):
        return None
    for c in (conv, att):
        if (c.kernel_size, c.stride, c.padding, c.dilation, c.groups) != ((3, 3), (1, 1), (1, 1), (1, 1), 1):
            return None
        if c.bias is not None or c.padding_mode != "zeros":
            return None
    if (conv.in_channels, conv.out_channels) != (att.in_channels, att.out_channels):
        return None
    if not _stateless_extras(m, ("conv", "attention"), lambda e: isinstance(e, nn.Sigmoid)):
        return None
    return conv.in_channels


def _same_output(old: nn.Module, new: nn.Module, channels: int) -> bool:
    """Whether ``old(x)`` and ``new(x)`` agree on a small random ``(2, channels, 5, 6)`` probe."""
    p = next(old.parameters())
    x = torch.randn(2, channels, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.to(device=p.device, dtype=p.dtype)
    try:
        with torch.no_grad():
            a, b = old(x), new(x)
    except Exception:  # a block whose forward takes other arguments is not a look-alike
        return False
    tol = _PROBE_TOL.get(p.dtype, 1e-3)
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)
