"""``fastmtl sweep``: many ``fastmtl train`` runs from one sweep file, resumable, then one table.

A sweep file (JSON, or TOML on Python >= 3.11) holds::

    {"name": "lr",                                     # optional
     "base": {"model": "joint", "lr": 1e-4},           # Config fields (flag names, - or _)
     "variants": [{"name": "adam 1e-3", "set": {"lr": 1e-3}}, ...],   # or
     "grid": {"lr": [1e-3, 1e-4], "batch_size": [4, 8]},              # every combination
     "cumulative": false,                              # true: each variant applies over the previous one
     "seeds": [0, 1, 2]}

Each point (variant x seed) is an ordinary ``fastmtl train`` process (``python -m fastmtl
train FLAGS --seed S --out SWEEP/runs/VARIANT/seedS --quiet``) whose output goes to
``train.log`` in its run directory. ``SWEEP/sweep.json`` keeps the sweep (file and scale
overrides), so ``fastmtl sweep SWEEP`` alone continues it: a point with ``summary.json`` is
done and skipped, one with ``last.pt`` but no summary is resumed with ``--resume``, one
killed before its first checkpoint is started again (``--overwrite``). The points run here
(:func:`run_sweep`) or each as a SLURM job (:mod:`fastmtl.sweep.slurm`, the same command). The
results (table, CSV, JSON, PNG) is :mod:`fastmtl.sweep.report`; the built-in sweeps are
:mod:`fastmtl.sweep.builtin`.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from fastmtl import rundir
from fastmtl.config import Config, ConfigError, accepted_fields, format_dilation
from fastmtl.files import MAX_DEPTH, check_depth, loads_object, read_json, value_depth

SWEEP_FILE = "sweep.json"
TOGGLES = ("aspp", "skip", "se", "compile", "fused", "channels_last")  # --x / --no-x flags
SWEEP_OWNED = ("out", "seed", "quiet")  # the sweep sets these for every point
TOP_KEYS = ("name", "base", "variants", "grid", "cumulative", "seeds", "overrides")


@dataclass
class Point:
    """One run of the sweep: ``fields`` are the Config fields given as flags (without seed/out)."""

    variant: str
    seed: int
    fields: Dict[str, Any]
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}"

    def state(self) -> str:
        """``done`` (summary.json), ``interrupted`` (last.pt, no summary), ``partial`` (run files
        but no checkpoint: killed before its first one) or ``new``."""
        if (self.run_dir / "summary.json").is_file():
            return "done"
        if (self.run_dir / "last.pt").is_file():
            return "interrupted"
        return "partial" if rundir.run_files(self.run_dir) else "new"

    def train_args(self) -> List[str]:
        """The ``fastmtl train`` arguments that run (or continue) this point in its current state."""
        if self.state() == "interrupted":
            return ["train", "--resume", str(self.run_dir), "--quiet"]
        args = ["train"] + to_flags(self.fields) + ["--seed", str(self.seed), "--out", str(self.run_dir), "--quiet"]
        return args + (["--overwrite"] if self.state() == "partial" else [])


@dataclass
class Sweep:
    name: str
    folder: Path
    spec: Dict[str, Any]  # what sweep.json holds
    points: List[Point]

    @property
    def variants(self) -> List[str]:
        return list(dict.fromkeys(p.variant for p in self.points))


# ---------------------------------------------------------------------------------------------
# sweep files


def read_sweep_file(path: Path) -> Dict[str, Any]:
    """The sweep file as a dict; a one-line :class:`ConfigError` naming the file otherwise."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"sweep file {path}: cannot be read ({e.strerror or e})") from None
    where = f"sweep file {path}"
    try:
        if path.suffix != ".toml":
            return loads_object(text.decode("utf-8"), where)
        import tomllib  # Python >= 3.11

        data = tomllib.loads(text.decode("utf-8"))
    except ImportError:
        raise ConfigError(f"{where}: TOML needs Python >= 3.11; write it as JSON") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; refused") from None
    except ValueError as e:  # loads_object's one line, TOMLDecodeError
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: not valid TOML ({e})") from None
    try:
        check_depth(value_depth(data), where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return data


def normalise_fields(fields: Any, where: str) -> Dict[str, Any]:
    """Keys with ``-`` -> ``_``; ``"F,F,T"`` and ``"64x128"`` strings parsed; unknown keys refused."""
    if not isinstance(fields, dict):
        raise ConfigError(f"{where}: must be an object of config fields, got {type(fields).__name__}")
    known = set(accepted_fields())
    named: Dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key).replace("-", "_")
        if name in SWEEP_OWNED:
            raise ConfigError(f"{where}: {key!r} is set by the sweep for every point"
                              f"{' (use the top-level seeds list)' if name == 'seed' else ''}")
        if name not in known:
            raise ConfigError(f"{where}: unknown config field {key!r}; valid fields: {', '.join(sorted(known - set(SWEEP_OWNED)))}")
        named[name] = value
    try:
        return Config.check_fields(named)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def expand_variants(spec: Dict[str, Any], where: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``[(name, fields over the base)]`` from ``variants`` (a list) or ``grid`` (every combination)."""
    if "variants" in spec and "grid" in spec:
        raise ConfigError(f"{where}: give either 'variants' or 'grid', not both")
    if "grid" in spec:
        if not isinstance(spec["grid"], dict):
            raise ConfigError(f"{where}: grid must be an object {{field: [values]}}, got {type(spec['grid']).__name__}")
        grid: Dict[str, List[Any]] = {}
        for key, values in spec["grid"].items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: grid {key!r} must be a non-empty list of values")
            checked = [normalise_fields({key: v}, f"{where}: grid") for v in values]
            name = next(iter(checked[0]))  # the field's name (- -> _)
            grid[name] = [c[name] for c in checked]
        keys = list(grid)
        combos = product(*(grid[k] for k in keys))
        return [(",".join(f"{k}={_show(v)}" for k, v in zip(keys, c)), dict(zip(keys, c))) for c in combos]
    variants = spec.get("variants", [{"name": "base", "set": {}}])
    if not isinstance(variants, list) or not variants:
        raise ConfigError(f"{where}: 'variants' must be a non-empty list of {{'name': ..., 'set': {{...}}}}")
    result, current = [], {}
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"].strip():
            raise ConfigError(f"{where}: variants[{i}] needs a 'name' (text) and a 'set' object")
        extra = sorted(set(v) - {"name", "set"})
        if extra:
            raise ConfigError(f"{where}: variants[{i}] ({v['name']}): unknown keys {extra}; put config fields under 'set'")
        fields = normalise_fields(v.get("set", {}), f"{where}: variants[{i}] ({v['name']})")
        current = {**current, **fields} if spec.get("cumulative") else fields
        result.append((v["name"], dict(current)))
    names = [n for n, _ in result]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: variant names must be unique, repeated: {', '.join(dupes)}")
    return result


def build_sweep(spec: Dict[str, Any], folder: Path, where: str) -> Sweep:
    """Points of ``spec`` under ``folder``; every point's config is validated here, before anything runs."""
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; a sweep file has {', '.join(TOP_KEYS[:-1])}")
    base = normalise_fields(spec.get("base", {}), f"{where}: base")
    overrides = normalise_fields(spec.get("overrides", {}), f"{where}: overrides")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' has repeats: {seeds}")
    variants = []
    slugs: Dict[str, str] = {}
    for name, fields in expand_variants(spec, where):
        merged = {**base, **fields, **overrides}
        try:
            Config.from_dict(merged).validate()
        except (ConfigError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: variant {name!r}: {e}") from None
        slug = safe_name(name)
        if slug in slugs:
            raise ConfigError(f"{where}: variants {slugs[slug]!r} and {name!r} map to the same folder {slug!r}")
        slugs[slug] = name
        variants.append((name, merged, slug))
    # seed-major: a sweep stopped early has every variant at its first seeds
    points = [Point(name, seed, merged, folder / "runs" / slug / f"seed{seed}")
              for seed in seeds for name, merged, slug in variants]
    return Sweep(str(spec.get("name", folder.name)), folder, spec, points)


def open_sweep(source: str, out: Optional[str], overrides: Dict[str, Any], builtin: Callable[[str], Optional[Dict]]) -> Sweep:
    """The sweep named by ``source``: a sweep folder (its ``sweep.json``), a built-in name or a
    sweep file; ``out`` is the folder (default ``sweeps/NAME``); ``overrides`` apply to every point.

    A folder that already holds a different sweep is refused; ``sweep.json`` is written only
    when the sweep is new.
    """
    src = Path(source)
    if src.is_dir():
        if not (src / SWEEP_FILE).is_file():
            raise ConfigError(f"fastmtl sweep {source}: the folder has no {SWEEP_FILE} (not a sweep folder)")
        if overrides or (out and Path(out) != src):
            raise ConfigError(f"fastmtl sweep {source}: a sweep folder continues as it was set up; scale flags "
                              f"(--steps, --size, --encoder, --batch-size, --seeds, --set, --pretrained) and --out "
                              f"go with a sweep file or built-in name")
        spec = read_sweep_file(src / SWEEP_FILE)
        return build_sweep(spec, src, str(src / SWEEP_FILE))
    spec = builtin(source)
    where = f"built-in sweep {source}"
    if spec is None:
        if not src.is_file():
            raise ConfigError(f"fastmtl sweep {source}: no such sweep file, sweep folder or built-in sweep")
        spec, where = read_sweep_file(src), f"sweep file {source}"
    spec = dict(spec)
    if "seeds" in overrides:
        spec["seeds"] = overrides.pop("seeds")
    spec["overrides"] = {**spec.get("overrides", {}), **overrides}
    folder = Path(out) if out else Path("sweeps") / safe_name(str(spec.get("name", src.stem)))
    sweep = build_sweep(spec, folder, where)  # validates before anything is written
    saved = folder / SWEEP_FILE
    if saved.is_file():
        if read_sweep_file(saved) != json.loads(json.dumps(spec)):
            raise ConfigError(f"--out {folder} holds another sweep ({saved}); continue it with `fastmtl sweep "
                              f"{folder}` or choose another --out")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(spec, indent=2) + "\n")
    return sweep


# ---------------------------------------------------------------------------------------------
# flags


def to_flags(fields: Dict[str, Any]) -> List[str]:
    """``fastmtl train`` flags that give exactly ``fields`` (checked values, :meth:`Config.check_fields`;
    None: the default, no flag): toggles as ``--x`` / ``--no-x``, lists as ``a,b``, dicts one
    ``--task-weight`` / ``--task-opt`` / ``--weighting-opt`` per entry."""
    flags: List[str] = []
    for name, value in fields.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if name in TOGGLES:
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        elif name == "dilation":
            flags += [flag, format_dilation(value)]
        elif name == "size":
            flags += [flag, f"{value[0]}x{value[1]}"]
        elif name == "weighting_opts":
            flags += [a for k, v in value.items() for a in ("--weighting-opt", f"{k}={_text(v)}")]
        elif name == "task_weights":
            flags += [a for task, w in value.items() for a in ("--task-weight", f"{task}={_text(w)}")]
        elif name == "task_options":
            flags += [a for task, options in value.items() for k, v in options.items()
                      for a in ("--task-opt", f"{task}.{k}={_text(v)}")]
        else:
            flags += [flag, _text(value)]
    return flags


def _text(value: Any) -> str:
    """A field's value as the text of its flag: lists ``a,b``, booleans ``true`` / ``false``."""
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def user_command(point: Point) -> str:
    """The shell command a user (or a scheduler) runs for ``point``."""
    return shlex.join(["fastmtl"] + point.train_args())


# ---------------------------------------------------------------------------------------------
# running


def device_slots(jobs: int) -> List[Dict[str, str]]:
    """Environment per parallel slot: one GPU each (CUDA_VISIBLE_DEVICES) when there are GPUs,
    else a share of the CPU threads (OMP_NUM_THREADS) unless already set."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
        return [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(jobs)]
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        return [{"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))} for _ in range(jobs)]
    return [{} for _ in range(jobs)]


def run_point(point: Point, env: Dict[str, str]) -> Tuple[int, float]:
    """Run one point to its end as a subprocess of the CLI; ``(exit code, seconds)``."""
    point.run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(point.run_dir / "train.log", "a") as log:
        log.write(f"$ {user_command(point)}\n")
        log.flush()
        rc = subprocess.call([sys.executable, "-m", "fastmtl"] + point.train_args(), stdout=log,
                             stderr=subprocess.STDOUT, env={**os.environ, **env})
    return rc, time.time() - started


def _read_summary(p: "Point") -> Optional[Dict[str, Any]]:
    """The finished point's ``summary.json``, or None (with a warning) when it is empty or torn."""
    try:
        return read_json(p.run_dir / "summary.json", "the run's summary")
    except ValueError as e:
        warnings.warn(str(e), stacklevel=2)
        return None


def pending_points(sweep: Sweep, echo: Callable[[str], None]) -> Tuple[List[Point], int]:
    """The points not done yet and how many are done; one ``done already, skipped`` line per done point."""
    todo, finished = [], 0
    for p in sweep.points:
        if p.state() == "done":
            finished += 1
            echo(f"[{finished}/{len(sweep.points)}] {p.label}: done already, skipped")
        else:
            todo.append(p)
    return todo, finished


def how_text(point: Point) -> str:
    """How the next run of ``point`` starts: ``resumed`` (from its last.pt), ``restarted`` or ``""`` (new)."""
    return {"interrupted": "resumed", "partial": "restarted"}.get(point.state(), "")


def point_title(point: Point, how: str) -> str:
    """``+ ASPP seed 0 (resumed)``: the point and how its run starts (:func:`how_text`)."""
    return f"{point.label}{' (' + how + ')' if how else ''}"


def progress_head(point: Point, how: str, finished: int, total: int) -> str:
    """``[3/20] + ASPP seed 0 (resumed)``: the start of a point's progress line."""
    return f"[{finished}/{total}] {point_title(point, how)}"


def train_outcome(point: Point, rc: int, seconds: float) -> Tuple[bool, str]:
    """``(ok, text)`` of a point whose train process ended with exit code ``rc`` after ``seconds``: its
    headline metrics, or FAILED and the path of its ``train.log``."""
    summary = _read_summary(point) if rc == 0 and point.state() == "done" else None
    if summary is not None:
        return True, f"{_headline(summary['final'])}  ({seconds:.0f} s)"
    return False, f"FAILED (exit {rc}); see {point.run_dir / 'train.log'}"


def run_sweep(sweep: Sweep, jobs: int = 1, echo: Callable[[str], None] = print) -> List[Tuple[Point, Path]]:
    """Run every point that is not done (``jobs`` at a time); one progress line per point.
    Returns the points that failed, each with its ``train.log`` (which says why)."""
    total = len(sweep.points)
    todo, finished = pending_points(sweep, echo)
    if not todo:
        return []
    slots = device_slots(max(1, jobs))
    free = list(range(len(slots)))
    lock = threading.Lock()
    failed: List[Tuple[Point, Path]] = []

    def work(p: Point) -> None:
        nonlocal finished
        with lock:
            slot = free.pop()
        how = how_text(p)
        try:
            rc, seconds = run_point(p, slots[slot])
        finally:
            with lock:
                free.append(slot)
        with lock:
            finished += 1
            ok, text = train_outcome(p, rc, seconds)
            if not ok:
                failed.append((p, p.run_dir / "train.log"))
            echo(f"{progress_head(p, how, finished, total)}: {text}")

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(work, todo))
    return failed


def safe_name(name: str) -> str:
    """A variant name as one safe folder name: letters, digits and ``. _ = -`` only (a slash, space,
    comma... becomes ``_``), never ``.``/``..`` or hidden (no leading dot), never empty, at most 100
    characters."""
    keep = "".join(c if c.isalnum() or c in "._=-" else "_" for c in name.replace("+", "plus").strip())
    return keep[:100].strip("._") or "variant"


RUN_POSITION = ("step", "epoch")  # where a summary's ``final`` was taken, not a metric


def _headline(final: Dict[str, Any]) -> str:
    """``mIoU 40.12  SI-logRMSE 30.50  multitask 5.00``: a run's summary ``final`` (its tasks' headline
    metrics and the multitask score), whichever tasks it has."""
    labels = {"miou": "mIoU", "si_log_rmse": "SI-logRMSE"}
    return "  ".join(f"{labels.get(k, k)} {v:.2f}" for k, v in final.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RUN_POSITION)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, bool) for v in value):
        return format_dilation(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    return _text(value)
