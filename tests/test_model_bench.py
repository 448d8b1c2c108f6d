"""``fastmtl bench --models``: the model-level report (one tiny eager train step on CPU; speed
is never asserted, only that the numbers are consistent and complete)."""
import json

import pytest

from fastmtl.cli import main
from fastmtl.config import Config


def test_default_model_train_step_report(capsys):
    rc = main(["bench", "--models", "default", "--size", "tiny", "--steps", "2", "--impls", "eager,fused",
               "--device", "cpu", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "fastmtl-bench-models/1" and report["size"] == "tiny"
    eager, fused = report["rows"]
    assert (eager["model"], eager["phase"], eager["impl"]) == (Config().model, "train", "eager")
    assert eager["error"] is None and eager["skipped"] is None and eager["steps"] == 2
    assert eager["images_per_s"] == pytest.approx(eager["batch"] / (eager["median_ms"] * 1e-3))
    assert eager["peak_memory_mib"] is None and eager["warmup_s"] >= 0 and eager["speedup_vs_eager"] == 1.0
    assert fused["median_ms"] is None and "CUDA only" in fused["skipped"]
    assert report["selfcheck_fallbacks"] == []


@pytest.mark.parametrize("argv, message", [
    (["--models", "resnet"], "--models: unknown value 'resnet'"),
    (["--models", "default", "--phases", "eval"], "--phases: unknown value 'eval'"),
    (["--models", "default", "--steps", "0"], "--steps must be >= 1"),
    (["--models", "default", "--size", "huge"], "--size must be one of tiny, small, full"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert main(["bench", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err
