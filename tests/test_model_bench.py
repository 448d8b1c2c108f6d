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
    assert eager["layout"] == "nchw" and eager["encoder"] == Config().encoder  # today's default: no --channels-last


def test_rows_order_layouts_encoders_and_jsonl(tmp_path, capsys):
    jsonl = tmp_path / "rows.jsonl"
    rc = main(["bench", "--models", "joint@resnet18", "--size", "tiny", "--steps", "1", "--impls",
               "compile_graphs,eager,fused_compile_graphs", "--layouts", "channels_last,nchw", "--device", "cpu",
               "--json", "--rows-jsonl", str(jsonl)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    order = [(l, i) for l in ("channels_last", "nchw") for i in ("compile_graphs", "eager", "fused_compile_graphs")]
    assert [(r["layout"], r["impl"]) for r in rows] == order
    assert all((r["model"], r["encoder"]) == ("joint", "resnet18") for r in rows)
    for r in rows:
        if r["impl"] == "eager":
            assert r["error"] is None and r["median_ms"] > 0 and r["speedup_vs_eager"] == 1.0
        else:
            assert "CUDA graphs need a CUDA device" in r["skipped"] and r["median_ms"] is None
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows  # one flushed line per row


@pytest.mark.parametrize("argv, message", [
    (["--models", "resnet"], "--models: unknown value 'resnet'"),
    (["--models", "joint@vgg"], "--models: unknown encoder 'vgg' in 'joint@vgg'"),
    (["--models", "default", "--layouts", "nhwc"], "--layouts: unknown value 'nhwc'"),
    (["--models", "default", "--impls", "graphs"], "--impls: unknown value 'graphs'"),
    (["--kernel-table"], "--kernel-table needs --models"),
    (["--models", "default", "--rows-jsonl", "/nonexistent-dir/rows.jsonl"], "rows.jsonl"),
    (["--models", "default", "--phases", "eval"], "--phases: unknown value 'eval'"),
    (["--models", "default", "--steps", "0"], "--steps must be >= 1"),
    (["--models", "default", "--size", "huge"], "--size must be one of tiny, small, full"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    assert main(["bench", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err
