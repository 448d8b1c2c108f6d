"""Tasks end to end: a 3-task train -> eval -> predict -> compare on the tiny synthetic set (normals
from the generator); a
2-task run equals an independent computation of its loss and metrics; old checkpoints still load;
the distillation model with T tasks."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastmtl.checkpoint import load_checkpoint
from fastmtl.restore import model_from_checkpoint
from fastmtl.cli import main
from fastmtl.train import Run, train
from fastmtl.transforms import eval_transform

from tiny_runs import one_thread, tiny_config  # noqa: F401 - one_thread: autouse fixture


@pytest.fixture(scope="module")
def normals_data(tiny_data):
    """The built-in synthetic format: its generator writes ``normals/`` (version 2)."""
    assert (tiny_data / "train" / "normals").is_dir() and (tiny_data / "val" / "normals").is_dir()
    return tiny_data


THREE = ("semseg", "depth", "normals")


def test_three_tasks_train_eval_predict_compare(normals_data, tmp_path, capsys):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    a, b = tmp_path / "distill", tmp_path / "joint"
    summary = train(tiny_config(normals_data, a, tasks=THREE, max_steps=2, eval_every=2))
    final = summary["final_all"]
    for key in ("miou", "pixel_acc", "si_log_rmse", "abs_err", "rel_err", "angle_mean", "angle_median",
                "angle_within_11.25", "angle_within_22.5", "angle_within_30"):
        assert np.isfinite(final[key]), key
    assert set(summary["best"]) == {"miou", "si_log_rmse", "angle_mean", "multitask", "step"}
    assert final["multitask"] == pytest.approx(final["miou"] - final["si_log_rmse"] - final["angle_mean"])
    assert set(summary["baselines"]) == {"majority_class", "mean_depth", "mean_normal"}
    assert summary["weighting"]["final_weights"] == {"semseg": 0.5, "depth": 0.5, "normals": 0.5}
    assert load_checkpoint(a / "best.pt")["outputs_desc"]["normals"] == 3
    events = EventAccumulator(str(a)).Reload()
    assert {"val/normals_pred", "val/normals_gt", "val/semseg_pred", "val/depth_gt"} <= set(events.Tags()["images"])
    assert {"val/angle_mean", "val/angle_within_30"} <= set(events.Tags()["scalars"])

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(a / "best.pt"), "--json", "--device", "cpu", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for k in ("miou", "si_log_rmse", "angle_mean", "multitask"):
        assert evaluated[k] == pytest.approx(summary["best"][k], rel=1e-6, abs=1e-6)

    pred_dir = tmp_path / "pred"
    image = normals_data / "val" / "rgb" / sorted(p.name for p in (normals_data / "val" / "rgb").iterdir())[0]
    assert main(["predict", "--checkpoint", str(a), str(image), "--out", str(pred_dir), "--device", "cpu"]) == 0
    stem = image.stem
    assert sorted(p.name for p in pred_dir.iterdir()) == sorted(
        f"{stem}_{s}" for s in ("trainid.png", "semseg.png", "depth.npy", "depth.png", "normals.npy", "normals.png",
                                "panel.png"))
    normals = np.load(pred_dir / f"{stem}_normals.npy")
    assert normals.shape == (64, 96, 3) and np.allclose(np.linalg.norm(normals, axis=-1), 1, atol=1e-5)
    with Image.open(pred_dir / f"{stem}_panel.png") as panel:
        assert panel.size == (4 * 96, 64)

    # a second run: another model, a gradient weighting method over the three tasks (rep mode)
    assert main(["train", "--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T", "--tasks", ",".join(THREE),
                 "--data-root", str(normals_data), "--size", "64x64", "--batch-size", "2", "--workers", "0",
                 "--max-steps", "1", "--quiet", "--out", str(b), "--device", "cpu", "--weighting", "pcgrad",
                 "--weighting-grads", "rep"]) == 0
    second = json.loads((b / "summary.json").read_text())
    assert set(second["weighting"]["final_weights"]) == set(THREE)
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--baseline", str(a), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tasks"] == list(THREE) and [r["label"] for r in report["runs"]] == ["distill", "joint"]
    counted = [(m, s) for t in THREE for m, s in report["delta_m_metrics"][t].items()]
    assert len(counted) == 9  # LibMTL's NYUv2 set: 2 + 2 + 5
    expected = 100 * np.mean([s * (second["final_all"][m] - final[m]) / final[m] for m, s in counted])
    assert report["runs"][0]["delta_m"] == 0.0
    assert report["runs"][1]["delta_m"] == pytest.approx(expected, rel=1e-9)
    assert main(["compare", str(b), "--baseline", str(a)]) == 0
    table = capsys.readouterr().out
    assert "normals angle_within_11.25 *" in table and "Δm % (per task)" in table


def test_a_normals_only_run_trains_and_evaluates(normals_data, tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(tiny_config(normals_data, out, tasks=("normals",), model="branched", max_steps=1, eval_every=1))
    assert set(summary["best"]) == {"angle_mean", "multitask", "step"}
    assert summary["final_all"]["multitask"] == -summary["final_all"]["angle_mean"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "angle_within_22.5" in printed and "IoU" not in printed


def test_two_task_run_equals_an_independent_computation(tiny_data, tmp_path):
    """The trainer's loss and metrics through the task objects equal the semseg + depth formulas
    written out here (main's code path: CE + per-image L1 of normalised log-depth; the two meters)."""
    from fastmtl import data as fdata
    from fastmtl.metrics import TasksMeter
    from fastmtl.tasks.depth import DepthMeter
    from fastmtl.tasks.semseg import SemsegMeter

    cfg = tiny_config(tiny_data, tmp_path / "run", model="joint", max_steps=1, eval_every=1)
    run = Run(cfg)
    batch = next(iter(run.train_loader))
    out = run.model(batch["rgb"])
    total, parts = run.loss_fn(out, {"semseg": batch["semseg"], "depth": batch["depth"]})
    stats = run.info.depth_stats
    target = (batch["depth"].log() - stats["log_mean"]) / stats["log_std"]
    per_image = [(p - t)[t.isfinite()].abs().mean() for p, t in zip(out["depth"], target) if t.isfinite().any()]
    ce = F.cross_entropy(out["semseg"], batch["semseg"], ignore_index=255)
    torch.testing.assert_close(parts["semseg"], ce, rtol=1e-6, atol=0)
    torch.testing.assert_close(parts["depth"], torch.stack(per_image).mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(total, 0.5 * ce + 0.5 * torch.stack(per_image).mean(), rtol=1e-6, atol=0)

    summary = train(cfg, overwrite=True)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    model, _ = model_from_checkpoint(ckpt)
    model.eval()
    meter = TasksMeter({"semseg": SemsegMeter(run.info.num_classes), "depth": DepthMeter(run.info.depth_range)},
                       {"miou": +1, "si_log_rmse": -1})
    val = fdata.SegDepthFolder(tiny_data, "val", transform=eval_transform(32))
    with torch.no_grad():
        for b in fdata.build_loader(val, cfg.batch_size, shuffle=False, workers=0, seed=0):
            pred = model(b["rgb"])
            depth_m = (pred["depth"] * stats["log_std"] + stats["log_mean"]).exp()
            meter.update({"semseg": pred["semseg"], "depth": depth_m}, {"semseg": b["semseg"], "depth": b["depth"]})
    expected = meter.compute()
    for k, v in expected.items():
        assert summary["final_all"][k] == v, k  # bit-equal


def test_checkpoints_of_runs_before_tasks_still_load(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_data, out, max_steps=1, eval_every=1))
    ckpt = load_checkpoint(out / "best.pt")
    # the config of main before tasks: no tasks / task_weights / task_options, the two-task fields
    old = {k: v for k, v in ckpt["config"].items() if k not in ("tasks", "task_weights", "task_options")}
    old.update(weight_semseg=0.5, weight_depth=0.5, depth_loss="l1", depth_norm="log")
    ckpt["config"] = old
    del ckpt["dataset"]["tasks"]
    torch.save(ckpt, out / "old.pt")
    (out / "config.json").write_text(json.dumps(old))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "old.pt"), "--json", "--device", "cpu", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["multitask"] == pytest.approx(summary["best"]["multitask"], abs=1e-6)
    from fastmtl.compare import load_run

    assert load_run(str(out))["tasks"] == ("semseg", "depth")


def test_distillation_with_three_tasks_attends_to_every_other_task():
    from fastmtl.config import Config
    from fastmtl.models import build_model

    desc = {"semseg": 4, "depth": 1, "normals": 3}
    model = build_model(Config(model="distill", encoder="resnet18", dilation=(False, False, True)), desc).eval()
    assert set(model.attention) == set(model.decoder2) == set(desc)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = model.encoder(x)
        per_task = model.task_features(features)
        out = model.decode(features)
        for t in desc:
            fused = per_task[t][1] + sum(model.attention[s](per_task[s][1]) for s in desc if s != t)
            torch.testing.assert_close(out[t][1], model.decoder2[t](fused), rtol=1e-5, atol=1e-5)
            assert out[t][1].shape[1] == desc[t]


def test_profile_counts_a_head_per_task(capsys):
    argv = ["profile", "--model", "joint", "--encoder", "resnet34", "--dilation", "F,F,T", "--no-se", "--size", "64x64",
            "--json"]
    assert main(argv) == 0
    two = json.loads(capsys.readouterr().out)["params"]
    assert two == 26_125_748  # the report's joint network (Table 9), unchanged
    assert main(argv + ["--tasks", "semseg,depth,normals"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == two + 3 * 256 + 3  # 3 more outputs of the 1x1 head
