"""Find fastmtl's fusable patterns in a ``torch.fx`` graph by what they compute, not by names.

Two patterns (see :func:`match_se` and :func:`match_gated_conv`)::

    squeeze-and-excitation   x * gate(fc2(act(fc1(mean_hw(x)))))
    gated convolution        conv(x) * sigmoid(conv'(x))

``fc1``/``fc2`` are 1x1 convolutions or linears (``call_module`` of an ``nn.Conv2d`` /
``nn.Linear`` whose ``forward`` is torch's, or ``call_function`` of ``conv2d`` / ``linear``);
everything between them -- the squeeze, reshapes, the activation, the gate -- is a *region*:
the nodes computed from one start node (plus ``x``'s shape) alone. A region qualifies by
**probing**: it is replayed on random fp64 values (several trials, parameter-free modules in
both train and eval mode) and must agree with exactly one candidate function (``mean_hw``;
an activation of :data:`fastmtl.kernels.se_scale.ACTIVATIONS`; a gate of ``GATES``). So
``nn.SiLU``, ``F.silu``, ``x * x.sigmoid()``, timm's ``Sigmoid``/``HardSigmoid`` classes,
``F.relu6(x + 3) / 6`` and ``nn.Identity`` steps in between are all recognised by what they
compute; a region holding a module with parameters or buffers (a BatchNorm) never is.

The same matchers serve :func:`fastmtl.nn.fuse` (an ``fx.symbolic_trace`` of one block,
``info`` = the values of a probe run) and :mod:`fastmtl.nn.compiler` (the graph Dynamo hands
to a backend, ``info`` = each node's fake ``example_value``).
"""
from __future__ import annotations

import contextlib
import inspect
import operator
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from fastmtl.kernels.se_scale import ACTIVATIONS, GATES

Ref = Union[fx.Node, str, None]
"""A weight or bias: a graph node (placeholder / get_attr), a parameter path in the traced
module (``"fc1.weight"``), or None for a missing bias."""
Info = Callable[[fx.Node], Optional[torch.Tensor]]
"""The (real or fake) tensor a node produced, or None when it is not a tensor."""

_MULS = {operator.mul, torch.mul, torch.Tensor.mul}
_CONVS = {torch.conv2d}  # F.conv2d is torch.conv2d
_LINEARS = {F.linear}
_CONV_SIGNATURE = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
    ("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None), ("stride", 1),
    ("padding", 0), ("dilation", 1), ("groups", 1))])
_LINEAR_SIGNATURE = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d) for n, d in (
    ("input", inspect.Parameter.empty), ("weight", inspect.Parameter.empty), ("bias", None))])
_TRIALS = 4
_TOL = dict(rtol=1e-7, atol=1e-9)


@dataclass(frozen=True)
class Layer:
    """A convolution or linear node: ``kind`` ``"conv"``/``"linear"``, its data ``input``, its
    ``weight``/``bias`` refs and (convs) ``stride``/``padding``/``dilation``/``groups`` as pairs."""

    node: fx.Node
    kind: str
    input: fx.Node
    weight: Ref
    bias: Ref
    weight_shape: Tuple[int, ...]
    stride: Tuple[int, int] = (1, 1)
    padding: Union[Tuple[int, int], str] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def pointwise(self) -> bool:
        """A linear, or a 1x1 convolution that is one: stride 1, no padding, no groups."""
        if self.kind == "linear":
            return len(self.weight_shape) == 2
        return (self.weight_shape[2:] == (1, 1) and self.stride == (1, 1) and self.padding in ((0, 0), "valid")
                and self.groups == 1)


@dataclass
class SEMatch:
    """``mul = x * gate(fc2(act(fc1(mean_hw(x)))))``; ``nodes``: every node the pattern computes."""

    mul: fx.Node
    x: fx.Node
    fc1: Layer
    fc2: Layer
    act: str
    gate: str
    nodes: Set[fx.Node] = field(default_factory=set)


@dataclass
class GatedConvMatch:
    """``mul = features(x) * sigmoid(attention(x))``, two bias-free convs of one geometry."""

    mul: fx.Node
    x: fx.Node
    features: Layer
    attention: Layer
    nodes: Set[fx.Node] = field(default_factory=set)


def _pair(v) -> Union[Tuple[int, int], str]:
    if isinstance(v, str):
        return v
    return tuple(v) * (2 // len(v)) if isinstance(v, (tuple, list)) else (v, v)


def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    """Concrete sizes (a symbolic size gives its hint, without adding a guard: matching must
    not specialise a dynamic graph)."""
    return tuple(s if isinstance(s, int) else s.node.hint for s in t.shape)


def _numel(t: torch.Tensor) -> int:
    return int(torch.Size(_shape(t)).numel())


def layer_of(node: fx.Node, gm: fx.GraphModule, info: Info) -> Optional[Layer]:
    """The :class:`Layer` ``node`` runs, or None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if len(node.args) != 1 or node.kwargs or not isinstance(m, (nn.Conv2d, nn.Linear)):
            return None
        bias = f"{node.target}.bias" if m.bias is not None else None
        if type(m).forward is nn.Conv2d.forward and isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
            return Layer(node, "conv", node.args[0], f"{node.target}.weight", bias, tuple(m.weight.shape),
                         _pair(m.stride), _pair(m.padding), _pair(m.dilation), m.groups)
        if type(m).forward is nn.Linear.forward and isinstance(m, nn.Linear):
            return Layer(node, "linear", node.args[0], f"{node.target}.weight", bias, tuple(m.weight.shape))
        return None
    if node.op != "call_function" or node.target not in _CONVS | _LINEARS:
        return None
    signature = _CONV_SIGNATURE if node.target in _CONVS else _LINEAR_SIGNATURE
    try:
        a = signature.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    a.apply_defaults()
    a = a.arguments
    weight, bias = a["weight"], a["bias"]
    if not isinstance(a["input"], fx.Node) or not isinstance(weight, fx.Node) or not isinstance(bias, (fx.Node, type(None))):
        return None
    w = info(weight)
    if w is None:
        return None
    if node.target in _LINEARS:
        return Layer(node, "linear", a["input"], weight, bias, _shape(w))
    if not all(isinstance(v, (int, tuple, list, str)) for v in (a["stride"], a["padding"], a["dilation"])):
        return None  # symbolic geometry
    return Layer(node, "conv", a["input"], weight, bias, _shape(w), _pair(a["stride"]), _pair(a["padding"]),
                 _pair(a["dilation"]), a["groups"])


def _is_size_input(node: fx.Node) -> bool:
    """A placeholder that holds a symbolic size (Dynamo's dynamic shapes)."""
    return node.op == "placeholder" and isinstance(node.meta.get("example_value"), torch.SymInt)


def _walk_back(end: fx.Node, x: fx.Node, gm: fx.GraphModule, info: Info):
    """The region that computes ``end`` from ``x`` and layer outputs: ``(nodes, layers)``, or
    None when it also reads a weight, an input or a stateful module. Layers stop the walk."""
    nodes: Set[fx.Node] = set()
    layers: Dict[fx.Node, Layer] = {}
    todo = [end]
    while todo:
        n = todo.pop()
        if n is x or n in nodes or n in layers or _is_size_input(n):
            continue
        layer = layer_of(n, gm, info)
        if layer is not None:
            layers[n] = layer
            continue
        if n.op in ("placeholder", "get_attr", "output"):
            return None
        if n.op == "call_module" and has_state(gm.get_submodule(n.target)):
            return None
        nodes.add(n)
        todo.extend(n.all_input_nodes)
    return nodes, list(layers.values())


def has_state(m: nn.Module, recurse: bool = True) -> bool:
    """Whether ``m`` holds parameters or buffers (its own only, with ``recurse=False``)."""
    return any(True for _ in m.parameters(recurse=recurse)) or any(True for _ in m.buffers(recurse=recurse))


@contextlib.contextmanager
def private_rng(device: torch.device) -> Iterator[None]:
    """Random draws inside go to a forked RNG (CPU, and ``device`` if CUDA): the global state stays."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@contextlib.contextmanager
def _modes(modules: Sequence[nn.Module], training: bool) -> Iterator[None]:
    saved = [m.training for m in modules]
    try:
        for m in modules:
            m.training = training
        yield
    finally:
        for m, t in zip(modules, saved):
            m.training = t


def _replay(gm: fx.GraphModule, nodes: Set[fx.Node], env: Dict[fx.Node, object], out: fx.Node):
    """Evaluate ``nodes`` (graph order) from the values in ``env``; the value of ``out``."""
    env = dict(env)
    for n in gm.graph.nodes:
        if n not in nodes:
            continue
        args, kwargs = fx.node.map_arg((n.args, n.kwargs), env.__getitem__)
        if n.op == "call_function":
            env[n] = n.target(*args, **kwargs)
        elif n.op == "call_method":
            env[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
        else:  # call_module (stateless, see _walk_back)
            env[n] = gm.get_submodule(n.target)(*args, **kwargs)
    return env[out]


def _probe(gm: fx.GraphModule, nodes: Set[fx.Node], start: Optional[fx.Node], start_like: Optional[torch.Tensor],
           out: fx.Node, x: fx.Node, x_like: torch.Tensor, candidates: Dict[str, Callable]) -> Optional[str]:
    """The one candidate ``f`` with ``region(v) == f(v)`` (flattened) on every trial, or None.

    ``start`` is the region's input (None: the region reads ``x`` alone and candidates take x).
    Random ops in the region (dropout) draw from a forked RNG: the global one is not touched."""
    with private_rng(x_like.device):
        return _probe_trials(gm, nodes, start, start_like, out, x, x_like, candidates)


def _probe_trials(gm, nodes, start, start_like, out, x, x_like, candidates) -> Optional[str]:
    g = torch.Generator().manual_seed(0)
    modules = [gm.get_submodule(n.target) for n in nodes if n.op == "call_module"]
    sizes = {n: n.meta["example_value"].node.hint for n in gm.graph.nodes if _is_size_input(n)}
    alive = dict(candidates)
    for trial in range(_TRIALS):
        px = torch.randn(_shape(x_like), generator=g, dtype=torch.float64).to(x_like.device)
        env = {x: px, **sizes}
        v = px
        if start is not None:
            v = torch.empty(_shape(start_like), dtype=torch.float64).uniform_(-8, 8, generator=g)
            if trial == 0:
                v.view(-1)[:3] = torch.tensor([-3.0, 0.0, 3.0])[: v.numel()]
            v = v.to(start_like.device)
            env[start] = v
        for training in (True, False):
            try:
                with _modes(modules, training), torch.no_grad():
                    got = _replay(gm, nodes, {k: (t.clone() if isinstance(t, torch.Tensor) else t) for k, t in env.items()}, out)
            except Exception:  # a region that cannot run on the probe is not one of ours
                return None
            if not isinstance(got, torch.Tensor):
                return None
            for name, fn in list(alive.items()):
                want = fn(v)
                if got.numel() != want.numel() or not torch.allclose(got.double().reshape(-1), want.reshape(-1), **_TOL):
                    del alive[name]
    return next(iter(alive)) if len(alive) == 1 else None


def _tensor(info: Info, node: fx.Node, dim: Optional[int] = None) -> Optional[torch.Tensor]:
    t = info(node) if isinstance(node, fx.Node) else None
    if not isinstance(t, torch.Tensor) or (dim is not None and t.dim() != dim) or not t.is_floating_point():
        return None
    return t


def _mul_args(node: fx.Node) -> Optional[Tuple[fx.Node, fx.Node]]:
    is_mul = (node.op == "call_function" and node.target in _MULS) or (node.op == "call_method" and node.target == "mul")
    if not is_mul or len(node.args) != 2 or node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
        return None
    return node.args[0], node.args[1]


def _mean_hw(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))


def match_se(mul: fx.Node, gm: fx.GraphModule, info: Info) -> Optional[SEMatch]:
    """``mul`` as ``x * gate(fc2(act(fc1(mean_hw(x)))))`` (either operand order), or None."""
    args = _mul_args(mul)
    if args is None:
        return None
    for x, g in (args, args[::-1]):
        xt, gt = _tensor(info, x, 4), _tensor(info, g)
        if xt is None or gt is None or _shape(gt) != _shape(xt)[:2] + (1, 1):
            continue
        gate_side = _walk_back(g, x, gm, info)
        if gate_side is None or len(gate_side[1]) != 1:
            continue
        fc2 = gate_side[1][0]
        act_side = _walk_back(fc2.input, x, gm, info)
        if act_side is None or len(act_side[1]) != 1:
            continue
        fc1 = act_side[1][0]
        squeeze = _walk_back(fc1.input, x, gm, info)
        if squeeze is None or squeeze[1] or not squeeze[0]:
            continue
        if not (fc1.pointwise and fc2.pointwise and fc1.kind == fc2.kind):
            continue
        n, c = _shape(xt)[:2]
        cr = fc1.weight_shape[0]
        if fc1.weight_shape[:2] != (cr, c) or fc2.weight_shape[:2] != (c, cr):
            continue
        if _probe(gm, squeeze[0], None, None, fc1.input, x, xt, {"mean": _mean_hw}) is None:
            continue
        u, z = _tensor(info, fc1.node), _tensor(info, fc2.node)
        if u is None or z is None or _numel(u) != n * cr or _numel(z) != n * c:
            continue
        act = _probe(gm, act_side[0], fc1.node, u, fc2.input, x, xt, ACTIVATIONS) if act_side[0] else None
        gate = _probe(gm, gate_side[0], fc2.node, z, g, x, xt, GATES) if gate_side[0] else None
        if act is None or gate is None:
            continue
        nodes = {mul, fc1.node, fc2.node, *squeeze[0], *act_side[0], *gate_side[0]}
        nodes |= {r for f in (fc1, fc2) for r in (f.weight, f.bias) if isinstance(r, fx.Node)}
        return SEMatch(mul, x, fc1, fc2, act, gate, nodes)
    return None


def match_gated_conv(mul: fx.Node, gm: fx.GraphModule, info: Info) -> Optional[GatedConvMatch]:
    """``mul`` as ``conv(x) * sigmoid(conv'(x))`` (either order), both convs bias-free with one
    geometry and weight shape and no groups; or None."""
    args = _mul_args(mul)
    if args is None:
        return None
    for f, s in (args, args[::-1]):
        features = layer_of(f, gm, info)
        if features is None or features.kind != "conv":
            continue
        x = features.input
        xt, ft = _tensor(info, x, 4), _tensor(info, f, 4)
        gate_side = _walk_back(s, x, gm, info)
        if xt is None or ft is None or gate_side is None or len(gate_side[1]) != 1 or not gate_side[0]:
            continue
        attention = gate_side[1][0]
        same = attention.kind == "conv" and attention.input is x and attention.node is not f and all(
            getattr(features, k) == getattr(attention, k) for k in ("weight_shape", "stride", "padding", "dilation", "groups"))
        if not same or features.groups != 1 or features.bias is not None or attention.bias is not None:
            continue
        at = _tensor(info, attention.node, 4)
        if at is None or _probe(gm, gate_side[0], attention.node, at, s, x, xt, {"sigmoid": torch.sigmoid}) is None:
            continue
        nodes = {mul, f, attention.node, *gate_side[0]} | {r for r in (features.weight, attention.weight) if isinstance(r, fx.Node)}
        return GatedConvMatch(mul, x, features, attention, nodes)
    return None


def residual_tail(node: fx.Node, gm: fx.GraphModule, info: Info, relu: bool):
    """When ``node``'s only use is ``node + r`` (``+=`` included) -- and, with ``relu``, that
    sum's only use a ReLU -- return ``(r, last)``: the residual and the node the tail ends at."""
    if len(node.users) != 1:
        return None
    add = next(iter(node.users))
    is_add = (add.op == "call_function" and add.target in (operator.add, operator.iadd, torch.add)) or (
        add.op == "call_method" and add.target in ("add", "add_"))
    if not is_add or len(add.args) != 2 or add.kwargs:
        return None
    r = add.args[1] if add.args[0] is node else add.args[0]
    nt, rt = _tensor(info, node, 4), _tensor(info, r, 4)
    if r is node or nt is None or rt is None or _shape(rt) != _shape(nt) or rt.dtype != nt.dtype:
        return None
    if not relu:
        return r, add
    if len(add.users) != 1:
        return None
    last = next(iter(add.users))
    if len(last.all_input_nodes) != 1 or last.op not in ("call_function", "call_method", "call_module"):
        return None
    if last.op == "call_module" and has_state(gm.get_submodule(last.target)):
        return None
    at = _tensor(info, add)
    return (r, last) if _probe(gm, {last}, add, at, last, add, at, {"relu": torch.relu}) else None
