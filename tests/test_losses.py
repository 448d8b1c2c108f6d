"""Losses: CE with ignore, per-image depth L1 / L2, deep supervision, task weighting."""
import pytest
import torch

from fastmtl.losses import deep_supervision, depth_l1, depth_l2, semseg_loss


def test_ce_ignores_255():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, :2] = 255
    keep = target != 255
    manual = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    torch.testing.assert_close(semseg_loss(logits, target), manual)


def test_ce_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = semseg_loss(logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_depth_losses_are_per_image_means_averaged_over_images():
    pred = torch.zeros(3, 1, 1, 4)
    target = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]]], [[[3.0, float("nan"), float("nan"), float("nan")]]],
                           [[[float("nan")] * 4]]])
    # image 0: mean |d| = 1, image 1: 3, image 2: no valid pixel -> excluded
    assert depth_l1(pred, target).item() == pytest.approx(2.0)
    assert depth_l2(pred, target).item() == pytest.approx(5.0)


def test_depth_loss_without_valid_pixels_has_finite_zero_grad():
    pred = torch.randn(2, 1, 3, 3, requires_grad=True)
    loss = depth_l1(pred, torch.full((2, 1, 3, 3), float("nan")))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_deep_supervision_means_over_list():
    calls = []
    fn = lambda p: calls.append(p) or p.sum()  # noqa: E731
    a, b = torch.tensor([1.0]), torch.tensor([3.0])
    assert deep_supervision(fn, [a, b]).item() == 2.0
    assert deep_supervision(fn, a).item() == 1.0
