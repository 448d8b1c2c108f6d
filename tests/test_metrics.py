"""Metrics: hand-computed cases and a float64 numpy re-computation on random data."""
import math

import numpy as np
import pytest
import torch

from fastmtl.metrics import TasksMeter
from fastmtl.tasks.depth import DepthMeter, si_log_rmse_per_image
from fastmtl.tasks.semseg import SemsegMeter


def test_miou_hand_computed():
    m = SemsegMeter(num_classes=3)
    target = torch.tensor([[[0, 0, 1, 1, 255, 2]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0, 0]]])
    m.update(pred, target)
    # class 0: TP 1, FP 1 (pixel 5), FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0, FN 1 -> 0
    assert m.compute()["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)


def test_miou_unseen_class_counts_zero_and_logits_are_argmaxed():
    m = SemsegMeter(num_classes=4)
    target = torch.tensor([[[0, 1]]])
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 0, 0, 0] = 5
    logits[0, 1, 0, 1] = 5
    m.update(logits, target)
    assert m.compute()["miou"] == pytest.approx(50.0)


def test_miou_is_streaming_over_batches():
    torch.manual_seed(1)
    t = torch.randint(0, 5, (6, 7, 9))
    p = torch.randint(0, 5, (6, 7, 9))
    once, twice = SemsegMeter(5), SemsegMeter(5)
    once.update(p, t)
    twice.update(p[:2], t[:2])
    twice.update(p[2:], t[2:])
    assert once.compute() == twice.compute()


def test_miou_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="outside 0..2"):
        SemsegMeter(3).update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))


def numpy_si_log(pred, gt, lo, hi):
    values = []
    for p, g in zip(pred.reshape(len(pred), -1), gt.reshape(len(gt), -1)):
        valid = np.isfinite(g) & (g > 0)
        if not valid.any():
            continue
        d = np.log(np.maximum(g[valid], 0.01)) - np.log(np.maximum(np.clip(p[valid], lo, hi), 0.01))
        values.append(100 * math.sqrt(max(np.mean(d ** 2) - np.mean(d) ** 2, 0.0)))
    return float(np.mean(values))


def test_si_log_rmse_hand_computed():
    gt = torch.tensor([[[[10.0, 20.0]]]])
    pred = torch.tensor([[[[10.0, 10.0]]]])
    # d = [0, log 2]; var = (log2)^2/2 - (log2/2)^2 = (log2)^2/4
    si, valid = si_log_rmse_per_image(pred, gt, (4.0, 300.0))
    assert valid.tolist() == [True]
    assert si.item() == pytest.approx(100 * math.log(2) / 2)
    # scale invariance: a constant factor changes nothing
    assert si_log_rmse_per_image(pred * 3, gt, (4.0, 300.0))[0].item() == pytest.approx(si.item())


@pytest.mark.parametrize("kernels", ["reference", "triton"])
def test_depth_metrics_match_numpy_float64(kernels, monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", kernels)  # the SI-log reduction runs through the kernel too
    rng = np.random.default_rng(3)
    gt = rng.uniform(1, 400, size=(5, 1, 11, 13))
    gt[rng.random(gt.shape) < 0.2] = np.nan
    gt[rng.random(gt.shape) < 0.1] = 0
    gt[3] = np.nan  # an image without valid depth is excluded
    pred = rng.uniform(0.5, 500, size=gt.shape)
    meter = DepthMeter((4.0, 300.0))
    meter.update(torch.tensor(pred[:2], dtype=torch.float32), torch.tensor(gt[:2], dtype=torch.float32))
    meter.update(torch.tensor(pred[2:], dtype=torch.float32), torch.tensor(gt[2:], dtype=torch.float32))
    got = meter.compute()
    p32, g32 = pred.astype(np.float32).astype(np.float64), gt.astype(np.float32).astype(np.float64)
    assert got["si_log_rmse"] == pytest.approx(numpy_si_log(p32, g32, 4.0, 300.0), rel=1e-9)
    valid = np.isfinite(g32) & (g32 > 0)
    g, p = np.maximum(g32[valid], 0.01), np.maximum(np.clip(p32[valid], 4, 300), 0.01)
    assert got["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-9)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-9)
    ratio = np.maximum(p / g, g / p)
    for k in (1, 2, 3):
        assert got[f"delta{k}"] == pytest.approx(100 * np.mean(ratio < 1.25 ** k), rel=1e-9)


def test_multitask_is_miou_minus_si():
    meter = TasksMeter({"semseg": SemsegMeter(2), "depth": DepthMeter((4.0, 300.0))}, {"miou": +1, "si_log_rmse": -1})
    meter.update({"semseg": torch.tensor([[[0, 1]]]), "depth": torch.tensor([[[[10.0, 10.0]]]])},
                 {"semseg": torch.tensor([[[0, 0]]]), "depth": torch.tensor([[[[10.0, 20.0]]]])})
    out = meter.compute()
    assert out["miou"] == pytest.approx(25.0)
    assert out["multitask"] == pytest.approx(out["miou"] - out["si_log_rmse"])
    assert out["multitask"] == pytest.approx(25.0 - 100 * math.log(2) / 2)
