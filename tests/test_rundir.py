"""Run directories: one writer, no silent overwrite, finished runs stay finished, resume rewinds
what a killed process wrote, best.pt is small, config.json says what ran."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

from fastmtl.checkpoint import load_checkpoint
from fastmtl.cli import main
from fastmtl.config import Config, ConfigError
from fastmtl.rundir import LOCK_NAME
from fastmtl.runtime import CPU_BUDGET_STEPS, Runtime, resolve_config
from fastmtl.train import Run, train

import tiny_runs  # tests/ helper


def tiny_config(data_root, out, **overrides):
    return tiny_runs.tiny_config(data_root, out, **{"model": "joint", **overrides})


def snapshot(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def event_steps(run):
    """Sorted ``(tag, step)`` of every summary value in the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found = []
    for f in run.glob("events.out.tfevents*"):
        for event in EventFileLoader(str(f)).Load():
            found += [(v.tag, event.step) for v in event.summary.value]
    return sorted(found)


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "finished"
    summary = train(tiny_config(tiny_data, out))
    return out, summary


def test_best_pt_has_no_resume_state_and_last_pt_has(finished_run):
    out, _ = finished_run
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        assert key not in best and key in last
    assert best["model"].keys() == last["model"].keys()
    assert (out / "best.pt").stat().st_size < 0.6 * (out / "last.pt").stat().st_size  # Adam doubles the weights


def test_summary_separates_warmup_from_steady_state(finished_run):
    _, summary = finished_run
    assert summary["warmup_steps"] == 3 and summary["steady_state_steps"] == 1
    assert summary["images_per_second"] > 0 and summary["warmup_seconds"] > 0
    parts = summary["warmup_seconds"] + summary["steady_state_seconds"] + summary["eval_seconds"]
    assert summary["wall_seconds"] >= parts > 0  # every second counted once
    assert summary["images_per_second"] == pytest.approx(2 / summary["steady_state_seconds"])  # 1 step of batch 2


def test_config_json_says_what_ran(finished_run, tiny_data):
    out, _ = finished_run
    ran = json.loads((out / "config.json").read_text())
    assert ran["device"] == "cpu" and ran["amp"] == "off" and ran["fused"] is False
    assert ran["max_steps"] == 4 and ran["epochs"] is None
    budget = resolve_config(Config(), Runtime(torch.device("cpu")))
    assert (budget.max_steps, budget.epochs, budget.size) == (CPU_BUDGET_STEPS, None, (64, 128))


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    out, summary = finished_run
    before = snapshot(out)
    assert main(["train", "--resume", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "is complete (step 4 of 4); nothing changed" in captured.err + captured.out
    assert json.loads(captured.out.strip().splitlines()[-1]) == summary
    assert snapshot(out) == before


def test_resume_with_a_larger_max_steps_trains_on(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, max_steps=2))
    summary = train(None, resume=str(out), resume_overrides={"max_steps": 4})
    assert summary["final"]["step"] == 4
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    with pytest.raises(ConfigError, match="only --max-steps, --epochs, --workers, --quiet, --device, --dist-timeout may be given.*--lr"):
        train(None, resume=str(out), resume_overrides={"lr": 0.5})


def test_a_second_run_into_the_same_directory_is_refused(finished_run, tiny_data, tmp_path, capsys):
    out, _ = finished_run
    before = snapshot(out)
    assert main(["train", "--data-root", str(tiny_data), "--out", str(out), "--device", "cpu", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"--out {out} already holds a run" in err and f"--resume {out}" in err and "--overwrite" in err
    assert snapshot(out) == before

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    train(tiny_config(tiny_data, copy, max_steps=2, eval_every=1), overwrite=True)
    assert [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(list(copy.glob("events.out.tfevents*"))) == 1


def test_a_directory_in_use_is_refused_and_a_stale_lock_is_taken_over(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{alive.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match=rf"--out {out} is in use by another fastmtl train \(PID {alive.pid}"):
            train(tiny_config(tiny_data, out, max_steps=1, eval_every=1))
        assert not (out / "config.json").exists()
    finally:
        alive.kill()
        alive.wait()
    # the process is gone now (as after a SIGKILL): its lock is stale
    train(tiny_config(tiny_data, out, max_steps=1, eval_every=1))
    assert (out / "summary.json").exists() and not (out / LOCK_NAME).exists()


def test_resume_without_a_checkpoint_names_the_flag(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--resume {tmp_path}: no checkpoint {tmp_path / 'last.pt'}" in err


def test_a_run_without_a_checkpoint_gives_the_command_that_works(tmp_path, capsys):
    run = tmp_path / "run"  # a run stopped before its first save
    run.mkdir()
    (run / "config.json").write_text(Config(out=str(run)).to_json())
    restart = f"fastmtl train --config {run / 'config.json'} --out {run} --overwrite"
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "stopped before it saved one" in err and restart in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--out", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--out {run} holds a run that has no checkpoint" in err and restart in err and "--resume" not in err
    assert main(["eval", "--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no best.pt or last.pt: the run there has not finished" in err and "config.json" in err


@pytest.mark.parametrize("bad", [{"data_root": "missing"}, {"data_root": "empty"}, {"batch_size": 64},
                                 {"pretrained": "/nonexistent/weights.pth"}])
def test_overwrite_keeps_the_old_run_until_the_new_one_is_checked(finished_run, tiny_data, tmp_path, bad):
    out, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = snapshot(copy)
    (tmp_path / "empty").mkdir()
    root = tmp_path / bad.pop("data_root") if "data_root" in bad else tiny_data
    with pytest.raises((ValueError, OSError)):  # what the CLI reports as one line
        train(tiny_config(root, copy, **bad), overwrite=True)
    assert snapshot(copy) == before


def test_a_failed_train_leaves_no_empty_folder_it_created(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", "--data-root", str(tmp_path / "missing"), "--out", str(out), "--device", "cpu"]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_torn_last_metrics_line_is_dropped_on_resume(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_data, out, max_steps=4), stop_after=2)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "miou": 1')  # killed while appending
    with pytest.warns(UserWarning, match="dropped its last line 2, torn"):
        train(None, resume=str(out))
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]


def test_a_torn_summary_of_a_finished_run_is_written_anew(finished_run, tmp_path):
    out, summary = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "summary.json").write_text("")
    with pytest.warns(UserWarning, match=r"summary\.json: summary\.json is empty"):
        again = train(None, resume=str(copy))
    assert json.loads((copy / "summary.json").read_text()) == again
    assert again["final"] == summary["final"]


def test_a_relative_data_root_is_stored_absolute(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_data.parent)
    out = tmp_path / "run"
    train(tiny_config(tiny_data.name, out, max_steps=1, eval_every=1))
    assert json.loads((out / "config.json").read_text())["data_root"] == str(tiny_data.resolve())
    assert load_checkpoint(out / "last.pt")["config"]["data_root"] == str(tiny_data.resolve())


def test_last_pt_by_steps_without_an_evaluation(tiny_data, tmp_path, monkeypatch):
    real_step, calls = Run.step_on_device, {"n": 0}

    def crash_at_step_3(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the machine fell over")
        return real_step(self, batch)

    monkeypatch.setattr(Run, "step_on_device", crash_at_step_3)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="fell over"):
        train(tiny_config(tiny_data, out, max_steps=6, eval_every=100, checkpoint_every=2))
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert not (out / "metrics.jsonl").exists() and not (out / "best.pt").exists()
    with pytest.warns(UserWarning, match="no best.pt"):
        assert load_checkpoint(out)["step"] == 2


def test_ctrl_c_saves_last_pt_and_the_resume_is_exact(tiny_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_data, straight, max_steps=5, eval_every=100))
    real_step, calls = Run.step_on_device, {"n": 0}

    def ctrl_c_in_step_3(self, batch):
        calls["n"] += 1
        result = real_step(self, batch)
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Run, "step_on_device", ctrl_c_in_step_3)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match=rf"saved {out / 'last.pt'} at step 3 of 5; resume with: "
                                               rf"fastmtl train --resume {out}"):
        train(tiny_config(tiny_data, out, max_steps=5, eval_every=100))
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(Run, "step_on_device", real_step)
    train(None, resume=str(out))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(out / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_resume_after_a_lost_segment_leaves_the_directory_as_an_uninterrupted_run(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(tiny_data, straight, max_steps=6))
    run = tmp_path / "killed"
    train(tiny_config(tiny_data, run, max_steps=6), stop_after=2)
    shutil.copy(run / "last.pt", tmp_path / "last_at_2.pt")
    train(None, resume=str(run), stop_after=4)
    # a SIGKILL while step 4's checkpoint was being written: metrics and events of step 4 exist,
    # last.pt is still the one of step 2 and a temp file is left
    shutil.copy(tmp_path / "last_at_2.pt", run / "last.pt")
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"partial")
    train(None, resume=str(run))
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert event_steps(run) == event_steps(straight)
    assert ("val/rgb", 2) in event_steps(run) and ("val/depth_gt", 6) in event_steps(run)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(run / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_train_from_a_saved_config_with_flags_overriding(finished_run, tmp_path):
    out, _ = finished_run
    new = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.json"), "--out", str(new), "--max-steps", "2",
                 "--eval-every", "1"]) == 0
    old_cfg, new_cfg = (json.loads((d / "config.json").read_text()) for d in (out, new))
    assert new_cfg["max_steps"] == 2 and new_cfg["out"] == str(new)
    assert {k: v for k, v in new_cfg.items() if k not in ("max_steps", "out", "eval_every")} == \
        {k: v for k, v in old_cfg.items() if k not in ("max_steps", "out", "eval_every")}


def test_bad_config_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text('{"modle": "joint"}')
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"--config {bad}: unknown config fields ['modle']" in err and len(err.strip().splitlines()) == 1


def test_eval_prints_per_class_iou(finished_run, capsys):
    out, summary = finished_run
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--workers", "0", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert list(metrics["iou_per_class"])[:3] == ["road", "sidewalk", "building"]
    assert sum(metrics["iou_per_class"].values()) / len(metrics["iou_per_class"]) == pytest.approx(metrics["miou"])
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "traffic light" in table and "IoU %" in table


def test_version(capsys):
    from fastmtl import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fastmtl {__version__}"
