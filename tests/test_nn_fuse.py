"""fastmtl.nn.fuse: which blocks it swaps, and that a swap changes nothing but the speed."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastmtl.nn as fnn
from fastmtl.models import heads


pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


class TorchvisionStyleSE(nn.Module):
    """Look-alike of torchvision.ops.SqueezeExcitation (torchvision does not import here)."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Sigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class LinearSE(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]


class HardSigmoidSE(LinearSE):
    """Same structure as LinearSE, another function: only the probe can tell."""

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]


class Attention(nn.Module):
    def __init__(self, c, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=bias)
        self.attention = nn.Conv2d(c, c, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.conv(x) * torch.sigmoid(self.attention(x))


class GatedBySequential(nn.Module):
    """The multiply lives here, the gate is a Sequential: not a fusable block."""

    def __init__(self, c):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class ForeignNet(nn.Module):
    def __init__(self, c=12):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        shared = TorchvisionStyleSE(c, 5)
        self.body = nn.Sequential(shared, LinearSE(c, 3), Attention(c), shared)  # `shared` twice
        self.own = nn.ModuleDict({"se": heads.SqueezeExcitation(c, 4), "att": heads.SelfAttention(c, c, "default")})
        self.decoys = nn.Sequential(HardSigmoidSE(c, 3), Attention(c, bias=True), GatedBySequential(c))

    def forward(self, x):
        x = self.body(self.stem(x))
        return self.decoys(self.own["att"](self.own["se"](x)))


EXPECTED = {"body.0": fnn.SqueezeExcitation, "body.1": fnn.SqueezeExcitation, "body.2": fnn.SelfAttention,
            "body.3": fnn.SqueezeExcitation, "own.se": fnn.SqueezeExcitation, "own.att": fnn.SelfAttention}


def test_fuse_swaps_the_recognised_blocks_and_changes_nothing_else():
    model = ForeignNet()
    model.own["att"].eval()  # a mixed train/eval state must survive
    reference = copy.deepcopy(model)
    params = {k: id(v) for k, v in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    assert fnn.fuse(model) == 5  # the shared SE counts once

    assert torch.equal(torch.get_rng_state(), rng)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, cls in EXPECTED.items():
        assert type(modules[name]) is cls, name
    assert model.body[0] is model.body[3]
    for name in ("decoys.0", "decoys.1", "decoys.2"):
        assert type(modules[name]) is type(dict(reference.named_modules())[name])
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert {k: id(v) for k, v in model.named_parameters()} == params  # optimizers keep working
    ref_modules = dict(reference.named_modules(remove_duplicate=False))
    assert all(m.training == ref_modules[k].training for k, m in modules.items())
    assert not model.own["att"].training and model.body[0].training

    x = torch.randn(2, 3, 5, 7)
    out, want = model(x), reference(x)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, list(model.parameters()), g)
    exp = torch.autograd.grad(want, list(reference.parameters()), g)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fnn.fuse(model) == 0  # idempotent


def test_verify_false_trusts_the_structure_alone():
    model = nn.Sequential(HardSigmoidSE(6, 2), Attention(6, bias=True))
    assert fnn.fuse(model, verify=False) == 1
    assert type(model[0]) is fnn.SqueezeExcitation and type(model[1]) is Attention


def test_a_block_whose_forward_needs_more_arguments_is_left_alone():
    class TwoInputs(LinearSE):
        def forward(self, x, y):
            return super().forward(x) + y

    model = nn.Sequential(TwoInputs(6, 2))
    assert fnn.fuse(model) == 0


def test_the_root_module_is_never_swapped():
    se = heads.SqueezeExcitation(8)
    assert fnn.fuse(se) == 0 and type(se) is heads.SqueezeExcitation


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fuse_keeps_dtype_and_the_fused_modules_match_the_references(dtype):
    model = nn.Sequential(heads.SqueezeExcitation(16, 4), heads.SelfAttention(16, 8, "default"), heads.ASPP(8, 6, rates=(1, 2, 3)))
    model = model.to(dtype).eval()
    reference = copy.deepcopy(model)
    assert fnn.fuse(model) == 3
    assert [type(m) for m in model] == [fnn.SqueezeExcitation, fnn.SelfAttention, fnn.ASPP]
    assert all(p.dtype == dtype for p in model.parameters())
    x = torch.randn(2, 16, 5, 6, dtype=dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=5e-2, atol=5e-2)
    torch.testing.assert_close(model(x), reference(x), **tol)


def test_fused_se_in_a_basic_block_tail_through_the_encoder_protocol():
    """The encoder calls ``se(out, identity=identity)`` when ``se.fuses_residual``."""
    ref = heads.SqueezeExcitation(16, 4)
    model = nn.Sequential(ref)
    fnn.fuse(model)
    out, identity = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    assert getattr(model[0], "fuses_residual", False) and not getattr(ref, "fuses_residual", False)
    torch.testing.assert_close(model[0](out, identity=identity), F.relu(ref(out) + identity))
