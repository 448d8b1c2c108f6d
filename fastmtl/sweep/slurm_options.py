"""The SLURM launcher's options (``fastmtl sweep --launcher slurm``), checked from the flags and kept in
``SWEEP/slurm/launcher.json``, so that ``fastmtl sweep SWEEP`` continues on SLURM as it was set up.

Needs no submitit: the launcher itself (:mod:`fastmtl.sweep.slurm`) is what imports it.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastmtl.errors import ConfigError
from fastmtl.files import read_json, write_json_atomic

SLURM_DIR = "slurm"  # SWEEP/slurm: submitit's scripts, pickles and logs, launcher.json, jobs.json
OPTIONS_FILE = "launcher.json"
CLUSTERS = ("slurm", "local")  # local: submitit's LocalExecutor, the jobs as processes of this machine
# option -> its flag (the flag's argparse dest is the flag without -- and with _ for -)
FLAGS = {"cluster": "--slurm-cluster", "partition": "--slurm-partition", "gpus": "--slurm-gpus",
         "cpus": "--slurm-cpus", "time": "--slurm-time", "account": "--slurm-account", "qos": "--slurm-qos",
         "constraint": "--slurm-constraint", "opts": "--slurm-opt", "array": "--slurm-array", "parallelism": "--jobs"}
LEAST = {"gpus": 0, "cpus": 1, "time": 1, "parallelism": 1}  # the integer options and their smallest value
WORDS = ("partition", "account", "qos", "constraint")  # one sbatch word each
# sbatch options --slurm-opt cannot set: a flag of their own, or the launcher's (logs, array, name, signal)
OWN_FLAG = {"partition": "partition", "time": "time", "account": "account", "qos": "qos", "constraint": "constraint",
            "gpus-per-node": "gpus", "cpus-per-task": "cpus"}
LAUNCHERS = ("array", "output", "error", "job-name", "open-mode", "signal")
OPT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class SlurmOptions:
    """How the points' jobs are submitted: a ``time`` limit (minutes) each, ``gpus`` / ``cpus`` per job,
    ``partition`` / ``account`` / ``qos`` / ``constraint`` (None: the cluster's default), ``opts`` more
    sbatch options (``{"mem": "32G"}``); ``array``: one job array (at most ``parallelism`` of its jobs
    running at once) instead of one job per point; ``cluster`` ``local``: submitit's LocalExecutor."""

    time: int
    cluster: str = "slurm"
    partition: Optional[str] = None
    gpus: int = 1
    cpus: Optional[int] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    opts: Dict[str, str] = field(default_factory=dict)
    array: bool = False
    parallelism: Optional[int] = None


def parse_opts(items: List[str]) -> Dict[str, str]:
    """``--slurm-opt KEY=VALUE`` items as ``{key: value}`` (``_`` in a key read as ``-``), checked."""
    opts = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not OPT_KEY.fullmatch(key.strip()) or not value.strip():
            raise ConfigError(f"--slurm-opt {item!r}: must look like KEY=VALUE (an sbatch option), e.g. mem=32G")
        opts[key.strip().replace("_", "-")] = value.strip()
    return opts


def check_given(given: Dict[str, Any]) -> None:
    """Each flag value of ``given`` (option -> value, None: not given) on its own: a one-line
    :class:`ConfigError` naming the flag."""
    for name, value in given.items():
        if value is not None:
            _check(name, value, FLAGS[name])


def slurm_options(given: Dict[str, Any], saved: Optional[Dict[str, Any]], where: str) -> SlurmOptions:
    """The options ``saved`` (``where``: their launcher.json) with the ``given`` flags over them (a
    given ``--slurm-opt`` replaces all saved ones), checked."""
    if saved is not None and not isinstance(saved, dict):
        raise ConfigError(f"{where}: must be a JSON object of options")
    saved = dict(saved or {})
    unknown = sorted(set(saved) - {f.name for f in fields(SlurmOptions)})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    for name, value in saved.items():
        if value is not None:
            _check(name, value, f"{where}: {name}")
    merged = {**saved, **{k: v for k, v in given.items() if v is not None}}
    if merged.get("time") is None:
        raise ConfigError("--launcher slurm needs --slurm-time MINUTES: the time limit of each job")
    if merged.get("parallelism") is not None and not merged.get("array"):
        raise ConfigError("--jobs with --launcher slurm is a job array's limit of jobs running at once: add "
                          "--slurm-array (one job per point queues every point at once)")
    return SlurmOptions(**merged)


def _check(name: str, value: Any, what: str) -> None:
    if name in LEAST:
        if not isinstance(value, int) or isinstance(value, bool) or value < LEAST[name]:
            raise ConfigError(f"{what} must be an integer >= {LEAST[name]}, got {value!r}")
    elif name in WORDS:
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise ConfigError(f"{what} {value!r}: must be one word (no spaces)")
    elif name == "cluster":
        if value not in CLUSTERS:
            raise ConfigError(f"{what} {value!r}: must be one of {', '.join(CLUSTERS)}")
    elif name == "array":
        if not isinstance(value, bool):
            raise ConfigError(f"{what} must be true or false, got {value!r}")
    elif name == "opts":
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be an object {{sbatch option: value}}, got {value!r}")
        for key, text in value.items():
            if key in OWN_FLAG:
                raise ConfigError(f"--slurm-opt {key}=...: use --slurm-{OWN_FLAG[key]}")
            if key in LAUNCHERS:
                raise ConfigError(f"--slurm-opt {key}=...: set by the launcher (logs under SWEEP/slurm, "
                                  f"--slurm-array, the job name), not an option")
            if not OPT_KEY.fullmatch(key) or not isinstance(text, str) or not text or "\n" in text:
                raise ConfigError(f"{what} {key}={text!r}: must be an sbatch option name and one line of text")


def saved_options(folder: Path) -> Optional[Dict[str, Any]]:
    """The options the sweep in ``folder`` was last submitted with, or None (never on SLURM)."""
    path = options_file(folder)
    return read_json(path, "the sweep's SLURM options") if path.is_file() else None


def save_options(options: SlurmOptions, folder: Path) -> None:
    path = options_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, asdict(options))


def options_file(folder: Path) -> Path:
    return folder / SLURM_DIR / OPTIONS_FILE
