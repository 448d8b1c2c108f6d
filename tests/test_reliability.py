"""Reliability: interrupted runs, unusable output folders, missing data, untrusted files, flat memory."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastmtl import checkpoint as ckpt_mod
from fastmtl.checkpoint import load_checkpoint, save_atomic
from fastmtl.cli import main
from fastmtl.config import Config, ConfigError
from fastmtl.data.synthetic import generate_dataset
from fastmtl.train import train
from fastmtl.transforms import eval_transform


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability") / "synthetic"
    generate_dataset(root, train=8, val=4, size=(32, 64), seed=2, workers=1, progress=False)
    return root


def train_args(data_root, out, max_steps, eval_every):
    return ["train", "--model", "joint", "--encoder", "resnet18", "--dilation", "F,F,T", "--data-root", str(data_root),
            "--size", "32x32", "--batch-size", "2", "--workers", "0", "--max-steps", str(max_steps),
            "--eval-every", str(eval_every), "--quiet", "--out", str(out), "--device", "cpu", "--lr", "1e-3"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_data, tmp_path):
    steps, every = 15, 3
    straight = tmp_path / "straight"
    assert main(train_args(tiny_data, straight, steps, every)) == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fastmtl", *train_args(tiny_data, run, steps, every)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    # metrics.jsonl gets its line just before last.pt is replaced: once step 9 is logged, last.pt holds
    # step 6 or 9, a checkpoint in the middle of an epoch (4 steps per epoch); kill during what follows
    while time.time() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and any(json.loads(l)["step"] >= 9 for l in metrics.read_text().splitlines() if l.strip()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    interrupted_at = load_checkpoint(run / "last.pt")["step"]  # loads: not corrupt
    assert 6 <= interrupted_at < steps

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == steps
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # the directory is as the uninterrupted run left it: no temp file, lock, or step logged twice
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []

    def steps_logged(d):
        return [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert steps_logged(run) == steps_logged(straight) == [3, 6, 9, 12, 15]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    def tags_and_steps(d):
        return sorted((v.tag, e.step) for f in d.glob("events.out.tfevents*")
                      for e in EventFileLoader(str(f)).Load() for v in e.summary.value)

    assert tags_and_steps(run) == tags_and_steps(straight)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")])
def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch, error):
    """A full disk (an OSError, or torch.save's RuntimeError on a short write): one OSError naming the
    file and the free space, the previous checkpoint intact, no temp file."""
    path = tmp_path / "last.pt"
    save_atomic({"format": ckpt_mod.FORMAT, "step": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise error

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.pt: .*(No space left|unexpected pos)"
                                      r".* MiB free on its disk") as raised:
        save_atomic({"format": ckpt_mod.FORMAT, "step": 2}, path)
    assert "\n" not in str(raised.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temp file left behind"


def test_unwritable_output_dir_fails_before_training(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(train_args(tiny_data, blocker / "run", 2, 2)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(blocker) in err


def test_full_output_dir_fails_before_training(tiny_data, tmp_path, monkeypatch, capsys):
    real_write = Path.write_bytes

    def no_space(self, data):
        if self.name.startswith(".write-test"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", no_space)
    assert main(train_args(tiny_data, tmp_path / "run", 2, 2)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_missing_data_root_fails_before_any_model_is_built(tmp_path, capsys, monkeypatch):
    import fastmtl.step as step_mod

    def must_not_build(*a, **k):
        raise AssertionError("the model was built before the data root was checked")

    monkeypatch.setattr(step_mod, "build_model", must_not_build)
    assert main(train_args(tmp_path / "no-such-data", tmp_path / "run", 2, 2)) == 2
    assert "no-such-data" in capsys.readouterr().err


def test_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "model": Exploit()}, evil)
    assert main(["eval", "--checkpoint", str(evil), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "weights_only" in err and str(evil) in err
    assert not marker.exists(), "the pickle's code must not run"


def test_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    assert main(["eval", "--checkpoint", str(other), "--device", "cpu"]) == 2
    assert "not a fastmtl checkpoint" in capsys.readouterr().err


def test_negative_lr_and_unknown_names_list_choices(capsys):
    with pytest.raises(ConfigError, match="--lr must be > 0"):
        Config(lr=-1).validate()
    for bad in (0, -5, float("inf")):
        with pytest.raises(ConfigError, match="--dist-timeout must be a number of seconds > 0"):
            Config(dist_timeout=bad).validate()
    assert main(["train", "--encoder", "resnet7"]) == 2
    assert "resnet18, resnet34, resnet50, resnet101" in capsys.readouterr().err


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc")
def test_evaluation_over_1000_images_keeps_flat_memory(tiny_data, tmp_path):
    from fastmtl import data as fdata
    from fastmtl.evaluate import evaluate_tasks
    from fastmtl.tasks.depth import DepthNormalizer, DepthTask
    from fastmtl.tasks.semseg import SemsegTask
    from fastmtl.models import build_model

    root = tmp_path / "soak"
    shutil.copy(tiny_data / "meta.json", root.mkdir() or root / "meta.json")
    for sub in ("rgb", "semseg", "depth"):
        src = next((tiny_data / "val" / sub).iterdir())
        dst = root / "val" / sub
        dst.mkdir(parents=True)
        for i in range(1200):
            os.link(src, dst / f"{i}{src.suffix}")
    dataset = fdata.SegDepthFolder(root, "val", transform=eval_transform(32))
    loader = fdata.build_loader(dataset, 8, shuffle=False, workers=0, seed=0)
    info = fdata.dataset_info(root)
    model = build_model(Config(model="joint", encoder="resnet18", dilation=(False, False, True)), {"semseg": 19, "depth": 1})
    rss = []

    def watched():
        for i, batch in enumerate(loader):
            if i % 25 == 0:
                rss.append(_rss_mb())
            yield batch

    tasks = [SemsegTask(19), DepthTask(DepthNormalizer.from_stats("log", info.depth_stats), info.depth_range)]
    metrics = evaluate_tasks(model, watched(), tasks, torch.device("cpu"))
    assert len(dataset) == 1200 and metrics["miou"] >= 0
    warm = rss[2]  # after the first 50 batches (allocator warm-up)
    assert max(rss[2:]) - warm < 40, f"RSS grew from {warm:.0f} MB to {max(rss):.0f} MB"


def test_non_finite_loss_skips_steps_then_stops_keeping_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    import fastmtl.step as step_mod

    calls = {"n": 0}
    real_forward = step_mod.MultiTaskLoss.forward

    def poisoned(self, *args):
        total, parts = real_forward(self, *args)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] > 2 else total), parts

    monkeypatch.setattr(step_mod.MultiTaskLoss, "forward", poisoned)
    out = tmp_path / "run"
    cfg = Config(model="joint", encoder="resnet18", dilation=(False, False, True), data_root=str(tiny_data),
                 size=(32, 32), batch_size=2, workers=0, max_steps=40, eval_every=2, quiet=True, out=str(out),
                 device="cpu")
    with pytest.raises(RuntimeError, match=r"diverged: 10 non-finite steps in a row at step 2.*last\.pt"):
        train(cfg)
    good = load_checkpoint(out / "last.pt")
    assert good["step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())


@pytest.fixture
def data_with_a_broken_image(tiny_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data, root)
    (root / "train" / "rgb" / "3.png").write_bytes(b"this is not a png")
    return root


def test_bad_sample_error_policy_names_the_file(data_with_a_broken_image, tmp_path, capsys):
    assert main(train_args(data_with_a_broken_image, tmp_path / "run", 4, 4)) == 2
    err = capsys.readouterr().err
    assert str(data_with_a_broken_image / "train" / "rgb" / "3.png") in err


def test_bad_sample_skip_policy_trains_and_counts(data_with_a_broken_image, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="3.png"):
        assert main(train_args(data_with_a_broken_image, out, 4, 4) + ["--on-bad-sample", "skip"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_train_samples"] >= 1
    assert summary["final"]["step"] == 4


def test_divergence_before_the_first_checkpoint_says_none_exists(tiny_data, tmp_path, monkeypatch):
    import fastmtl.step as step_mod

    real_forward = step_mod.MultiTaskLoss.forward

    def poisoned(self, *args):
        total, parts = real_forward(self, *args)
        return total * float("nan"), parts

    monkeypatch.setattr(step_mod.MultiTaskLoss, "forward", poisoned)
    out = tmp_path / "run"
    cfg = Config(model="joint", encoder="resnet18", dilation=(False, False, True), data_root=str(tiny_data),
                 size=(32, 32), batch_size=2, workers=0, max_steps=40, eval_every=20, quiet=True, out=str(out),
                 device="cpu")
    with pytest.raises(RuntimeError, match=r"at step 0; no checkpoint exists .*--overwrite") as e:
        train(cfg)
    assert "last good checkpoint" not in str(e.value) and not (out / "last.pt").exists()


def test_non_finite_predictions_are_left_out_of_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from fastmtl.tasks.depth import DepthNormalizer, DepthTask

    task = DepthTask(DepthNormalizer.from_stats("log", {"log_mean": 1.0, "log_std": 0.5}), (0.5, 80.0))
    target = torch.rand(2, 1, 8, 8) * 10 + 1
    with SummaryWriter(str(tmp_path)) as writer:
        for raw in (torch.full((2, 1, 8, 8), float("nan")), torch.tensor([1.0, float("inf")]).repeat(64).view(2, 1, 8, 8)):
            with pytest.warns(UserWarning, match="depth/pred_normalized at step 3: .* NaN or inf"):
                task.log_images(writer, task.decode(raw), raw, target, 3)
