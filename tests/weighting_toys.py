"""Shared toys for the weighting tests: a tiny two-task model with the MultiTaskModel split."""
import torch
from torch import nn


class ToyModel(nn.Module):
    """``encoder`` (shared) -> features ``{1: x, 2: h}`` -> two linear heads ``a``, ``b``."""

    def __init__(self, width=6, batch_norm=True):
        super().__init__()
        self.encoder = ToyEncoder(width, batch_norm)
        self.a = nn.Linear(width, 1)
        self.b = nn.Linear(width, 1)

    def check_input(self, x):
        assert x.dim() == 2

    def forward(self, x):
        return self.predict_from_features(self.encoder(x), None)

    def predict_from_features(self, features, size):
        return {"a": self.a(features[2]), "b": self.b(features[2])}


class ToyEncoder(nn.Module):
    def __init__(self, width, batch_norm=True):
        super().__init__()
        self.lin = nn.Linear(3, width)
        self.bn = nn.BatchNorm1d(width) if batch_norm else nn.Identity()

    def forward(self, x):
        return {1: x, 2: torch.tanh(self.bn(self.lin(x)))}


def toy_loss(out, ya, yb):
    """Two batch-mean losses, one conflicting with the other through the shared encoder."""
    parts = {"a": ((out["a"] - ya) ** 2).mean(), "b": (out["b"] - yb).abs().mean() * 3}
    return parts["a"] + parts["b"], parts


def toy_data(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x[:, :1] * 2 + 0.1 * torch.randn(n, 1, generator=g), -x[:, :1] + x[:, 1:2]


class NoScaler:
    """The GradScaler interface when AMP is off (what ``GradScaler(enabled=False)`` does)."""

    def is_enabled(self):
        return False

    def scale(self, x):
        return x
