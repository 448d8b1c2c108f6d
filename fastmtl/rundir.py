"""The run directory of ``fastmtl train``: one writer at a time, no silent overwrite, and a
resume that leaves it as an uninterrupted run would.

- :func:`run_dir_lock`: ``DIR/.lock`` created with ``O_CREAT | O_EXCL`` holding ``PID host``;
  removed on exit. A lock whose process is gone (same host, PID not alive: a SIGKILL) is stale
  and taken over.
- :func:`check_new_run`: a directory that already holds a run is refused (naming ``--resume``
  and ``--overwrite``, or only ``--overwrite`` when it has no checkpoint) or, with ``overwrite``,
  its files are listed for :func:`remove_files`, called once every input of the new run is checked.
- :func:`created_dirs` / :func:`remove_empty_dirs`: a failed run leaves no empty folder it created.
- :func:`rewind`: on resume from the checkpoint of step ``S``, drop what the interrupted process
  wrote after ``S``: checkpoint temp files, ``metrics.jsonl`` lines with ``step > S`` and
  TensorBoard events with ``step > S`` (each event file rewritten), so no step appears twice.
"""
from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from .checkpoint import load_checkpoint
from .restore import checkpoint_config
from .config import Config, ConfigError, _flag
from .files import read_jsonl, write_text_atomic

LOCK_NAME = ".lock"
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt")
EVENTS_PREFIX = "events.out.tfevents"
RESUME_OVERRIDES = ("max_steps", "epochs", "workers", "quiet", "device", "dist_timeout")  # the flags --resume accepts


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def run_dir_lock(out: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``out/.lock`` for the duration (a no-op when not ``enabled``, e.g. on ranks > 0)."""
    if not enabled:
        yield
        return
    path = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = path.read_text().strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):  # half-written by a process killed at that moment
                pid, host = -1, socket.gethostname()
            if host == socket.gethostname() and (pid <= 0 or not _pid_alive(pid)):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise ConfigError(f"--out {out} is in use by another fastmtl train (PID {pid} on {host}; lock file "
                              f"{path}); wait for it, or delete the lock file if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    else:
        raise ConfigError(f"--out {out}: could not take the lock file {path}")
    try:
        yield
    finally:
        try:
            if path.read_text().strip() == me:
                path.unlink()
        except OSError:
            pass


def run_files(out: Path) -> List[Path]:
    """The files of a run in ``out`` (checkpoints, logs, TensorBoard events, checkpoint temp files)."""
    if not out.is_dir():
        return []
    found = [out / n for n in RUN_FILES if (out / n).exists()]
    found += sorted(p for p in out.iterdir() if p.name.startswith(EVENTS_PREFIX))
    return found + temp_files(out)


def temp_files(out: Path) -> List[Path]:
    """Temp files of atomic writes (``.last.pt.XXXX.tmp``, ``.summary.json.XXXX.tmp``) a killed process left behind."""
    return sorted(p for p in out.glob(".*.tmp"))


def _names(paths: List[Path], most: int = 3) -> str:
    return ", ".join(p.name for p in paths[:most]) + (" ..." if len(paths) > most else "")


def restart_command(out: Path) -> str:
    """The command that starts the run in ``out`` over (from its config.json when it has one)."""
    if (out / "config.json").is_file():
        return f"fastmtl train --config {out / 'config.json'} --out {out} --overwrite"
    return f"fastmtl train --out {out} --overwrite (and the run's flags)"


def check_new_run(out: Path, overwrite: bool) -> List[Path]:
    """Refuse to start a run over another one; with ``overwrite``, the old run's files (for
    :func:`remove_files` once the new run's inputs are all checked)."""
    existing = run_files(out)
    if existing and not overwrite:
        if not (out / "last.pt").is_file():
            raise ConfigError(f"--out {out} holds a run that has no checkpoint ({_names(existing)}), so there is "
                              f"nothing to resume; start over with: {restart_command(out)}, or choose another --out")
        raise ConfigError(f"--out {out} already holds a run ({_names(existing)}): continue it with --resume {out}, "
                          f"replace it with --overwrite, or choose another --out")
    return existing


def remove_files(paths: List[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def created_dirs(out: Path) -> List[Path]:
    """The folders that creating ``out`` would create, deepest first."""
    missing = []
    for d in [out, *out.parents]:
        if d.exists():
            break
        missing.append(d)
    return missing


def remove_empty_dirs(dirs: List[Path]) -> None:
    """Remove each of ``dirs`` (deepest first) that exists and is empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty (or already gone): keep it and its parents
            return


def rewind(out: Path, step: int) -> None:
    """Make ``out`` look as it did when the checkpoint of ``step`` was written."""
    for p in temp_files(out):
        p.unlink()
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        kept = [r for r in read_jsonl(metrics) if r.get("step", 0) <= step]
        write_text_atomic(metrics, "".join(json.dumps(r) + "\n" for r in kept))
    for events in sorted(p for p in out.iterdir() if p.name.startswith(EVENTS_PREFIX)):
        truncate_events(events, step)


def truncate_events(path: Path, step: int) -> None:
    """Rewrite a TensorBoard event file without its events of ``step > step`` (no-op if none)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    records = list(RawEventFileLoader(str(path)).Load())
    kept = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(kept) == len(records):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        writer = RecordWriter(f)
        for r in kept:
            writer.write(r)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_output_dir(out: Path) -> None:
    """Fail before any training time is spent if ``out`` cannot hold checkpoints."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks check at the same time
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out {out}: not writable ({e.strerror or e})") from None


def resume_checkpoint(resume: str, overrides: Dict) -> Tuple[Dict, Config]:
    """The ``last.pt`` of run directory ``resume`` and its config, with ``overrides`` applied
    (only :data:`RESUME_OVERRIDES`; a new ``epochs`` replaces a ``max_steps`` limit)."""
    path = Path(resume) / "last.pt"
    if not path.is_file():
        if not Path(resume).is_dir():
            raise ConfigError(f"--resume {resume}: no such run directory")
        files = run_files(Path(resume))
        hint = (f"the run there stopped before it saved one (it holds {_names(files)}); start it over with: "
                f"{restart_command(Path(resume))}" if files else f"a new run starts with --out {resume}")
        raise ConfigError(f"--resume {resume}: no checkpoint {path} to resume from; {hint}")
    refused = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if refused:
        raise ConfigError(f"--resume uses the run's own config; only {', '.join(map(_flag, RESUME_OVERRIDES))} "
                          f"may be given with it, not {', '.join(map(_flag, refused))}")
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt)
    if "epochs" in overrides and "max_steps" not in overrides:
        cfg.max_steps = None
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cfg.out = str(resume)  # the directory may have moved since
    return ckpt, cfg.validate()

