"""``fastmtl.nn.compile(model)``: ``torch.compile`` whose graphs get fastmtl's fused ops, with no
module swap.

:class:`FusedBackend` is a ``torch.compile`` backend. Dynamo hands it each captured graph (torch
functions; parameters are graph inputs); :func:`rewrite_graph` replaces, in place, the patterns
of :mod:`fastmtl.nn.patterns` by fastmtl's custom ops, and the inner backend (Inductor by
default) compiles the result. The ops carry their own autograd formulas, so AOTAutograd traces
their backward ops (``se_scale_backward``, ``sigmoid_gate_halves_backward``) into the backward graph.

Rewrites:

* ``x * gate(fc2(act(fc1(mean_hw(x)))))`` -> ``fastmtl::se_scale(x, w1, b1, w2, b2, act=, gate=)``;
  followed by ``relu(. + identity)`` (``+=`` too) -> ``se_scale(..., identity)``.
* ``conv(x, wf) * sigmoid(conv(x, wa))`` (bias-free, one geometry) -> one ``conv2d(x, cat(wf, wa))``
  and ``fastmtl::sigmoid_gate_halves`` on its output (its two channel halves); followed by ``+ r`` ->
  ``sigmoid_gate_halves(..., r)``.
"""
from __future__ import annotations

import collections
from typing import Callable, Dict, List, Union

import torch
from torch import fx, nn


from .patterns import GatedConvMatch, SEMatch, match_gated_conv, match_se, residual_tail

_INDUCTOR_PATCHES = {"reorder_for_peak_memory": False}  # see docs/kernels.md, "Known issue"


def _example(node: fx.Node):
    return node.meta.get("example_value")


def rewrite_graph(gm: fx.GraphModule) -> Dict[str, int]:
    """Replace the fusable patterns in a Dynamo graph ``gm`` (in place); return
    ``{"se_scale": n, "sigmoid_gate": m}``, the number of each op inserted."""
    counts: Dict[str, int] = collections.Counter()
    graph = gm.graph
    changed = True
    while changed:  # one rewrite at a time: each one removes nodes a later match may have used
        changed = False
        for node in graph.nodes:
            if node.users and _rewrite(gm, node, counts):
                graph.eliminate_dead_code()
                changed = True
                break
    gm.recompile()
    return {"se_scale": counts["se_scale"], "sigmoid_gate": counts["sigmoid_gate"]}


def _rewrite(gm: fx.GraphModule, node: fx.Node, counts) -> bool:
    se = match_se(node, gm, _example)
    if se is not None and _se_dtypes_ok(se):
        _replace_se(gm, se)
        counts["se_scale"] += 1
        return True
    gate = match_gated_conv(node, gm, _example)
    if gate is not None and isinstance(gate.features.weight, fx.Node) and isinstance(gate.attention.weight, fx.Node):
        _replace_gated_conv(gm, gate)
        counts["sigmoid_gate"] += 1
        return True
    return False


def _se_dtypes_ok(m: SEMatch) -> bool:
    """The op's contract: graph-node weights of one dtype."""
    refs = [r for f in (m.fc1, m.fc2) for r in (f.weight, f.bias) if r is not None]
    if not all(isinstance(r, fx.Node) and isinstance(_example(r), torch.Tensor) for r in refs):
        return False
    return len({_example(r).dtype for r in refs}) == 1


def _replace_se(gm: fx.GraphModule, m: SEMatch) -> None:
    tail = residual_tail(m.mul, gm, _example, relu=True)
    identity, last = tail if tail is not None and _example(tail[0]).dtype == _example(m.x).dtype else (None, m.mul)
    with gm.graph.inserting_before(last):
        new = gm.graph.call_function(torch.ops.fastmtl.se_scale.default, (
            m.x, m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, identity, m.act, m.gate))
    _replace(last, new)


def _replace_gated_conv(gm: fx.GraphModule, m: GatedConvMatch) -> None:
    tail = residual_tail(m.mul, gm, _example, relu=False)
    residual, last = tail if tail is not None else (None, m.mul)
    f = m.features
    g = gm.graph
    with g.inserting_before(last):
        weight = g.call_function(torch.cat, ([f.weight, m.attention.weight],))
        y = g.call_function(torch.conv2d, (m.x, weight, None, f.stride, f.padding, f.dilation, 1))
        new = g.call_function(torch.ops.fastmtl.sigmoid_gate_halves.default, (y, residual))
    _replace(last, new)


def _replace(old: fx.Node, new: fx.Node) -> None:
    """``new`` takes ``old``'s uses and its example value (same shape and dtype), which later
    matches read when ``new`` feeds them (a residual, an input)."""
    if "example_value" in old.meta:
        new.meta["example_value"] = old.meta["example_value"]
    old.replace_all_uses_with(new)


class FusedBackend:
    """A ``torch.compile`` backend: :func:`rewrite_graph`, then the ``inner`` backend.

    ``FusedBackend(inner="inductor")``: ``inner`` is a backend name (``"inductor"``,
    ``"aot_eager"``, ``"eager"``, ...) or a backend callable. With Inductor the rewritten graph
    compiles with ``reorder_for_peak_memory=False`` (the "Known issue" of docs/kernels.md).
    ``graphs`` / ``counts``: every rewritten graph and its :func:`rewrite_graph` counts, in
    compile order (for inspection and tests).
    """

    def __init__(self, inner: Union[str, Callable] = "inductor"):
        self.inner = inner
        self.graphs: List[fx.GraphModule] = []
        self.counts: List[Dict[str, int]] = []

    def __call__(self, gm: fx.GraphModule, example_inputs):
        self.counts.append(rewrite_graph(gm))
        self.graphs.append(gm)
        if self.inner == "inductor":
            from torch._inductor.compile_fx import compile_fx

            return compile_fx(gm, example_inputs, config_patches=_INDUCTOR_PATCHES)
        inner = torch._dynamo.lookup_backend(self.inner) if isinstance(self.inner, str) else self.inner
        return inner(gm, example_inputs)


def compile(model: Union[nn.Module, Callable], *, backend: Union[str, Callable] = "inductor",
            **kwargs) -> Union[nn.Module, Callable]:
    """``torch.compile(model, backend=FusedBackend(backend), **kwargs)``: any model, its
    squeeze-and-excitation and gated-conv patterns run as fastmtl ops; ``kwargs`` go to
    ``torch.compile`` (``fullgraph``, ``dynamic``, ``mode`` is not accepted with a custom
    backend). The backend object is at ``compiled.fastmtl_backend``."""
    fused = FusedBackend(backend)
    compiled = torch.compile(model, backend=fused, **kwargs)
    compiled.fastmtl_backend = fused
    return compiled
