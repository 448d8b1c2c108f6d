"""Whole models with fused modules (``build_model(..., fused=True)``) against the unfused ones."""
import torch

from fastmtl.config import Config
from fastmtl.models import build_model
from fastmtl.nn import FusedBatchNormReLU, fuse

DESC = {"semseg": 3, "depth": 1}


def _pair(model_name="distill_allconnect"):
    cfg = Config(model=model_name, encoder="resnet18", dilation=(False, True, True), se=True,
                 attention_init="default")
    ref = build_model(cfg, DESC)
    fused = build_model(cfg, DESC, fused=True)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _flat_outputs(out):
    return [p for v in out.values() for p in (v if isinstance(v, list) else [v])]


def test_fuse_counts_and_keeps_state_dict():
    cfg = Config(model="distill_allconnect", encoder="resnet18", dilation=(False, True, True), se=True)
    model = build_model(cfg, DESC)
    keys = list(model.state_dict())
    # resnet18: 8 blocks with SE, 2 ASPP heads, 2 attention modules; BatchNorm + ReLU: the stem
    # and the 8 blocks' bn1, 6 in each ASPP (4 branches, pooling, projection), 12 in the decoders
    assert fuse(model) == 12 + 9 + 12 + 12
    assert sum(isinstance(m, FusedBatchNormReLU) for m in model.modules()) == 9 + 12 + 12
    assert list(model.state_dict()) == keys
    assert fuse(model) == 0, "fusing twice swaps nothing more"


def test_fused_model_matches_reference_forward_backward(triton_mode):
    ref, fused = _pair()
    x = torch.randn(2, 3, 32, 32)
    outs = [_flat_outputs(m(x)) for m in (ref, fused)]
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for m, out in zip((ref, fused), outs):
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out).backward()
    # relative to each tensor's scale: deep gradients sum many terms in a different order
    ref_grads = dict(ref.named_parameters())
    for name, p in fused.named_parameters():
        expected = ref_grads[name].grad
        err = (p.grad - expected).abs().max().item()
        assert err <= 1e-4 * max(expected.abs().max().item(), 1e-3), (name, err)


def test_fused_model_has_no_graph_break(triton_mode):
    _, fused = _pair()
    explanation = torch._dynamo.explain(fused)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
