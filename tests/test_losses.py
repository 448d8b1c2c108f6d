"""Losses: CE with ignore, per-image depth L1 / L2, deep supervision, task weighting."""
import pytest
import torch

from fastmtl.losses import MultiTaskLoss, deep_supervision
from fastmtl.tasks.depth import DepthNormalizer, DepthTask, depth_l1, depth_l2
from fastmtl.tasks.semseg import SemsegTask, semseg_loss


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


def _normalizer(mode="log"):
    return DepthNormalizer.from_stats(mode, {"mean": 20.0, "std": 10.0, "log_mean": 2.5, "log_std": 0.8})


def test_multitask_loss_weights_tasks_and_averages_deep_supervision():
    norm = _normalizer()
    loss = MultiTaskLoss([SemsegTask(3), DepthTask(norm, loss="l1")], {"semseg": 0.3, "depth": 0.7})
    seg_t = torch.randint(0, 3, (2, 4, 4))
    depth_m = torch.rand(2, 1, 4, 4) * 50 + 1
    outs = {"semseg": [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)], "depth": [torch.randn(2, 1, 4, 4)] * 2}
    total, parts = loss(outs, {"semseg": seg_t, "depth": depth_m})
    ce = (semseg_loss(outs["semseg"][0], seg_t) + semseg_loss(outs["semseg"][1], seg_t)) / 2
    l1 = depth_l1(outs["depth"][0], norm.normalize(depth_m))
    torch.testing.assert_close(parts["semseg"], ce)
    torch.testing.assert_close(parts["depth"], l1)
    torch.testing.assert_close(total, 0.3 * ce + 0.7 * l1)


@pytest.mark.parametrize("mode", ["log", "linear"])
def test_silog_depth_loss_is_scale_invariant_eigen(mode):
    norm = _normalizer(mode)
    gt = torch.rand(2, 1, 5, 5) * 40 + 5
    gt[1, 0, 0, 0] = float("nan")
    loss = MultiTaskLoss([SemsegTask(3), DepthTask(norm, loss="silog", silog_lambda=0.5)], {"semseg": 0.0, "depth": 1.0})
    pred_m = gt * torch.exp(0.1 * torch.randn_like(gt))
    pred = norm.normalize(torch.nan_to_num(pred_m, nan=10.0)).requires_grad_()
    _, parts = loss({"semseg": torch.zeros(2, 3, 5, 5), "depth": pred}, {"semseg": torch.full((2, 5, 5), 255), "depth": gt})
    # Eigen et al.: per image sqrt(mean d^2 - lambda mean(d)^2), d = log gt - log pred, averaged
    expected = []
    for p, g in zip(norm.denormalize(pred.detach()), gt):
        valid = torch.isfinite(g)
        d = g[valid].log() - p[valid].log()
        expected.append(torch.sqrt((d ** 2).mean() - 0.5 * d.mean() ** 2))
    assert parts["depth"].item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)
    parts["depth"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
