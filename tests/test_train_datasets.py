"""End to end on the field's formats: a 2-task (semseg + depth) train -> eval on an NYUv2 .npy
fixture and on a Cityscapes-official fixture; predict on .npy images."""
import json

import numpy as np
import pytest
from PIL import Image

from fastmtl.cli import main
from fastmtl.data import NYUV2_CLASS_COLORS
from fastmtl.train import train

from dataset_fixtures import write_cityscapes_official, write_nyuv2  # tests/ helper
from tiny_runs import tiny_config  # tests/ helper


def _train_then_eval(root, dataset, out, capsys):
    summary = train(tiny_config(root, out, dataset=dataset, model="joint", max_steps=2, eval_every=2))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "best.pt"), "--json", "--device", "cpu", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for k in ("miou", "si_log_rmse", "multitask"):
        assert np.isfinite(summary["best"][k])
        assert evaluated[k] == pytest.approx(summary["best"][k], rel=1e-6, abs=1e-6)
    return summary, evaluated


def test_nyuv2_train_eval_predict(tmp_path, capsys):
    root = tmp_path / "nyuv2"
    write_nyuv2(root, train=4, val=2, size=(64, 96))
    out = tmp_path / "run"
    summary, evaluated = _train_then_eval(root, "nyuv2", out, capsys)
    assert set(evaluated["iou_per_class"]) == {"bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                                               "picture", "sofa", "table", "tv", "wall", "window"}
    assert summary["final"]["step"] == 2
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(out), str(root / "val" / "image" / "1.npy"), "--out", str(pred),
                 "--device", "cpu"]) == 0
    depth = np.load(pred / "1_depth.npy")
    assert depth.shape == (64, 96) and np.isfinite(depth).all() and (depth > 0).all()
    with Image.open(pred / "1_trainid.png") as ids, Image.open(pred / "1_semseg.png") as seg:
        ids, seg = np.array(ids), np.array(seg)
    assert ids.shape == (64, 96) and ids.max() < 13
    assert np.array_equal(seg, np.array(NYUV2_CLASS_COLORS, np.uint8)[ids])  # the dataset's colours


@pytest.mark.parametrize("dataset,first,classes", [("cityscapes", "road", 19), ("cityscapes7", "flat", 7)])
def test_cityscapes_official_train_eval(tmp_path, capsys, dataset, first, classes):
    root = tmp_path / "cityscapes"
    write_cityscapes_official(root, "train", "aachen", n=4, size=(64, 128))
    write_cityscapes_official(root, "val", "lindau", n=2, size=(64, 128), seed=1)
    _, evaluated = _train_then_eval(root, dataset, tmp_path / "run", capsys)
    assert len(evaluated["iou_per_class"]) == classes and first in evaluated["iou_per_class"]


def test_a_bad_npy_file_stops_train_with_one_line(tmp_path, capsys):
    root = tmp_path / "nyuv2"
    write_nyuv2(root, train=4, val=2, size=(64, 96))
    np.save(root / "val" / "depth" / "1.npy", np.full((64, 96, 1), np.nan, np.float32))
    code = main(["train", "--dataset", "nyuv2", "--data-root", str(root), "--out", str(tmp_path / "run"),
                 "--encoder", "resnet18", "--dilation", "F,F,T", "--model", "joint", "--size", "64x64",
                 "--batch-size", "2", "--max-steps", "1", "--workers", "0", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("fastmtl train: error: ")
    assert f"{root / 'val' / 'depth' / '1.npy'}: depth: 6144 value(s) are NaN or infinite" in err[-1]
