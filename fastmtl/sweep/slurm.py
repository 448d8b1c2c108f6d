"""``fastmtl sweep --launcher slurm``: each point not done is a submitit job (one per point, or one task
of a job array) running the point's ``fastmtl train`` process exactly as the local launcher does
(:func:`fastmtl.sweep.runner.run_point`: same arguments, same ``train.log``); submitit's scripts and logs
go to ``SWEEP/slurm/``, the job of each point to ``SWEEP/slurm/jobs.json``.

A point's job is *in flight* while it has left no result file and the scheduler has not ended it:
sacct's state through submitit (PENDING, RUNNING, REQUEUED, COMPLETING, PREEMPTED, or UNKNOWN: not
known to sacct yet) or, with ``--slurm-cluster local``, while its controller process lives. A later
``fastmtl sweep SWEEP`` waits for a point in flight instead of submitting it again; a point whose job
ended without finishing it is submitted again (and resumes from its ``last.pt``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from fastmtl.errors import ConfigError
from fastmtl.files import read_json, write_json_atomic
from fastmtl.sweep.runner import (Point, Sweep, how_text, pending_points, point_title, progress_head, run_point,
                                  safe_name, train_outcome)
from fastmtl.sweep.slurm_options import SLURM_DIR, SlurmOptions

JOBS_FILE = "jobs.json"  # {run dir relative to the sweep folder: {"job_id", "cluster", "how"}}
POLL_S = {"slurm": 10.0, "local": 1.0}  # seconds between two looks at the jobs while waiting


@dataclass
class PointJob:
    """The job of one point; ``earlier``: submitted by an earlier sweep command (known from jobs.json)."""

    point: Point
    job: submitit.Job
    how: str  # the point's start: "", "resumed" or "restarted"
    earlier: bool

    def ended(self) -> bool:
        """The job left its result or the scheduler ended it (see the module's docstring)."""
        if self.earlier and isinstance(self.job, submitit.LocalJob):  # not our child: its process is all we know
            return self.job.paths.result_pickle.exists() or not _process_alive(int(self.job.job_id))
        return self.job.done()

    def outcome(self, finished: int, total: int) -> Tuple[str, Optional[Path]]:
        """The progress line of the ended job, and the log of its failure (None: the point is done)."""
        head = progress_head(self.point, self.how, finished, total)
        job = self.job
        if not job.paths.result_pickle.exists():  # killed: time limit, scancel, node failure, ...
            state = f", sacct: {job.state}" if isinstance(job, submitit.SlurmJob) else ""
            return f"{head}: FAILED (job {job.job_id} ended without a result{state}); see {job.paths.stderr}", \
                job.paths.stderr
        try:
            rc, seconds = job.result()
        except UncompletedJobError:  # the job's own Python failed (FailedJobError): its log has the traceback
            return f"{head}: FAILED (job {job.job_id} stopped with an error); see {job.paths.stderr}", job.paths.stderr
        ok, text = train_outcome(self.point, rc, seconds)
        return f"{head}: {text}", None if ok else self.point.run_dir / "train.log"


def run_on_slurm(sweep: Sweep, options: SlurmOptions, wait: bool = True,
                 echo: Callable[[str], None] = print) -> Optional[List[Tuple[Point, Path]]]:
    """Submit every point neither done nor in flight; with ``wait``, wait for every point's job (one
    progress line each, as the local launcher) and return the failed points with their logs; None:
    jobs left queued or running (not ``wait``)."""
    todo, finished = pending_points(sweep, echo)
    jobs: List[PointJob] = []
    submit = []
    for p, earlier in zip(todo, _earlier_jobs(sweep, todo)):
        if earlier is not None and not earlier.ended():
            echo(f"{p.label}: job {earlier.job.job_id} (submitted earlier) is queued or running; not submitted again")
            jobs.append(earlier)
        else:
            submit.append(p)
    if submit:
        jobs += _submit(sweep, submit, options, echo)
    if not jobs:
        return []
    if not wait:
        echo(f"not waiting (--no-wait): `fastmtl sweep {sweep.folder}` waits for the jobs and writes the report; "
             f"`--report-only` tables the runs finished so far")
        return None
    echo(f"waiting for {_jobs(len(jobs))} (Ctrl-C stops the waiting, not the SLURM jobs: "
         f"`fastmtl sweep {sweep.folder}` collects them later)")
    return _wait(jobs, finished, len(sweep.points), echo, POLL_S[options.cluster])


def jobs_in_flight(sweep: Sweep) -> List[str]:
    """``"LABEL (job ID)"`` of each point not done whose job is queued or running."""
    todo = [p for p in sweep.points if p.state() != "done"]
    return [f"{p.label} (job {j.job.job_id})" for p, j in zip(todo, _earlier_jobs(sweep, todo))
            if j is not None and not j.ended()]


def executor_parameters(options: SlurmOptions, name: str) -> Dict[str, Any]:
    """The submitit ``AutoExecutor.update_parameters`` of ``options``: the generic ones (job name, time,
    GPUs, CPUs, one task on one node) and the ``slurm_`` ones, which the local cluster ignores."""
    params = {"name": name, "timeout_min": options.time, "nodes": 1, "tasks_per_node": 1,
              "gpus_per_node": options.gpus or None, "cpus_per_task": options.cpus,
              "slurm_partition": options.partition, "slurm_account": options.account, "slurm_qos": options.qos,
              "slurm_constraint": options.constraint, "slurm_additional_parameters": dict(options.opts) or None,
              "slurm_array_parallelism": options.parallelism if options.array else None}
    return {k: v for k, v in params.items() if v is not None}


def make_executor(folder: Path, options: SlurmOptions, name: str) -> submitit.AutoExecutor:
    """submitit's executor for ``options.cluster`` writing to ``folder``; a one-line error off a SLURM node."""
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    except RuntimeError as e:  # SlurmExecutor: no srun on PATH
        raise ConfigError(f"--launcher slurm: {e} (submit from a SLURM login node, or try the sweep on this "
                          f"machine with --slurm-cluster local)") from None
    executor.update_parameters(**executor_parameters(options, name))
    return executor


def _submit(sweep: Sweep, points: List[Point], options: SlurmOptions, echo: Callable[[str], None]) -> List[PointJob]:
    """One job per point (recorded one by one) or one array of them (recorded together)."""
    folder = sweep.folder / SLURM_DIR
    executor = make_executor(folder, options, f"fastmtl-sweep-{safe_name(sweep.name)}")
    hows = [how_text(p) for p in points]
    records = _read_records(sweep.folder)
    jobs: List[PointJob] = []

    def record(p: Point, job: submitit.Job, how: str) -> None:
        jobs.append(PointJob(p, job, how, earlier=False))
        records[_key(sweep, p)] = {"job_id": job.job_id, "cluster": options.cluster, "how": how}
        echo(f"{point_title(p, how)}: submitted as job {job.job_id}")

    try:
        if options.array:
            for p, job, how in zip(points, executor.map_array(run_point, points, [{}] * len(points)), hows):
                record(p, job, how)
        else:
            for p, how in zip(points, hows):
                record(p, executor.submit(run_point, p, {}), how)
                _write_records(sweep.folder, records)  # a failure on a later one leaves this one known
    except FailedJobError as e:  # sbatch said no (its message was printed above)
        raise ConfigError(f"--launcher slurm: sbatch refused the job: {_last_line(e)}") from None
    finally:
        _write_records(sweep.folder, records)
    array = " as one array" if options.array and len(points) > 1 else ""
    echo(f"{_jobs(len(points))} submitted{array}; their scripts and logs: {folder}")
    return jobs


def _wait(jobs: List[PointJob], finished: int, total: int, echo: Callable[[str], None],
          poll_s: float) -> List[Tuple[Point, Path]]:
    failed = []
    while jobs:
        still = []
        for j in jobs:
            if not j.ended():
                still.append(j)
                continue
            finished += 1
            line, log = j.outcome(finished, total)
            echo(line)
            if log is not None:
                failed.append((j.point, log))
        jobs = still
        if jobs:
            time.sleep(poll_s)
    return failed


def _earlier_jobs(sweep: Sweep, points: List[Point]) -> List[Optional[PointJob]]:
    """The recorded job of each point (None: none), every one built before any is asked about, so
    that submitit asks sacct about them in one call."""
    records = _read_records(sweep.folder)
    folder = sweep.folder / SLURM_DIR
    found = []
    for p in points:
        r = records.get(_key(sweep, p))
        job_class = submitit.LocalJob if r is not None and r.get("cluster") == "local" else submitit.SlurmJob
        found.append(None if r is None else PointJob(p, job_class(folder=folder, job_id=str(r["job_id"])),
                                                     str(r.get("how", "")), earlier=True))
    return found


def _read_records(folder: Path) -> Dict[str, Dict[str, Any]]:
    path = folder / SLURM_DIR / JOBS_FILE
    records = read_json(path, "the sweep's SLURM job list") if path.is_file() else {}
    if not isinstance(records, dict) or not all(isinstance(r, dict) and "job_id" in r for r in records.values()):
        raise ConfigError(f"{path}: must be a JSON object {{run dir: {{\"job_id\": ...}}}}")
    return records


def _write_records(folder: Path, records: Dict[str, Dict[str, Any]]) -> None:
    write_json_atomic(folder / SLURM_DIR / JOBS_FILE, records)


def _key(sweep: Sweep, point: Point) -> str:
    return point.run_dir.relative_to(sweep.folder).as_posix()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _jobs(n: int) -> str:
    return f"{n} job{'s' * (n != 1)}"


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
