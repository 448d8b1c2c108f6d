"""``fastmtl sweep --launcher slurm``: the jobs really run through submitit's LocalExecutor
(``--slurm-cluster local``), and a fake ``sbatch`` / ``sacct`` / ``srun`` on PATH shows what the
SLURM executor submits (the sbatch script submitit writes) and how queued jobs are not submitted twice."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fastmtl.cli import main
from fastmtl.sweep.runner import open_sweep, user_command
from fastmtl.sweep.builtin import builtin_sweep
from test_sweep import sweep_cli, tiny_data, tiny_spec  # noqa: F401 (tiny_data: the fixture)

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="the SLURM launcher needs submitit (pip install fastmtl[slurm])")


def jobs_of(folder):
    return {run: r["job_id"] for run, r in json.loads((folder / "slurm" / "jobs.json").read_text()).items()}


@needs_submitit
@pytest.mark.slow
def test_local_cluster_jobs_run_the_points_and_a_resume_waits_for_them(tiny_data, tmp_path):
    spec = tiny_spec(tiny_data)
    spec["seeds"] = [0]
    spec["variants"].append({"name": "broken", "set": {"data_root": str(tmp_path / "no-such-data")}})
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(spec))
    folder = tmp_path / "sw"
    with open(tmp_path / "submit.log", "w+") as log:  # a file: the jobs' processes inherit it and go on after
        rc = subprocess.call([sys.executable, "-m", "fastmtl", "sweep", str(spec_file), "--out", str(folder),
                              "--launcher", "slurm", "--slurm-cluster", "local", "--slurm-time", "10", "--slurm-array",
                              "--jobs", "3", "--no-wait"], stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        log.seek(0)
        assert rc == 0 and "not waiting (--no-wait)" in log.read()
    assert not (folder / "results.md").exists()
    submitted = jobs_of(folder)
    assert sorted(submitted) == ["runs/broken/seed0", "runs/no_skip/seed0", "runs/plus_skip/seed0"]

    # the folder continues on the local cluster: the jobs still running are waited for, not submitted again
    r = sweep_cli(folder)
    assert r.returncode == 1
    now = jobs_of(folder)
    assert {k: now[k] for k in ("runs/no_skip/seed0", "runs/plus_skip/seed0")} == \
        {k: submitted[k] for k in ("runs/no_skip/seed0", "runs/plus_skip/seed0")}
    progress = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert sum("(submitted earlier) is queued or running; not submitted again" in line
               for line in r.stdout.splitlines()) >= 2
    assert sum("multitask" in line for line in progress) == 2
    assert any(line.endswith(f"broken seed 0: FAILED (exit 2); see {folder / 'runs/broken/seed0/train.log'}")
               for line in progress)
    assert len(r.stderr.strip().splitlines()) == 1
    assert "1 runs failed: broken seed 0" in r.stderr and "train.log" in r.stderr
    table = (folder / "results.md").read_text()
    assert "| no skip | 1/1 |" in table and "| + skip | 1/1 |" in table and "| broken | 0/1 |" in table
    for p in open_sweep(str(folder), None, {}, builtin_sweep).points:
        if p.variant != "broken":
            assert (p.run_dir / "summary.json").is_file()
            # the local launcher's command for the point, and its train.log
            assert (p.run_dir / "train.log").read_text().splitlines()[0] == f"$ {user_command(p)}"
        assert (folder / "slurm" / f"{now[p.run_dir.relative_to(folder).as_posix()]}_0_log.out").is_file()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``srun``, ``sbatch`` (job ids 4242, 4243, ...; each submitted script's path appended to
    ``calls``) and ``sacct`` (prints ``sacct.out``) on PATH; returns their folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": "exit 0",
        "sbatch": 'here=$(dirname "$0"); n=$(cat "$here/calls" 2>/dev/null | wc -l)\necho "$1" >> "$here/calls"\n'
                  'echo "Submitted batch job $((4242 + n))"',
        "sacct": 'cat "$(dirname "$0")/sacct.out"',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def sacct(bin_dir, states):
    (bin_dir / "sacct.out").write_text("JobID|State|NodeList\n" + "".join(f"{j}|{s}|\n" for j, s in states.items()))


@needs_submitit
def test_slurm_job_options_reach_sbatch_and_queued_jobs_are_not_submitted_twice(fake_slurm, tmp_path, capsys):
    spec_file = tmp_path / "tiny.json"
    spec = tiny_spec(tmp_path / "unused-data")
    spec["seeds"] = [0]
    spec_file.write_text(json.dumps(spec))
    folder = tmp_path / "sw"
    assert main(["sweep", str(spec_file), "--out", str(folder), "--launcher", "slurm", "--slurm-array", "--jobs", "1",
                 "--slurm-partition", "gpu", "--slurm-gpus", "2", "--slurm-cpus", "8", "--slurm-time", "90",
                 "--slurm-account", "proj", "--slurm-qos", "high", "--slurm-constraint", "a100",
                 "--slurm-opt", "mem=32G", "--no-wait"]) == 0
    script = (folder / "slurm" / "4242_submission.sh").read_text().splitlines()
    for line in ("--array=0-1%1", "--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--time=90",
                 "--account=proj", "--qos=high", "--constraint=a100", "--mem=32G", "--job-name=fastmtl-sweep-tiny",
                 f"--output={folder / 'slurm'}/%A_%a_0_log.out"):
        assert f"#SBATCH {line}" in script, line
    assert jobs_of(folder) == {"runs/no_skip/seed0": "4242_0", "runs/plus_skip/seed0": "4242_1"}
    capsys.readouterr()

    # the folder alone continues on SLURM: the queued job stays, the timed-out one is submitted again
    sacct(fake_slurm, {"4242_0": "PENDING", "4242_1": "TIMEOUT"})
    assert main(["sweep", str(folder), "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "no skip seed 0: job 4242_0 (submitted earlier) is queued or running; not submitted again" in out
    assert "+ skip seed 0: submitted as job 4243" in out
    assert jobs_of(folder) == {"runs/no_skip/seed0": "4242_0", "runs/plus_skip/seed0": "4243"}
    assert len((fake_slurm / "calls").read_text().splitlines()) == 2
    assert "#SBATCH --partition=gpu" in (folder / "slurm" / "4243_submission.sh").read_text()  # the saved options

    # a job in flight keeps the local launcher off the folder
    sacct(fake_slurm, {"4242_0": "RUNNING", "4243": "FAILED"})
    assert main(["sweep", str(folder), "--launcher", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SLURM jobs still queued or running: no skip seed 0 (job 4242_0)" in err[0]

    # waiting: jobs that end without a result are failures named with their job's log; the report is written
    sacct(fake_slurm, {"4242_0": "CANCELLED by 1", "4243": "FAILED", "4244_0": "NODE_FAIL", "4244_1": "TIMEOUT"})
    assert main(["sweep", str(folder)]) == 1
    captured = capsys.readouterr()
    log = folder / "slurm" / "4244_1_0_log.err"
    assert f"+ skip seed 0: FAILED (job 4244_1 ended without a result, sacct: TIMEOUT); see {log}" in captured.out
    assert "2 runs failed" in captured.err and f"+ skip seed 0 (log {log})" in captured.err
    assert (folder / "results.md").is_file()


@needs_submitit
def test_a_resume_submits_only_the_points_not_done(fake_slurm, tmp_path, capsys):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec(tmp_path / "unused-data")))
    folder = tmp_path / "sw"
    done = folder / "runs" / "plus_skip" / "seed1"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")  # what makes a point done
    assert main(["sweep", str(spec_file), "--out", str(folder), "--launcher", "slurm", "--slurm-time", "5",
                 "--no-wait"]) == 0
    assert "[1/4] + skip seed 1: done already, skipped" in capsys.readouterr().out
    assert len((fake_slurm / "calls").read_text().splitlines()) == 3  # one job per point, the done one not
    assert sorted(jobs_of(folder)) == ["runs/no_skip/seed0", "runs/no_skip/seed1", "runs/plus_skip/seed0"]


@pytest.mark.parametrize("flags,problem", [
    (["--launcher", "slurm"], "--launcher slurm needs --slurm-time MINUTES"),
    (["--launcher", "slurm", "--slurm-time", "0"], "--slurm-time must be an integer >= 1, got 0"),
    (["--launcher", "slurm", "--slurm-time", "9", "--slurm-gpus", "-1"], "--slurm-gpus must be an integer >= 0"),
    (["--launcher", "slurm", "--slurm-time", "9", "--slurm-partition", "a b"], "--slurm-partition 'a b': must be one word"),
    (["--launcher", "slurm", "--slurm-time", "9", "--slurm-opt", "mem"], "--slurm-opt 'mem': must look like KEY=VALUE"),
    (["--launcher", "slurm", "--slurm-time", "9", "--slurm-opt", "partition=gpu"], "use --slurm-partition"),
    (["--launcher", "slurm", "--slurm-time", "9", "--slurm-opt", "output=x"], "set by the launcher"),
    (["--launcher", "slurm", "--slurm-time", "9", "--jobs", "4"], "add --slurm-array"),
    (["--slurm-partition", "gpu"], "--slurm-partition goes with --launcher slurm"),
    (["--no-wait"], "--no-wait goes with --launcher slurm"),
])
def test_bad_slurm_flags_are_one_line_naming_the_flag(tmp_path, capsys, flags, problem):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec(tmp_path / "unused-data")))
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "sw")] + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], err
    assert not (tmp_path / "sw" / "slurm").exists()  # nothing submitted, no options kept


@needs_submitit
def test_off_a_slurm_node_the_launcher_says_so(tmp_path, monkeypatch, capsys):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec(tmp_path / "unused-data")))
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "sw"), "--launcher", "slurm", "--slurm-time", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "srun" in err[0] and "--slurm-cluster local" in err[0]


def test_without_submitit_the_slurm_launcher_names_the_extra_and_the_rest_works(tmp_path):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(json.dumps(tiny_spec(tmp_path / "unused-data")))
    code = ("import sys; sys.modules['submitit'] = None\n"  # import submitit now fails
            "from fastmtl.cli import main\n"
            f"args = ['sweep', {str(spec_file)!r}, '--out', {str(tmp_path / 'sw')!r}]\n"
            "print('local', main(args + ['--print-commands']))\n"
            "print('slurm', main(args + ['--launcher', 'slurm', '--slurm-time', '9']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "local 0" in r.stdout and "slurm 2" in r.stdout, r.stderr
    assert r.stdout.count("fastmtl train") == 4  # the print-commands of the 2 x 2 points
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "pip install fastmtl[slurm]" in err[0]
