"""se_scale, sigmoid_gate and silog_stats under torch.compile: no graph breaks, same numbers."""
import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import fastmtl.nn as fnn


@pytest.fixture(autouse=True)
def triton_mode(monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class TinyDepthNet(nn.Module):
    """Every fused op once: SE with the residual tail, attention with a residual, SI-log loss."""

    def __init__(self, c=6):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.se = fnn.FusedSqueezeExcitation(c, reduction=2)
        self.att = fnn.FusedSelfAttention(c, c, attention_init="default")
        self.head = nn.Conv2d(c, 1, 1)
        self.loss = fnn.SILogLoss(log_input=True, min_depth=1.0, max_depth=100.0)

    def forward(self, x, target):
        f = self.stem(x)
        y = self.att(self.se(f, identity=f), residual=f)
        return self.loss(self.head(y) + 2.0, target), y


def _batch(channels_last=False, n=2, h=5, w=7):
    x = torch.randn(n, 3, h, w)
    target = torch.rand(n, 1, h, w) * 50 + 1
    target[0, 0, 0] = 0  # invalid pixels
    if channels_last:
        x, target = x.to(memory_format=torch.channels_last), target.to(memory_format=torch.channels_last)
    return x, target


def _loss_out_grads(model, x, target):
    x = x.clone().requires_grad_()
    loss, y = model(x, target)
    grads = torch.autograd.grad(loss + y.square().mean(), [x, *model.parameters()])
    return loss.detach(), y.detach(), grads


def test_dynamo_sees_no_graph_break():
    model = TinyDepthNet()
    explanation = torch._dynamo.explain(model)(*_batch())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    ops = {str(node.target) for g in explanation.graphs for node in g.graph.nodes}
    assert {"fastmtl.se_scale.default", "fastmtl.sigmoid_gate_halves.default", "fastmtl.silog_stats.default"} <= ops


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compiled_fullgraph_matches_eager(channels_last, dynamic):
    model = TinyDepthNet()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter, dynamic=dynamic)
    shapes = [dict(n=2, h=5, w=7)] + ([dict(n=3, h=4, w=9)] if dynamic else [])
    frames = []
    for shape in shapes:
        batch = _batch(channels_last, **shape)
        loss, y, grads = _loss_out_grads(compiled, *batch)
        want_loss, want_y, want_grads = _loss_out_grads(model, *batch)
        torch.testing.assert_close(loss, want_loss)
        torch.testing.assert_close(y, want_y)
        assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for a, b in zip(grads, want_grads):
            torch.testing.assert_close(a, b)
        frames.append(counter.frame_count)
    assert frames[0] >= 1 and frames[-1] == frames[0]  # dynamic: the second shape compiles nothing new
