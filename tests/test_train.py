"""End to end: train -> eval with equal numbers, exact resume, 2-process DDP, predict's files."""
import json
import os
import subprocess
import sys

import pytest
import torch

from fastmtl.checkpoint import load_checkpoint
from fastmtl.cli import main
from fastmtl.config import Config
from fastmtl.train import train

from tiny_runs import tiny_config  # tests/ helper


def test_train_then_eval_gives_the_same_numbers(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    summary = train(tiny_config(tiny_data, out))
    for name in ("config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (out / name).exists(), name
    assert any(p.name.startswith("events.out.tfevents") for p in out.iterdir())
    assert summary == json.loads((out / "summary.json").read_text())
    for key in ("best", "final"):
        assert set(summary[key]) >= {"miou", "si_log_rmse", "multitask", "step"}
    assert summary["images_per_second"] > 0 and summary["wall_seconds"] > 0
    assert summary["final"]["step"] == 4
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    resolved = Config.from_json((out / "config.json").read_text())
    assert resolved.fused is False and resolved.size == (64, 64)

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--json", "--device", "cpu", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for k in ("miou", "si_log_rmse", "multitask"):
        assert evaluated[k] == pytest.approx(summary["best"][k], rel=1e-6, abs=1e-6)


def test_resume_is_exact(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_data, straight, max_steps=5, eval_every=5))
    resumed = tmp_path / "resumed"
    train(tiny_config(tiny_data, resumed, max_steps=5, eval_every=5), stop_after=3)
    assert load_checkpoint(resumed / "last.pt")["step"] == 3
    train(None, resume=str(resumed))
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(resumed / "last.pt")
    assert a["step"] == b["step"] == 5
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])


def test_predict_writes_raw_results_and_pictures_at_the_input_size(tiny_data, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, max_steps=1, eval_every=1))
    pred_dir = tmp_path / "pred"
    rgb_dir = tiny_data / "val" / "rgb"
    odd = tmp_path / "odd.png"  # 333 x 250 (W x H): not a multiple of the output stride
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (250, 333, 3), dtype=np.uint8)).save(odd)
    assert main(["predict", "--checkpoint", str(out), str(rgb_dir), str(odd), "--out", str(pred_dir),
                 "--device", "cpu"]) == 0
    n = len(list(rgb_dir.iterdir())) + 1
    files = sorted(p.name for p in pred_dir.iterdir())
    assert len(files) == 5 * n
    with Image.open(pred_dir / "odd_panel.png") as panel, Image.open(pred_dir / "odd_semseg.png") as seg, \
            Image.open(pred_dir / "odd_trainid.png") as ids, Image.open(pred_dir / "odd_depth.png") as depth:
        assert seg.size == ids.size == depth.size == (333, 250) and panel.size == (3 * 333, 250)
        assert seg.mode == "RGB" and ids.mode == "L" and np.array(ids).max() < 19
    depth_m = np.load(pred_dir / "odd_depth.npy")
    assert depth_m.shape == (250, 333) and depth_m.dtype == np.float32 and np.isfinite(depth_m).all()
    assert (depth_m > 0).all()


def test_predict_tasks_of_a_multiple_size_equals_the_model(tiny_data, tmp_path):
    import numpy as np

    from fastmtl.restore import checkpoint_tasks, model_from_checkpoint
    from fastmtl.tasks.depth import DepthNormalizer
    from fastmtl.transforms import normalize_rgb
    from fastmtl.predict import predict_tasks

    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, max_steps=1, eval_every=1))
    ckpt = load_checkpoint(out)
    model, _ = model_from_checkpoint(ckpt)
    model.eval()
    normalizer = DepthNormalizer.from_dict(ckpt["normalizer"])
    rgb = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        results = predict_tasks(model, rgb, checkpoint_tasks(ckpt))
        labels, depth_m = results["semseg"], results["depth"]
        x = normalize_rgb({"rgb": torch.from_numpy(rgb).permute(2, 0, 1)})["rgb"][None]
        pred = model(x)
    expected_depth = normalizer.denormalize(pred["depth"][-1])[0, 0].numpy()
    assert (labels == pred["semseg"][-1][0].argmax(0).numpy()).all()
    np.testing.assert_allclose(depth_m, expected_depth, rtol=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "fastmtl", "train", "--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T",
           "--data-root", str(tiny_data), "--size", "64x64", "--batch-size", "2", "--workers", "0",
           "--max-steps", "2", "--eval-every", "2", "--quiet", "--out", str(out), "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["step"] == 2
    # 2 ranks x batch 2 per step
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
