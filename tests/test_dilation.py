"""``--dilation`` builds the course template's network (docs/models.md, "The dilation rule").

The reference below is an independent construction, written from the template's description
(torchvision's ``ResNet._make_layer`` with the report's ``BasicBlockWithDilation``, Fig. 15, or
torchvision's Bottleneck, then ``Encoder._create``'s patch), not from fastmtl's encoder. With
the same weights its features must equal fastmtl's.
"""
import pytest
import torch
from torch import nn

from fastmtl.models import Encoder, build_model


def conv3x3(cin, cout, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class TemplateBasicBlock(nn.Module):
    """The report's BasicBlockWithDilation: conv1 is never dilated, conv2 takes ``dilation``."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class TorchvisionBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + identity)


class TemplateResNet(nn.Module):
    """torchvision's ResNet layer bookkeeping, then the template's patch of every dilated layer."""

    def __init__(self, block, layers, replace_stride_with_dilation):
        super().__init__()
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        # Encoder._create of the template
        for n, dilate in zip((2, 3, 4), replace_stride_with_dilation):
            if dilate:
                conv2 = getattr(self, f"layer{n}")[0].conv2
                conv2.dilation, conv2.padding = (2, 2), (2, 2)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample, previous_dilation = None, self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def randomize_bn(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


CASES = [("resnet34", TemplateBasicBlock, (3, 4, 6, 3), (False, False, True)),
         ("resnet18", TemplateBasicBlock, (2, 2, 2, 2), (False, True, True)),
         ("resnet18", TemplateBasicBlock, (2, 2, 2, 2), (True, True, True)),
         ("resnet50", TorchvisionBottleneck, (3, 4, 6, 3), (False, True, True))]


@pytest.mark.parametrize("name,block,layers,dilation", CASES)
def test_encoder_equals_the_template_with_copied_weights(name, block, layers, dilation):
    torch.manual_seed(0)
    reference = TemplateResNet(block, layers, dilation).eval()
    randomize_bn(reference)
    ours = Encoder(name, dilation).eval()
    ours.load_state_dict(reference.state_dict())  # the same names: strict load
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)[ours.output_stride]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_torchvision_style_differs_from_the_template():
    torch.manual_seed(0)
    reference = TemplateResNet(TemplateBasicBlock, (2, 2, 2, 2), (False, False, True)).eval()
    randomize_bn(reference)
    tv = Encoder("resnet18", (False, False, True), dilation_style="torchvision").eval()
    tv.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (tv(x)[16] - reference(x)).abs().max() > 1e-3


@pytest.mark.parametrize("style", ["template", "torchvision"])
def test_dilation_of_every_conv(style):
    enc = Encoder("resnet34", (False, True, True), dilation_style=style)
    first3, later3 = enc.layer3[0], enc.layer3[1]
    first4, later4 = enc.layer4[0], enc.layer4[1]
    if style == "template":
        assert [c.dilation[0] for c in (first3.conv1, first3.conv2, later3.conv1, later3.conv2)] == [1, 2, 1, 2]
        assert [c.dilation[0] for c in (first4.conv1, first4.conv2, later4.conv1, later4.conv2)] == [1, 2, 1, 4]
    else:
        assert [c.dilation[0] for c in (first3.conv1, first3.conv2, later3.conv1, later3.conv2)] == [1, 1, 2, 2]
        assert [c.dilation[0] for c in (first4.conv1, first4.conv2, later4.conv1, later4.conv2)] == [2, 2, 4, 4]
    for m in enc.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            assert m.padding == m.dilation


@pytest.mark.parametrize("style", ["template", "torchvision"])
@pytest.mark.parametrize("dilation,stride", [((False, False, False), 32), ((False, False, True), 16),
                                             ((False, True, True), 8)])
def test_output_strides(style, dilation, stride):
    enc = Encoder("resnet18", dilation, dilation_style=style)
    feats = enc(torch.randn(1, 3, 64, 96))
    assert enc.output_stride == stride
    assert feats[stride].shape[-2:] == (64 // stride, 96 // stride)


def test_dilation_style_reaches_the_model_and_is_validated():
    model = build_model({"model": "joint", "encoder": "resnet18", "dilation_style": "torchvision"}, {"semseg": 3, "depth": 1})
    assert model.encoder.dilation_style == "torchvision"
    with pytest.raises(ValueError, match="--dilation-style.*template, torchvision"):
        build_model({"dilation_style": "bogus"}, {"semseg": 3})
