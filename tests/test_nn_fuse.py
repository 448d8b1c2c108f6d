"""fastmtl.nn.fuse: which blocks it swaps (recognised by what they compute), and that a swap
changes nothing but the speed: same state_dict, same outputs and gradients in train and eval."""
import copy
import functools
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastmtl.nn as fnn
from fastmtl import layers
from lookalikes import (
    GatedBySequential, MTLSABlock, MTLSEBlock, SmpSCSEModule, SmpSEModule, TemplateSelfAttention,
    TemplateSqueezeAndExcitation, TimmGELU, TimmHardSigmoid, TimmSEModule, TimmSwish, TimmSqueezeExcite, TorchvisionSE,
)

pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)

SE_BLOCKS = {  # name: (block factory, the act and gate fuse must find)
    "timm SEModule": (lambda: TimmSEModule(12, 4), "relu", "sigmoid"),
    "timm SEModule gelu + timm HardSigmoid": (lambda: TimmSEModule(12, 4, TimmGELU, gate_layer=TimmHardSigmoid), "gelu", "hardsigmoid"),
    "timm SEModule hardswish, no bias": (lambda: TimmSEModule(12, 4, nn.Hardswish, gate_layer=nn.Hardsigmoid, bias=False), "hardswish", "hardsigmoid"),
    "timm EfficientNet SqueezeExcite": (lambda: TimmSqueezeExcite(12, 3), "silu", "sigmoid"),
    "timm SqueezeExcite + timm Swish": (lambda: TimmSqueezeExcite(12, 3, TimmSwish), "silu", "sigmoid"),
    "torchvision SE": (lambda: TorchvisionSE(12, 4), "relu", "sigmoid"),
    "torchvision SE, EfficientNet": (lambda: TorchvisionSE(12, 3, nn.SiLU), "silu", "sigmoid"),
    "torchvision SE, MobileNetV3": (lambda: TorchvisionSE(12, 4, scale_activation=nn.Hardsigmoid), "relu", "hardsigmoid"),
    "smp SEModule": (lambda: SmpSEModule(12, 4), "relu", "sigmoid"),
    "MTL-PyTorch SEBlock": (lambda: MTLSEBlock(12, 4), "relu", "sigmoid"),
    "template SqueezeAndExcitation": (lambda: TemplateSqueezeAndExcitation(12, 4), "relu", "sigmoid"),
    "gate in a Sequential": (lambda: GatedBySequential(12, 3), "relu", "sigmoid"),
}
ATTENTION_BLOCKS = {  # name: (block factory, in, out channels)
    "MTL-PyTorch SABlock": (lambda: MTLSABlock(12, 7), 12, 7),
    "template SelfAttention": (lambda: TemplateSelfAttention(12, 12), 12, 12),
}


class _Dropped(MTLSEBlock):
    """A dropout inside the excitation MLP: the same function in eval mode, not in train mode."""

    def __init__(self, c, r):
        super().__init__(c, r)
        self.squeeze.insert(2, nn.Dropout(0.5))


class _TwoInputs(TorchvisionSE):
    def forward(self, x, y):
        return super().forward(x) + y


LEFT_ALONE = {  # blocks that change the math: fuse must not swap them (nor anything inside them)
    "timm SEModule with a BatchNorm": lambda: TimmSEModule(12, 4, norm_layer=nn.BatchNorm2d),
    "timm SEModule with max pooling": lambda: TimmSEModule(12, 4, add_maxpool=True),
    "timm SEModule, LeakyReLU": lambda: TimmSEModule(12, 4, functools.partial(nn.LeakyReLU, 0.1)),
    "timm SEModule, tanh GELU": lambda: TimmSEModule(12, 4, functools.partial(TimmGELU, approximate="tanh")),
    "timm SEModule, tanh gate": lambda: TimmSEModule(12, 4, gate_layer=nn.Tanh),
    "dropout in the MLP": lambda: _Dropped(12, 4),
    "attention conv with bias": lambda: MTLSABlock(12, 12, bias=True),
    "smp SCSEModule": lambda: SmpSCSEModule(12),
    "two inputs": lambda: _TwoInputs(12, 4),
}


def _net(block, c_in=12, c_out=12):
    return nn.Sequential(OrderedDict(stem=nn.Conv2d(3, c_in, 3, padding=1), block=block, head=nn.Conv2d(c_out, 2, 1)))


def _assert_same_function(model, reference, x):
    """Outputs and every gradient (input and parameters) agree, in train and in eval mode."""
    names = [k for k, _ in reference.named_parameters()]
    assert [k for k, _ in model.named_parameters()] == names
    for training in (True, False):
        model.train(training), reference.train(training)
        outs, grads = [], []
        for m in (model, reference):
            xi = x.clone().requires_grad_()
            out = m(xi)
            outs.append(out)
            grads.append(torch.autograd.grad(out, [xi, *m.parameters()], torch.ones_like(out).cos()))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
        for name, a, b in zip(["input", *names], *grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} ({'train' if training else 'eval'}): {m}")


def _assert_same_state(model, state):
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list(SE_BLOCKS))
def test_se_blocks_of_public_libraries_are_fused(name):
    make, act, gate = SE_BLOCKS[name]
    model = _net(make())
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]

    assert fnn.fuse(model) == 1

    assert type(model.block) is fnn.FusedSEBlock
    assert (model.block.fused_act, model.block.fused_gate) == (act, gate)
    assert [type(c) for c in model.block.children()] == [type(c) for c in reference.block.children()]
    _assert_same_state(model, state)
    assert [id(p) for p in model.parameters()] == params  # optimizers keep working
    _assert_same_function(model, reference, torch.randn(2, 3, 5, 7))
    assert fnn.fuse(model) == 0  # idempotent


@pytest.mark.parametrize("name", list(ATTENTION_BLOCKS))
def test_attention_blocks_of_public_libraries_are_fused(name):
    make, c_in, c_out = ATTENTION_BLOCKS[name]
    model = _net(make(), c_in, c_out)
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    assert fnn.fuse(model) == 1

    assert type(model.block) is fnn.FusedGatedConv
    _assert_same_state(model, state)
    _assert_same_function(model, reference, torch.randn(2, 3, 5, 7))


@pytest.mark.parametrize("name", list(LEFT_ALONE))
def test_blocks_that_change_the_math_are_left_alone(name):
    block = LEFT_ALONE[name]()
    model = nn.Sequential(block)
    types = [type(m) for m in model.modules()]
    assert fnn.fuse(model) == 0
    assert [type(m) for m in model.modules()] == types and model[0] is block


def test_probing_leaves_state_and_rng_alone():
    """Recognition runs the blocks on probes: BatchNorm statistics and the global RNG stay."""
    model = nn.Sequential(TimmSEModule(12, 4, norm_layer=nn.BatchNorm2d), _Dropped(12, 4), TorchvisionSE(12, 4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert fnn.fuse(model) == 1
    assert torch.equal(torch.get_rng_state(), rng)
    _assert_same_state(model, state)


class ForeignNet(nn.Module):
    def __init__(self, c=12):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        shared = TorchvisionSE(c, 5)
        self.body = nn.Sequential(shared, MTLSEBlock(c, 4), TemplateSelfAttention(c, c), shared)  # `shared` twice
        self.own = nn.ModuleDict({"se": layers.SqueezeExcitation(c, 4), "att": layers.SelfAttention(c, c, "default")})
        self.decoys = nn.Sequential(MTLSABlock(c, c, bias=True), SmpSCSEModule(c))

    def forward(self, x):
        x = self.body(self.stem(x))
        return self.decoys(self.own["att"](self.own["se"](x)))


EXPECTED = {"body.0": fnn.FusedSEBlock, "body.1": fnn.FusedSEBlock, "body.2": fnn.FusedGatedConv,
            "body.3": fnn.FusedSEBlock, "own.se": fnn.FusedSqueezeExcitation, "own.att": fnn.FusedSelfAttention}


def test_fuse_in_a_model_with_shared_and_mixed_mode_blocks():
    model = ForeignNet()
    model.own["att"].eval()  # a mixed train/eval state must survive
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    assert fnn.fuse(model) == 5  # the shared SE counts once

    modules = dict(model.named_modules(remove_duplicate=False))
    for name, cls in EXPECTED.items():
        assert type(modules[name]) is cls, name
    assert model.body[0] is model.body[3]
    ref_modules = dict(reference.named_modules(remove_duplicate=False))
    for name in ("decoys.0", "decoys.1"):
        assert type(modules[name]) is type(ref_modules[name])
    _assert_same_state(model, state)
    assert all(m.training == ref_modules[k].training for k, m in modules.items())
    assert not model.own["att"].training and model.body[0].training
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def test_a_fused_model_loads_the_unfused_checkpoint_and_back():
    fused, plain = _net(TimmSqueezeExcite(12, 3)), _net(TimmSqueezeExcite(12, 3))
    fnn.fuse(fused)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 4, 6)
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-5)
    plain.load_state_dict(fused.state_dict())


def test_the_root_module_is_never_swapped():
    se = layers.SqueezeExcitation(8)
    assert fnn.fuse(se) == 0 and type(se) is layers.SqueezeExcitation
    se = TimmSEModule(8, 2)
    assert fnn.fuse(se) == 0 and type(se) is TimmSEModule


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fuse_keeps_dtype_and_the_fused_modules_match_the_references(dtype):
    model = nn.Sequential(layers.SqueezeExcitation(16, 4), layers.SelfAttention(16, 8, "default"), layers.ASPP(8, 6, rates=(1, 2, 3)),
                          TimmSEModule(6, 2))
    model = model.to(dtype).eval()
    reference = copy.deepcopy(model)
    assert fnn.fuse(model) == 4 + 6  # and the ASPP's BatchNorm + ReLU pairs: 4 branches, pooling, projection
    assert [type(m) for m in model] == [fnn.FusedSqueezeExcitation, fnn.FusedSelfAttention, fnn.FusedASPP, fnn.FusedSEBlock]
    assert sum(type(m) is fnn.FusedBatchNormReLU for m in model.modules()) == 6
    assert all(p.dtype == dtype for p in model.parameters())
    x = torch.randn(2, 16, 5, 6, dtype=dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(model(x), reference(x), **tol)


@pytest.mark.parametrize("make", [lambda: layers.SqueezeExcitation(16, 4), lambda: TemplateSqueezeAndExcitation(16, 4)],
                         ids=["fastmtl", "template"])
def test_fused_se_in_a_basic_block_tail_through_the_encoder_protocol(make):
    """The encoder calls ``se(out, identity=identity)`` when ``se.fuses_residual``."""
    ref = make()
    model = nn.Sequential(ref)
    assert fnn.fuse(model) == 1
    out, identity = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    assert getattr(model[0], "fuses_residual", False) and not getattr(ref, "fuses_residual", False)
    torch.testing.assert_close(model[0](out, identity=identity), F.relu(ref(out) + identity))
