"""fastmtl.nn.compile: torch.compile with fastmtl's ops put into the graph, no module swap.

The inner compiler is aot_eager (Inductor takes tens of seconds per graph on this CPU); the
rewrite runs the same either way and AOTAutograd traces the ops' backward through their
registered autograd formulas."""
import copy

import pytest
import torch
from torch import nn

import fastmtl.nn as fnn
from lookalikes import (
    MTLSABlock, SmpSCSEModule, TemplateSqueezeAndExcitation, TimmGELU, TimmSEModule, TimmSqueezeExcite, TimmSwish, TorchvisionSE,
)

SE_OP, GATE_OP = torch.ops.fastmtl.se_scale.default, torch.ops.fastmtl.sigmoid_gate_halves.default


@pytest.fixture(autouse=True)
def _fresh_dynamo(triton_mode):
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _conv_bn(c_in, c_out, k=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class MBConv(nn.Module):
    """EfficientNet / MobileNetV3 inverted residual: expand, depthwise, SE, project, shortcut."""

    def __init__(self, c, expanded, se, act=nn.SiLU):
        super().__init__()
        self.conv_pw, self.act1 = _conv_bn(c, expanded), act()
        self.conv_dw, self.act2 = _conv_bn(expanded, expanded, 3, groups=expanded), act()
        self.se = se
        self.conv_pwl = _conv_bn(expanded, c)

    def forward(self, x):
        shortcut = x
        x = self.act2(self.conv_dw(self.act1(self.conv_pw(x))))
        return self.conv_pwl(self.se(x)) + shortcut


class EfficientNetStyle(nn.Module):
    """timm's EfficientNet SE (timm's Swish), torchvision's MobileNetV3 SE (Hardsigmoid) and smp's SCSE
    (its channel half is an SE) in one small net: three se_scale ops expected."""

    def __init__(self, c=8):
        super().__init__()
        self.stem, self.act = _conv_bn(3, c, 3), nn.SiLU()
        self.blocks = nn.Sequential(
            MBConv(c, 16, TimmSqueezeExcite(16, 2, TimmSwish)),  # in-place x.mul_(x.sigmoid()): found as silu
            MBConv(c, 24, TorchvisionSE(24, 8, scale_activation=nn.Hardsigmoid), act=nn.Hardswish),
        )
        self.scse = SmpSCSEModule(c)
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, x):
        return self.head(self.scse(self.blocks(self.act(self.stem(x)))))


class TemplateBasicBlock(nn.Module):
    """The template's BasicBlockWithDilation with its SqueezeAndExcitation: ``out += identity``."""

    def __init__(self, planes):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.se = TemplateSqueezeAndExcitation(planes, 4)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        out += identity
        return self.relu(out)


class TimmSEBasicBlock(nn.Module):
    """timm's SE-ResNet basic block: ``act2(se(bn2(conv2(...))) + shortcut)``."""

    def __init__(self, planes):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes)
        self.se = TimmSEModule(planes, 4)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x
        x = self.se(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.act2(x + shortcut)


class SEResNetStyle(nn.Module):
    """Two SE basic blocks (residual tails fused into se_scale) and a task-distillation style
    ``own + SABlock(other)`` (the residual fused into sigmoid_gate)."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, c, 3), nn.ReLU())
        self.layer = nn.Sequential(TemplateBasicBlock(c), TimmSEBasicBlock(c))
        self.distill = MTLSABlock(c, c)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        f = self.layer(self.stem(x))
        return self.head(f + self.distill(f))


def _out_and_grads(model, x):
    x = x.clone().requires_grad_()
    out = model(x)
    return out.detach(), torch.autograd.grad(out, [x, *model.parameters()], torch.ones_like(out).cos())


@pytest.mark.parametrize("make, ops, residuals, gates_left", [
    (EfficientNetStyle, {"se_scale": 3, "sigmoid_gate": 0}, 0, 1),  # SCSE's spatial half stays
    (SEResNetStyle, {"se_scale": 2, "sigmoid_gate": 1}, 3, 0),
], ids=["efficientnet", "se-resnet"])
def test_compiled_graph_has_the_fastmtl_ops_and_matches_eager(make, ops, residuals, gates_left):
    model = make()
    eager = copy.deepcopy(model)
    compiled = fnn.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break would raise
    x = torch.randn(2, 3, 6, 5)
    for training in (True, False):
        model.train(training), eager.train(training)
        got, want = _out_and_grads(compiled, x), _out_and_grads(eager, x)
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
        for a, b in zip(got[1], want[1]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    backend = compiled.fastmtl_backend
    assert backend.counts == [ops, ops]  # one graph per mode, no graph break
    graph = backend.graphs[0].graph
    fused = [n for n in graph.nodes if n.target in (SE_OP, GATE_OP)]
    assert len(fused) == ops["se_scale"] + ops["sigmoid_gate"]
    assert sum(n.args[5] is not None if n.target is SE_OP else n.args[1] is not None for n in fused) == residuals
    assert len([n for n in graph.nodes if n.target in (torch.sigmoid, "sigmoid", nn.functional.hardsigmoid)]) == gates_left
    assert torch._dynamo.explain(eager)(x).graph_break_count == 0


@pytest.mark.parametrize("se", [
    lambda: TimmSEModule(8, 2, norm_layer=nn.BatchNorm2d),
    lambda: TimmSEModule(8, 2, lambda inplace: TimmGELU(approximate="tanh")),
    lambda: TimmSEModule(8, 2, add_maxpool=True),
    lambda: MTLSABlock(8, 8, bias=True),
], ids=["batchnorm", "tanh-gelu", "maxpool", "attention-bias"])
def test_patterns_that_change_the_math_are_not_rewritten(se):
    model = nn.Sequential(nn.Conv2d(3, 8, 1), se()).eval()
    compiled = fnn.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(compiled(x), model(x))
    assert compiled.fastmtl_backend.counts == [{"se_scale": 0, "sigmoid_gate": 0}]


def test_rewrite_with_dynamic_shapes():
    model = SEResNetStyle().eval()
    compiled = fnn.compile(model, backend="aot_eager", dynamic=True, fullgraph=True)
    calls = []
    for shape in ((2, 3, 6, 5), (3, 3, 4, 7)):
        x = torch.randn(shape)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
        calls.append(len(compiled.fastmtl_backend.counts))
    assert calls[0] == calls[1]  # the second shape compiles nothing: matching added no guard
    # (Dynamo may call the backend twice for the first shape: it restarts to make float
    # attributes such as BatchNorm's momentum graph inputs)
    assert all(c == {"se_scale": 2, "sigmoid_gate": 1} for c in compiled.fastmtl_backend.counts)
