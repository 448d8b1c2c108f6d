"""Our own small equivalents of the SE and attention blocks of public libraries, for the fuse and
compile tests: the same child names, module types and forward computation as the originals
(written from reading them; none of those libraries is imported or needed here)."""
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------ timm's activation classes
class TimmSigmoid(nn.Module):
    """timm.layers.activations.Sigmoid: its own class, with an ``inplace`` flag."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x.sigmoid_() if self.inplace else x.sigmoid()


class TimmSwish(nn.Module):
    """timm.layers.activations.Swish: ``x * x.sigmoid()``, in place when asked."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x.mul_(x.sigmoid()) if self.inplace else x.mul(x.sigmoid())


class TimmHardSigmoid(nn.Module):
    """timm.layers.activations.HardSigmoid: ``relu6(x + 3) / 6``, no torch hardsigmoid call."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return x.add_(3.0).clamp_(0.0, 6.0).div_(6.0) if self.inplace else F.relu6(x + 3.0) / 6.0


class TimmGELU(nn.Module):
    """timm.layers.activations.GELU (exact) -- and with ``approximate="tanh"`` its GELUTanh."""

    def __init__(self, inplace=False, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


# ------------------------------------------------------------------ squeeze-and-excitation
class TimmSEModule(nn.Module):
    """timm.layers.squeeze_excite.SEModule: fc1, bn (Identity unless a norm layer), act, fc2, gate."""

    def __init__(self, channels, rd_channels, act_layer=nn.ReLU, norm_layer=None, gate_layer=TimmSigmoid,
                 add_maxpool=False, bias=True):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = norm_layer(rd_channels) if norm_layer else nn.Identity()
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return x * self.gate(x_se)


class TimmSqueezeExcite(nn.Module):
    """timm.models._efficientnet_blocks.SqueezeExcite: conv_reduce, act1, conv_expand, gate."""

    def __init__(self, in_chs, rd_channels, act_layer=nn.SiLU, gate_layer=nn.Sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class TorchvisionSE(nn.Module):
    """torchvision.ops.misc.SqueezeExcitation: ReLU/Sigmoid by default, SiLU in EfficientNet,
    Hardsigmoid scale activation in MobileNetV3."""

    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input):
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input):
        return self._scale(input) * input


class SmpSEModule(nn.Module):
    """The SEModule of smp's SE-ResNet/SENet encoders (pretrainedmodels' senet)."""

    def __init__(self, channels, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        module_input = x
        x = self.avg_pool(x)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        x = self.sigmoid(x)
        return module_input * x


class SmpSCSEModule(nn.Module):
    """segmentation_models_pytorch.base.modules.SCSEModule: channel SE + spatial SE, summed.
    Not an SE block as a whole (fuse leaves it alone); its ``x * cSE(x)`` half is one for the
    compile path."""

    def __init__(self, in_channels, reduction=4):
        super().__init__()
        self.cSE = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, in_channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // reduction, in_channels, 1), nn.Sigmoid(),
        )
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.cSE(x) + x * self.sSE(x)


class MTLSEBlock(nn.Module):
    """Multi-Task-Learning-PyTorch models/layers.py SEBlock: a Sequential of Linear, ReLU,
    Linear, Sigmoid."""

    def __init__(self, channels, r=4):
        super().__init__()
        self.r = r
        self.squeeze = nn.Sequential(nn.Linear(channels, channels // self.r), nn.ReLU(),
                                     nn.Linear(channels // self.r, channels), nn.Sigmoid())

    def forward(self, x):
        B, C, H, W = x.size()
        squeeze = self.squeeze(torch.mean(x, dim=(2, 3))).view(B, C, 1, 1)
        return torch.mul(x, squeeze)


class TemplateSqueezeAndExcitation(nn.Module):
    """The course template's SqueezeAndExcitation(channels, r=16) (the report's Fig. 15 model):
    ``transform`` = Sequential(Linear, ReLU, Linear, Sigmoid) on ``mean_hw(x)``."""

    def __init__(self, channels, r=16):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(channels, channels // r), nn.ReLU(),
                                       nn.Linear(channels // r, channels), nn.Sigmoid())

    def forward(self, x):
        N, C, H, W = x.shape
        squeezed = torch.mean(x, dim=(2, 3)).reshape(N, C)
        squeezed = self.transform(squeezed).reshape(N, C, 1, 1)
        return x * squeezed


class GatedBySequential(nn.Module):
    """``x * Sequential(pool, conv, ReLU, conv, Sigmoid)(x)``: the layers in a Sequential."""

    def __init__(self, c, hidden):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, c, 1),
                                  nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


# ------------------------------------------------------------------ spatial attention
class MTLSABlock(nn.Module):
    """Multi-Task-Learning-PyTorch models/layers.py SABlock: the attention conv inside a
    Sequential with its Sigmoid."""

    def __init__(self, in_channels, out_channels, bias=False):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias), nn.Sigmoid())
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x):
        attention_mask = self.attention(x)
        features = self.conv(x)
        return torch.mul(features, attention_mask)


class TemplateSelfAttention(nn.Module):
    """The course template's SelfAttention: ``conv(x) * sigmoid(attention(x))``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.attention = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)

    def forward(self, x):
        features = self.conv(x)
        attention_mask = torch.sigmoid(self.attention(x))
        return features * attention_mask
