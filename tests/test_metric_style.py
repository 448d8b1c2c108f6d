"""``--metric-style libmtl|mtan`` against hand computations, and ``fastmtl eval``'s progress bar only
on a terminal."""
import io
import json
import sys

import pytest
import torch

from fastmtl.cli import main
from fastmtl.data.synthetic import generate_dataset
from fastmtl.errors import ConfigError
from fastmtl.evaluate import evaluate_checkpoint, evaluate_tasks, tasks_meter
from fastmtl.metrics import BatchMeanMeter
from fastmtl.tasks.depth import DepthMeter
from fastmtl.tasks.normals import NormalsMeter
from fastmtl.tasks.semseg import SemsegMeter, SemsegTask
from fastmtl.train import train
from tiny_runs import one_thread, tiny_config  # noqa: F401 (autouse fixture)

# two batches of depth (N, 1, H, W): batch 1 has 2 valid pixels, batch 2 has 4 (0 = invalid)
TARGETS = [torch.tensor([[[[10.0, 20.0, 0.0]]]]), torch.tensor([[[[10.0, 10.0, 10.0, 10.0]]]])]
PREDS = [torch.tensor([[[[12.0, 20.0, 7.0]]]]), torch.tensor([[[[11.0, 11.0, 11.0, 11.0]]]])]


def test_mtan_style_averages_per_batch_means_by_hand():
    libmtl, mtan = DepthMeter(depth_range=(0.5, 100.0)), BatchMeanMeter(lambda: DepthMeter(depth_range=(0.5, 100.0)))
    for p, t in zip(PREDS, TARGETS):
        libmtl.update(p, t)
        mtan.update(p, t)
    # libmtl: over all 6 valid pixels; mtan: each batch's mean, then the mean of the two
    assert libmtl.compute()["abs_err"] == pytest.approx((2 + 0 + 4 * 1) / 6)
    assert mtan.compute()["abs_err"] == pytest.approx(((2 + 0) / 2 + 4 / 4) / 2)
    assert mtan.compute()["rel_err"] == pytest.approx(((2 / 10 + 0) / 2 + 4 * 0.1 / 4) / 2)


def test_mtan_style_normals_median_is_per_batch():
    def normals(angles_deg):  # unit vectors at these angles from +z, in the x-z plane, (1, 3, 1, W)
        a = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
        return torch.stack([a.sin(), torch.zeros_like(a), a.cos()])[None, :, None, :]

    target = [normals([0.0] * 3), normals([0.0])]
    pred = [normals([10.0, 20.0, 30.0]), normals([40.0])]
    meter = BatchMeanMeter(NormalsMeter)
    for p, t in zip(pred, target):
        meter.update(p, t)
    out = meter.compute()
    assert out["angle_mean"] == pytest.approx((20 + 40) / 2)
    assert out["angle_median"] == pytest.approx((20 + 40) / 2, abs=1e-3)  # histogram median: half a bin
    assert out["angle_within_22.5"] == pytest.approx((100 * 2 / 3 + 0) / 2)


def test_tasks_meter_keeps_semseg_over_the_split_and_refuses_unknown_styles():
    class Depth:
        name, headline, metric_directions, whole_split_in_mtan_style = "depth", "abs_err", {"abs_err": -1}, False
        meter = staticmethod(DepthMeter)

    meters = tasks_meter([SemsegTask(3), Depth()], "mtan").meters
    assert isinstance(meters["semseg"], SemsegMeter) and isinstance(meters["depth"], BatchMeanMeter)
    assert isinstance(tasks_meter([Depth()]).meters["depth"], DepthMeter)
    with pytest.raises(ConfigError, match="--metric-style"):
        tasks_meter([Depth()], "nash")


class Replay(torch.nn.Module):
    """Returns the next stored depth prediction for each batch."""

    def __init__(self, preds):
        super().__init__()
        self.preds = list(preds)

    def forward(self, rgb):
        return {"depth": self.preds.pop(0)}


class DepthIdentity:
    name, headline, metric_directions, whole_split_in_mtan_style = "depth", "abs_err", {"abs_err": -1}, False

    def decode(self, p):
        return p

    def meter(self):
        return DepthMeter(depth_range=(0.5, 100.0))


def batches():
    return [{"rgb": torch.zeros(1, 3, 1, t.shape[-1]), "depth": t} for t in TARGETS]


def test_evaluate_tasks_in_both_styles():
    libmtl = evaluate_tasks(Replay(PREDS), batches(), [DepthIdentity()], torch.device("cpu"))
    mtan = evaluate_tasks(Replay(PREDS), batches(), [DepthIdentity()], torch.device("cpu"), metric_style="mtan")
    assert libmtl["abs_err"] == pytest.approx(1.0) and mtan["abs_err"] == pytest.approx(1.0)
    assert libmtl["rel_err"] == pytest.approx((0.2 + 0.4) / 6)
    assert mtan["rel_err"] == pytest.approx((0.1 + 0.1) / 2)


class FakeStderr(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_only_on_a_terminal(tty, monkeypatch):
    err = FakeStderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    evaluate_tasks(Replay(PREDS), batches(), [DepthIdentity()], torch.device("cpu"), progress=None)
    assert ("eval" in err.getvalue()) == tty
    err2 = FakeStderr(True)
    monkeypatch.setattr(sys, "stderr", err2)
    evaluate_tasks(Replay(PREDS), batches(), [DepthIdentity()], torch.device("cpu"), progress=False)
    assert err2.getvalue() == ""


@pytest.mark.slow
def test_compare_in_mtan_style_evaluates_each_runs_checkpoint(tmp_path, capsys):
    root = tmp_path / "synthetic"
    generate_dataset(root, train=4, val=3, size=(64, 64), seed=3, workers=1, progress=False)
    runs = [tmp_path / name for name in ("joint", "branched")]
    for run in runs:
        train(tiny_config(root, run, model=run.name, max_steps=1, eval_every=1))
    capsys.readouterr()
    assert main(["compare", str(runs[1]), "--baseline", str(runs[0]), "--metric-style", "mtan", "--device", "cpu",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric_style"] == "mtan"
    want = evaluate_checkpoint(str(runs[1] / "last.pt"), workers=0, metric_style="mtan")
    got = report["runs"][1]["metrics"]
    assert got["si_log_rmse"] == pytest.approx(want["si_log_rmse"]) and got["abs_err"] == pytest.approx(want["abs_err"])
    # 3 validation images at batch size 2: the per-batch average differs from the recorded one
    recorded = json.loads((runs[1] / "summary.json").read_text())["final_all"]
    assert got["abs_err"] != pytest.approx(recorded["abs_err"], rel=1e-9)
