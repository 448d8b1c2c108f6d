"""``fuse(model)``: swap fastmtl's reference blocks, and any block that computes the same thing,
for fused modules, in place."""
from __future__ import annotations

import collections
import inspect
import itertools
from typing import Counter, Dict, List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from fastmtl import layers

from .aspp import FusedASPP
from .attention import FusedGatedConv, FusedSelfAttention
from .bn_relu import FusedBatchNormReLU
from .patterns import GatedConvMatch, SEMatch, has_state, match_gated_conv, match_se, private_rng
from .se import FusedSEBlock, FusedSqueezeExcitation

_FUSED = (FusedSqueezeExcitation, FusedSelfAttention, FusedASPP, FusedSEBlock, FusedGatedConv, FusedBatchNormReLU)
_PROBE_TOL = {torch.float64: 1e-7, torch.float32: 5e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def fuse(model: nn.Module, verify: bool = True) -> int:
    """Swap, in place, the sub-modules of ``model`` that have a fused twin; return how many.

    Recognised (the root module itself is never swapped):

    1. :class:`fastmtl.layers.SqueezeExcitation`, ``SelfAttention`` and ``ASPP`` (exact
       types) -> :class:`fastmtl.nn.FusedSqueezeExcitation`, ``FusedSelfAttention``, ``FusedASPP``.
    2. Any block whose ``forward(x)`` computes ``x * gate(fc2(act(fc1(mean_hw(x)))))``
       -> :class:`fastmtl.nn.FusedSEBlock`, or ``conv(x) * sigmoid(conv'(x))``
       -> :class:`fastmtl.nn.FusedGatedConv`. The block is traced with ``torch.fx`` (modules
       without children stay whole) and its graph must be exactly that pattern, as
       :mod:`fastmtl.nn.patterns` defines it: ``fc1``/``fc2`` 1x1 ``Conv2d`` or ``Linear``
       (bias or not) anywhere among its children (``fc.0``, ``conv_reduce`` ...); the squeeze,
       activation (relu / silu / exact gelu / hardswish) and gate (sigmoid / hardsigmoid)
       recognised by probing what they compute, whatever module or function does it; the
       attention convs bias-free with one geometry. Blocks with anything else in them (a
       BatchNorm that is not ``Identity``, another activation, a conv bias on the attention,
       a second input, extra arithmetic) are left alone.
    3. An ``nn.BatchNorm2d`` (exact type: never a ``SyncBatchNorm``) whose output only an
       ``nn.ReLU`` reads -> :class:`fastmtl.nn.FusedBatchNormReLU`, which applies the ReLU too:
       in an ``nn.Sequential``, a BatchNorm2d directly followed by an ``nn.ReLU`` (exact types;
       the ReLU's slot becomes ``nn.Identity``: conv-BN-ReLU stacks such as
       :func:`fastmtl.layers.conv_bn_relu`, the ASPP branches, timm/SMP-style Sequentials); in
       a block whose class itself lists the names of such BatchNorm children in a ``relu_after``
       class attribute (the block applies them with :func:`fastmtl.layers.bn_relu`; fastmtl's
       ResNet stem and blocks do). A BatchNorm held in more than one place is left alone. The
       pair counts as one swap. Inside swapped modules of kind 1 and 2 (e.g. the ASPP branches
       of a ``FusedASPP``) the search goes on.

    The fused module takes over the original's child modules under their names -- the same
    ``Parameter`` and buffer objects, so the ``state_dict`` (keys and values), device, dtype,
    ``requires_grad`` and any optimizer holding them are unchanged -- and its train/eval
    flag. Hooks registered on a swapped module itself are not carried over. A module that
    appears several times in the model is swapped for one shared fused module (counted once).

    ``verify`` (default True): before swapping a block of kind 2, run it and its fused twin on
    a small random input, in train and in eval mode (no grad; the global RNG is not touched),
    and swap only if the outputs agree (fp32 to 5e-3). Recognising a block of kind 2 runs it
    on a probe too, so it needs real weights (not the meta device). ``verify=False`` skips
    only the final comparison.
    """
    memo: Dict[int, Tuple[nn.Module, Optional[nn.Module]]] = {}
    places = _places(model)

    def visit(module: nn.Module) -> None:
        for name, relu in _bn_relu_slots(module, places):
            bn = module._modules[name]
            memo[id(bn)] = (bn, _adopt_batch_norm(bn))
            setattr(module, name, memo[id(bn)][1])
            if relu is not None:
                setattr(module, relu, nn.Identity())
        for name, child in list(module._modules.items()):  # named_children() skips repeats
            if child is None:
                continue
            if id(child) not in memo:
                memo[id(child)] = (child, _fused_twin(child, verify))
                visit(memo[id(child)][1] or child)
            new = memo[id(child)][1]
            if new is not None:
                setattr(module, name, new)

    visit(model)
    return sum(new is not None for _, new in memo.values())


def _fused_twin(m: nn.Module, verify: bool) -> Optional[nn.Module]:
    """The fused module that replaces ``m``, or None."""
    kind = type(m)
    if kind is layers.SqueezeExcitation:
        return _adopt(FusedSqueezeExcitation, (m.fc1.in_channels,), m, ("fc1", "fc2"))
    if kind is layers.SelfAttention:
        return _adopt(FusedSelfAttention, (m.conv.in_channels, m.conv.out_channels), m, ("conv", "attention"))
    if kind is layers.ASPP:
        first = m.convs[0][0]
        return _adopt(FusedASPP, (first.in_channels, first.out_channels, m.rates, m.project[3].p), m, ("convs", "pool", "project"))
    if isinstance(m, _FUSED) or not _traceable_leaves(m):
        return None
    traced = _trace(m)
    if traced is None:
        return None
    for channels in _channel_candidates(traced):
        x = _probe_input(m, channels)
        new = _twin_by_computation(m, traced, x)
        if new is not None:
            return new if not verify or _same_output(m, new, x) else None
    return None


def _places(model: nn.Module) -> Counter[int]:
    """How many child slots (parent module, name) hold each module of ``model``, by ``id``."""
    return collections.Counter(id(c) for m in model.modules() for c in m._modules.values() if c is not None)


def _bn_relu_slots(module: nn.Module, places: Counter[int]) -> List[Tuple[str, Optional[str]]]:
    """``(BatchNorm2d child name, name of the ReLU slot that becomes Identity or None)`` of each
    kind-3 pair of ``module`` (see :func:`fuse`) whose BatchNorm sits in this one slot only."""
    children = module._modules

    def lone_bn(name: Optional[str]) -> bool:
        child = children.get(name) if name is not None else None
        return type(child) is nn.BatchNorm2d and places[id(child)] == 1

    if type(module) is nn.Sequential:
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:]) if lone_bn(a) and type(children[b]) is nn.ReLU]
    return [(name, None) for name in vars(type(module)).get("relu_after", ()) if lone_bn(name)]


def _adopt_batch_norm(bn: nn.BatchNorm2d) -> FusedBatchNormReLU:
    """A :class:`FusedBatchNormReLU` built on the meta device that takes over ``bn``'s
    parameters, buffers (the same objects) and train/eval flag."""
    with torch.device("meta"):
        new = FusedBatchNormReLU(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name in itertools.chain(bn._parameters, bn._buffers):
        setattr(new, name, getattr(bn, name))
    new.training = bn.training
    _check_same_keys(new, bn)
    return new


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
    _check_same_keys(new, old)
    return new


def _check_same_keys(new: nn.Module, old: nn.Module) -> None:
    if list(new.state_dict()) != list(old.state_dict()):
        raise RuntimeError(f"fuse: {type(new).__name__} would change the state_dict keys of {type(old).__name__}")


def _has_meta(m: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(m.parameters(), m.buffers()))


def _traceable_leaves(m: nn.Module) -> bool:
    """No state of its own, and every module without children in it is a ``Conv2d``/``Linear``
    or stateless -- so running it on a probe changes nothing (no BatchNorm statistics)."""
    if has_state(m, recurse=False) or not m._modules or _has_meta(m):
        return False
    leaves = [c for c in m.modules() if not c._modules and c is not m]
    return all(isinstance(c, (nn.Conv2d, nn.Linear)) or not has_state(c) for c in leaves)


class _LeafTracer(fx.Tracer):
    """Traces through containers; a module without children stays one ``call_module``."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return not m._modules


def _trace(m: nn.Module) -> Optional[fx.GraphModule]:
    """``m`` traced with one tensor input (other parameters fixed at their defaults), or None."""
    try:
        params = list(inspect.signature(m.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in kinds or any(p.default is inspect.Parameter.empty or p.kind
                                                        in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params[1:]):
        return None
    try:
        graph = _LeafTracer().trace(m, concrete_args={p.name: p.default for p in params[1:]})
    except Exception:  # data-dependent control flow and the like: not ours
        return None
    gm = fx.GraphModule(m, graph)
    gm.graph.eliminate_dead_code()
    return gm


def _channel_candidates(gm: fx.GraphModule) -> List[int]:
    """Input channel counts worth probing: those of the block's convs and linears."""
    seen: List[int] = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            c = gm.get_submodule(n.target)
            size = c.in_channels if isinstance(c, nn.Conv2d) else getattr(c, "in_features", None)
            if size is not None and size not in seen:
                seen.append(size)
    return seen


def _probe_input(m: nn.Module, channels: int) -> torch.Tensor:
    """A fixed random ``(2, channels, 5, 6)`` input in the block's dtype and device."""
    p = next(itertools.chain(m.parameters(), m.buffers()))
    x = torch.randn(2, channels, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x.to(device=p.device, dtype=p.dtype)


def _record(gm: fx.GraphModule, x: torch.Tensor) -> Optional[Dict[fx.Node, object]]:
    """Every node's value on the probe ``x`` (no grad, private RNG), or None if it fails."""
    values: Dict[fx.Node, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    try:
        with torch.no_grad(), private_rng(x.device):
            Recorder(gm).run(x)
    except Exception:  # e.g. the wrong channel count for this block
        return None
    return values


def _twin_by_computation(m: nn.Module, gm: fx.GraphModule, x: torch.Tensor) -> Optional[nn.Module]:
    """The fused wrapper for ``m`` when its whole traced graph is one recognised pattern."""
    values = _record(gm, x)
    if values is None:
        return None
    info = values.get
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        return None
    match = match_se(out, gm, info) or match_gated_conv(out, gm, info)
    if match is None or match.x is not inputs[0]:
        return None
    ignored = {fx._symbolic_trace._assert_is_none}  # checks of the arguments fixed by tracing
    rest = [n for n in gm.graph.nodes if n not in match.nodes and n.op not in ("placeholder", "output")
            and n.target not in ignored]
    if rest:
        return None
    if isinstance(match, SEMatch):
        weights = [_path(r) for f in (match.fc1, match.fc2) for r in (f.weight, f.bias)]
        new = FusedSEBlock(m, weights, match.act, match.gate)
    else:
        assert isinstance(match, GatedConvMatch)
        f = match.features
        new = FusedGatedConv(m, (_path(f.weight), _path(match.attention.weight)), f.stride, f.padding, f.dilation)
    _check_same_keys(new, m)
    return new


def _path(ref) -> Optional[str]:
    """A parameter path from a :data:`fastmtl.nn.patterns.Ref` of a traced block."""
    return ref.target if isinstance(ref, fx.Node) else ref


def _same_output(old: nn.Module, new: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``old(x)`` and ``new(x)`` agree, in train and in eval mode (no grad, private RNG)."""
    flags = [(mod, mod.training) for mod in itertools.chain(old.modules(), [new])]
    tol = _PROBE_TOL.get(x.dtype, 1e-3)
    try:
        for training in (True, False):
            old.train(training), new.train(training)
            with torch.no_grad(), private_rng(x.device):
                a, b = old(x), new(x)
            if not (isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)):
                return False
        return True
    except Exception:
        return False
    finally:
        for mod, flag in flags:
            mod.training = flag
