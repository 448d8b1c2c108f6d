"""Outputs: predict never writes two inputs to one output, export checks its target and leaves
nothing partial, nonsense counts (batch sizes, workers, image counts) are refused by the flags."""
import os

import numpy as np
import pytest
from PIL import Image

from fastmtl.cli import main
from fastmtl.export import check_target
from fastmtl.predict import predict


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("names", [("a/x.png", "b/x.png"), ("x.png", "x.jpg")])
def test_predict_refuses_two_inputs_with_one_output_before_writing(tmp_path, names):
    inputs = [_png(tmp_path / n) for n in names]
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:  # before the checkpoint is even read
        predict(str(tmp_path / "no.pt"), [str(p) for p in inputs], str(out))
    assert all(str(p) in str(e.value) for p in inputs) and "same outputs" in str(e.value)
    assert not out.exists()


def test_the_same_input_named_twice_is_predicted_once(tmp_path):
    image = _png(tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):  # past the clash check: on to the (missing) checkpoint
        predict(str(tmp_path / "no.pt"), [str(image), str(tmp_path / "." / "x.png")], str(tmp_path / "o"))


def test_export_target_is_checked_before_anything(tmp_path, capsys):
    checkpoint = str(tmp_path / "none.pt")  # never read: the target is refused first
    for out, message in ((tmp_path, "is a directory"), (tmp_path / "no" / "m.onnx", "does not exist")):
        assert main(["export", "--checkpoint", checkpoint, "--format", "torchscript", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--out {out}" in err and message in err, err
    assert sorted(os.listdir(tmp_path)) == []
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: every folder is writable")
        with pytest.raises(PermissionError, match="cannot write there"):
            check_target(locked / "m.pt")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("argv", [
    ["eval", "--checkpoint", "x", "--batch-size", "0"],
    ["eval", "--checkpoint", "x", "--workers", "-1"],
    ["profile", "--batch-size", "0"],
    ["profile", "--num-classes", "0"],
    ["data", "synthetic", "--train", "0"],
    ["data", "synthetic", "--workers", "0"],
])
def test_nonsense_counts_are_refused_naming_the_flag(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    flag = next(a for a in argv if a.startswith("--") and a != "--checkpoint")
    assert f"argument {flag}: must be >=" in capsys.readouterr().err
