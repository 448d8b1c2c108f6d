"""``fastmtl sweep`` end to end on a tiny dataset: every point a real ``fastmtl train`` process."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastmtl.cli import COMMANDS, build_parser
from fastmtl.cli.flags import config_from_args
from fastmtl.config import Config
from fastmtl.data.synthetic import generate_dataset
from fastmtl.sweep.runner import build_sweep, open_sweep
from fastmtl.sweep.builtin import builtin_sweep
from fastmtl.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepdata") / "synthetic"
    generate_dataset(root, train=6, val=2, size=(32, 64), seed=3, workers=1, progress=False)
    return root


def tiny_spec(data_root):
    return {
        "name": "tiny",
        "base": {"model": "joint", "encoder": "resnet18", "size": "32x64", "batch-size": 2, "max_steps": 2,
                 "workers": 0, "data_root": str(data_root), "dilation": "F,F,F", "se": False},
        "variants": [{"name": "no skip", "set": {"skip": False}}, {"name": "+ skip", "set": {"skip": True}}],
        "seeds": [0, 1],
    }


def sweep_cli(*args):
    # one thread per run, whatever --jobs: float reductions then agree across sweeps to the bit
    return subprocess.run([sys.executable, "-m", "fastmtl", "sweep", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def metrics_by_point(folder):
    results = json.loads((folder / "results.json").read_text())
    return {(p["variant"], p["seed"]): {k: v for k, v in p["metrics"].items() if k != "images_per_second"}
            for p in results["points"]}


def test_sweep_end_to_end_then_resume_after_interruption(tiny_data, tmp_path):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec(tiny_data)))
    full = tmp_path / "full"
    r = sweep_cli(spec_file, "--out", full, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and all("multitask" in line for line in progress)
    assert sorted(line.split("] ")[1].split(":")[0] for line in progress) == \
        ["+ skip seed 0", "+ skip seed 1", "no skip seed 0", "no skip seed 1"]
    # outputs: table, CSV, JSON, PNG
    table = (full / "results.md").read_text()
    assert "| variant | seeds | mIoU | SI-logRMSE | multitask |" in table and "abs-rel" in table
    assert "| no skip | 2/2 |" in table and "| + skip | 2/2 |" in table
    assert table in r.stdout
    assert "IoU per class (%):" in table and "| variant | road | sidewalk |" in table
    results = json.loads((full / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    for name in ("no skip", "+ skip"):
        runs = [json.loads((full / "runs" / name.replace("+", "plus").replace(" ", "_") / f"seed{s}" / "summary.json")
                           .read_text()) for s in (0, 1)]
        mious = [s["final"]["miou"] for s in runs]
        assert rows[name]["metrics"]["miou"]["mean"] == pytest.approx(sum(mious) / 2)
        assert rows[name]["metrics"]["miou"]["std"] == pytest.approx(abs(mious[0] - mious[1]) / 2 ** 0.5)
        roads = [s["final_all"]["iou_per_class"]["road"] for s in runs]
        assert rows[name]["iou_per_class"]["road"]["mean"] == pytest.approx(sum(roads) / 2)
        assert len(rows[name]["iou_per_class"]) == 19
        assert rows[name]["params"] > 1e6 and rows[name]["gmacs"] > 0 and rows[name]["gmacs_size"] == [32, 64]
    assert rows["+ skip"]["params"] > rows["no skip"]["params"]  # the skip's projection + 3x3 conv
    csv_lines = (full / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,seeds,of_seeds,miou_mean,miou_std") and len(csv_lines) == 3
    assert (full / "ladder.png").read_bytes()[:8] == PNG_MAGIC
    from PIL import Image

    assert Image.open(full / "ladder.png").size[0] > 300

    # the same sweep, interrupted: one point killed after its first checkpoint, one before any
    part = tmp_path / "part"
    shutil.copytree(full, part, ignore=shutil.ignore_patterns("results.*", "ladder.png"))
    sweep = open_sweep(str(part), None, {}, builtin_sweep)
    resumed, restarted = sweep.points[1], sweep.points[2]
    for p in (resumed, restarted):
        shutil.rmtree(p.run_dir)
    cfg = Config.from_dict({**resumed.fields, "seed": resumed.seed, "out": str(resumed.run_dir), "quiet": True})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's runs
    try:
        train(cfg, stop_after=1)  # leaves last.pt of step 1 and no summary, as a kill after a checkpoint does
    finally:
        torch.set_num_threads(threads)
    assert resumed.state() == "interrupted"
    restarted.run_dir.mkdir(parents=True)
    (restarted.run_dir / "config.json").write_text("{}")  # a kill before the first checkpoint
    assert restarted.state() == "partial"
    r = sweep_cli(part)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert sum("done already, skipped" in line for line in lines) == 2
    assert any(f"{resumed.label} (resumed)" in line for line in lines)
    assert any(f"{restarted.label} (restarted)" in line for line in lines)
    assert metrics_by_point(part) == metrics_by_point(full)  # CPU training is exact across resume

    # a finished sweep runs nothing again and prints no commands
    r = sweep_cli(part, "--print-commands")
    assert r.returncode == 0 and r.stdout == ""


def test_sweep_killed_with_sigkill_mid_point_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    """A real kill: SIGKILL to the sweep and its running ``fastmtl train`` child (one process
    group) just after the child's first checkpoint; the folder alone then finishes the sweep."""
    spec = tiny_spec(tiny_data)
    spec["base"].update(max_steps=4, eval_every=1)
    spec["variants"], spec["seeds"] = spec["variants"][:1], [0]
    spec_file = tmp_path / "kill.json"
    spec_file.write_text(json.dumps(spec))
    reference = tmp_path / "reference"
    assert sweep_cli(spec_file, "--out", reference).returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fastmtl", "sweep", str(spec_file), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = killed / "runs" / "no_skip" / "seed0"
    deadline = time.time() + 120
    while not (first / "last.pt").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (first / "last.pt").is_file() and not (first / "summary.json").is_file()  # killed mid-point
    lines_before = (first / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(lines_before) < 4

    r = sweep_cli(killed)
    assert r.returncode == 0, r.stderr
    assert any("no skip seed 0 (resumed)" in line for line in r.stdout.splitlines())
    assert metrics_by_point(killed) == metrics_by_point(reference)
    untimed = [{k: v for k, v in json.loads(line).items() if "second" not in k}
               for line in (first / "metrics.jsonl").read_text().splitlines()]
    expected = [{k: v for k, v in json.loads(line).items() if "second" not in k}
                for line in (reference / "runs/no_skip/seed0/metrics.jsonl").read_text().splitlines()]
    assert untimed == expected  # one line per evaluation, as in an uninterrupted run


def test_print_commands_are_the_points(tiny_data, tmp_path):
    spec = tiny_spec(tiny_data)
    del spec["variants"]
    spec["grid"] = {"lr": [1e-3, 1e-4], "dilation": ["F,F,F", "F,F,T"]}
    spec_file = tmp_path / "grid.json"
    spec_file.write_text(json.dumps(spec))
    r = sweep_cli(spec_file, "--out", tmp_path / "g", "--print-commands", "--steps", "3", "--seeds", "5")
    assert r.returncode == 0, r.stderr
    commands = r.stdout.splitlines()
    assert len(commands) == 4
    parser = build_parser(COMMANDS)
    seen = set()
    for line in commands:
        argv = shlex.split(line)
        assert argv[:2] == ["fastmtl", "train"]
        cfg = config_from_args(parser.parse_args(argv[1:]))
        assert (cfg.max_steps, cfg.seed, cfg.size, cfg.model, cfg.quiet) == (3, 5, (32, 64), "joint", True)
        assert cfg.out.startswith(str(tmp_path / "g" / "runs"))
        seen.add((cfg.lr, cfg.dilation))
    assert seen == {(lr, d) for lr in (1e-3, 1e-4) for d in ((False,) * 3, (False, False, True))}
    assert not list((tmp_path / "g").glob("runs/*/*/*"))  # nothing ran
    # the folder remembers the sweep: the same file with other scale flags is refused
    r = sweep_cli(spec_file, "--out", tmp_path / "g", "--print-commands", "--steps", "4")
    assert r.returncode == 2 and "holds another sweep" in r.stderr


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not valid JSON"),
    ('{"base": {"lerning_rate": 1}}', "unknown config field 'lerning_rate'"),
    ('{"base": {"model": "jiont"}}', "unknown value 'jiont'"),
    ('{"variants": [{"name": "a", "set": {"seed": 1}}]}', "set by the sweep"),
    ('{"seeds": []}', "'seeds' must be a non-empty list"),
    ('{"grid": {"lr": 0.1}}', "grid 'lr' must be a non-empty list"),
    ('{"variants": [{"name": "a"}, {"name": "a"}]}', "variant names must be unique"),
])
def test_bad_sweep_file_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    r = sweep_cli(path, "--out", tmp_path / "s")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert str(path) in r.stderr and problem in r.stderr, r.stderr
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_builtin_ladder_ends_at_the_default_recipe():
    spec = builtin_sweep("report-ladder")
    points = build_sweep(spec, Path("unused"), "report-ladder").points
    names = list(dict.fromkeys(p.variant for p in points))
    assert names[0] == "template base" and "+ ImageNet init" not in names and len(names) == 10
    last = Config.from_dict(points[-1].fields)
    default = Config()
    for field in ("model", "dilation", "aspp", "skip", "se", "attention_init", "lr"):
        assert getattr(last, field) == getattr(default, field), field
    for task, option in (("depth", "norm"), ("depth", "loss")):
        assert last.task_option(task, option) == default.task_option(task, option), (task, option)
    with_init = build_sweep(builtin_sweep("report-ladder", "/w/r34.pth"), Path("unused"), "x").points
    assert {p.fields.get("pretrained") for p in with_init if p.variant == "template base"} == {None}
    assert {p.fields.get("pretrained") for p in with_init if p.variant != "template base"} == {"/w/r34.pth"}
    assert [p.variant for p in with_init[:2]] == ["template base", "+ ImageNet init"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TOML sweep files need tomllib (Python >= 3.11)")
def test_toml_sweep_file_gives_the_same_points_as_json(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"base": {"model": "joint", "size": "32x64", "aspp": False},
                                                 "grid": {"lr": [0.001, 0.0001]}, "seeds": [0, 1]}))
    (tmp_path / "s.toml").write_text('seeds = [0, 1]\n[base]\nmodel = "joint"\nsize = "32x64"\naspp = false\n'
                                     '[grid]\nlr = [0.001, 0.0001]\n')
    a = open_sweep(str(tmp_path / "s.json"), str(tmp_path / "a"), {}, builtin_sweep)
    b = open_sweep(str(tmp_path / "s.toml"), str(tmp_path / "b"), {}, builtin_sweep)
    assert [(p.variant, p.seed, p.fields) for p in a.points] == [(p.variant, p.seed, p.fields) for p in b.points]
    assert [p.variant for p in a.points] == ["lr=0.001", "lr=0.0001"] * 2
    # a sweep folder continues as it was set up: scale flags go with a file or built-in name
    r = sweep_cli(tmp_path / "a", "--steps", "5")
    assert r.returncode == 2 and "continues as it was set up" in r.stderr
