"""fastmtl.nn.fuse and BatchNorm2d + ReLU: which pairs become FusedBatchNormReLU (Sequential
neighbours, blocks' ``relu_after``), which stay, and that the fused model trains exactly like
the unfused one (outputs, every gradient, running statistics); SyncBatchNorm is never fused."""
import copy

import pytest
import torch
from torch import nn

import fastmtl.nn as fnn
from fastmtl import layers
from fastmtl.config import Config
from fastmtl.models.encoder import BasicBlock, Bottleneck, Encoder
from fastmtl.step import build_train_model

pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


def _randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    return model


class _OwnForward(BasicBlock):
    """A BasicBlock subclass with its own forward: it does not declare ``relu_after`` itself."""

    def forward(self, x):
        return self.bn1(self.conv1(x)) + x


def test_which_pairs_are_fused():
    shared = nn.BatchNorm2d(4)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),  # 1: fused
        nn.BatchNorm2d(4), nn.Sigmoid(),  # BN then not a ReLU
        nn.BatchNorm2d(4), nn.ReLU6(),  # not exactly nn.ReLU
        nn.SyncBatchNorm(4), nn.ReLU(),  # never a SyncBatchNorm
        shared, nn.ReLU(), nn.Sequential(shared),  # a BN held twice
        nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()),  # 2: fused (nested)
        BasicBlock(4, 4),  # 3: its bn1
        _OwnForward(4, 4),
        nn.BatchNorm2d(4),  # last: no ReLU after it
    )
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    assert fnn.fuse(model) == 3
    fused = [name for name, m in model.named_modules() if type(m) is fnn.FusedBatchNormReLU]
    assert fused == ["1", "12.0", "13.bn1"]
    assert type(model[2]) is nn.Identity and type(model[12][1]) is nn.Identity
    assert type(model[14].bn1) is nn.BatchNorm2d and type(model[10]) is nn.ReLU
    assert list(model.state_dict()) == list(state) and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [id(p) for p in model.parameters()] == params  # the same Parameter objects: optimizers keep working
    assert fnn.fuse(model) == 0  # idempotent
    x = torch.randn(2, 3, 5, 6)
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x))


def test_swap_keeps_the_flags_and_state_of_the_batch_norm():
    bn = nn.BatchNorm2d(5, eps=1e-3, momentum=None, affine=False)
    bn.num_batches_tracked.fill_(7)
    model = nn.Sequential(bn.eval(), nn.ReLU())
    assert fnn.fuse(model) == 1
    new = model[0]
    assert (new.eps, new.momentum, new.affine, new.track_running_stats, new.training) == (1e-3, None, False, True, False)
    assert new.running_mean is bn.running_mean and int(new.num_batches_tracked) == 7


def _block_net():
    """Basic and bottleneck blocks (their ``relu_after``) and conv-BN-ReLU Sequentials."""
    return _randomize_bn(nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), BasicBlock(12, 12), Bottleneck(12, 3),
                                       layers.conv_bn_relu(12, 5, 3)))


def _train_step(model, x, grad):
    """Output, gradients (input, then every parameter) and the buffers after one train step."""
    xi = x.clone().requires_grad_()
    out = model.train()(xi)
    grads = torch.autograd.grad(out, [xi, *model.parameters()], grad)
    return [out, *grads, *[b.clone() for b in model.buffers()]]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fused_blocks_train_and_evaluate_like_the_unfused(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    reference = _block_net().to(memory_format=fmt)
    model = copy.deepcopy(reference)
    assert fnn.fuse(model) == 1 + 2 + 1  # BasicBlock.bn1, Bottleneck.bn1 and bn2, the Sequential
    x = torch.randn(2, 3, 6, 7).contiguous(memory_format=fmt)
    grad = torch.randn(2, 5, 6, 7).contiguous(memory_format=fmt)
    got, want = _train_step(model, x, grad), _train_step(reference, x, grad)
    assert len(got) == len(want)
    assert got[0].is_contiguous(memory_format=fmt)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"tensor {i}: {m}")
    torch.testing.assert_close(model.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_fused_encoder_stem_and_blocks_match_the_unfused():
    reference = _randomize_bn(Encoder("resnet18", (False, True, True)))  # layer4 at 4x4: 32 values per channel
    model = copy.deepcopy(reference)
    assert fnn.fuse(model) == 1 + 8  # the stem and every block's bn1
    assert type(model.bn1) is fnn.FusedBatchNormReLU and type(model.layer1[0].bn2) is nn.BatchNorm2d
    x = torch.randn(2, 3, 32, 32)
    outs = [m(x) for m in (model, reference)]
    for scale in outs[1]:
        torch.testing.assert_close(outs[0][scale], outs[1][scale], rtol=1e-4, atol=1e-5)
    for a, b in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


DESC = {"semseg": 3, "depth": 1}


def _count(model, cls):
    return sum(type(m) is cls for m in model.modules())


def test_sync_batchnorm_models_convert_before_fusing():
    cfg = Config(model="joint", encoder="resnet18", se=True, fused=True)
    torch.manual_seed(0)
    plain = build_train_model(Config(model="joint", encoder="resnet18", se=True), DESC, sync_bn=False)
    torch.manual_seed(0)
    synced = build_train_model(cfg, DESC, sync_bn=True)
    assert _count(synced, fnn.FusedBatchNormReLU) == 0 and _count(synced, nn.BatchNorm2d) == 0
    assert _count(synced, nn.SyncBatchNorm) == _count(plain, nn.BatchNorm2d)
    assert _count(synced, fnn.FusedSqueezeExcitation) == 8  # the other swaps still happen
    assert list(synced.state_dict()) == list(plain.state_dict())
    torch.manual_seed(0)
    assert _count(build_train_model(cfg, DESC, sync_bn=False), fnn.FusedBatchNormReLU) > 0
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(synced(x).values(), plain(x).values()):  # no process group: SyncBatchNorm is BatchNorm
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_converting_a_fused_model_to_sync_batchnorm_keeps_the_relu():
    """FusedBatchNormReLU is no ``_BatchNorm``: ``convert_sync_batchnorm`` leaves it (and its
    ReLU); it would otherwise become a SyncBatchNorm without the ReLU."""
    reference = _block_net()
    model = copy.deepcopy(reference)
    fnn.fuse(model)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert _count(converted, fnn.FusedBatchNormReLU) == _count(model, fnn.FusedBatchNormReLU) == 4
    x, grad = torch.randn(2, 3, 6, 7), torch.randn(2, 5, 6, 7)
    for a, b in zip(_train_step(converted, x, grad), _train_step(reference, x, grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
