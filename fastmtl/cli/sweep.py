"""``fastmtl sweep``: many train runs from a sweep file or a built-in sweep, resumable, and their report."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

from ..config import ConfigError
from ..files import check_depth, nesting_depth
from ..sweep.slurm_options import CLUSTERS, FLAGS, check_given, options_file, parse_opts, save_options, \
    saved_options, slurm_options
from .flags import size_type

HELP = 'many train runs from a sweep file (or a built-in sweep), resumable; one table'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP", help="a sweep file (.json / .toml), a built-in sweep (report-ladder, "
                   "report-hparams) or a sweep folder to continue")
    p.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default sweeps/NAME)")
    p.add_argument("--jobs", type=int, default=None, help="runs at a time (one GPU each on a multi-GPU machine; default "
                   "1); with --launcher slurm --slurm-array: the array's jobs running at once (default: all)")
    p.add_argument("--print-commands", action="store_true", help="print one fastmtl train command per run not done; train nothing (the sweep folder and its "
                   "sweep.json are written, so `fastmtl sweep DIR` continues it)")
    p.add_argument("--report-only", action="store_true", help="write the table, CSV, JSON and plot of the runs "
                   "finished so far; run nothing")
    p.add_argument("--steps", type=int, default=None, help="--max-steps of every run")
    p.add_argument("--size", type=size_type, default=None, metavar="HxW", help="--size of every run")
    p.add_argument("--encoder", default=None, help="--encoder of every run")
    p.add_argument("--batch-size", type=int, default=None, help="--batch-size of every run")
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=None, metavar="0,1,2",
                   help="seeds (replaces the sweep's)")
    p.add_argument("--pretrained", default=None, metavar="PATH", help="encoder weights of every run (report-ladder: "
                   "adds the ImageNet-init step)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="any config field for every run (repeatable), e.g. --set eval_every=400 --set workers=0")
    s = p.add_argument_group("SLURM", "--launcher slurm: each run a SLURM job, through submitit (pip install "
                             "fastmtl[slurm]); a sweep folder keeps these, so `fastmtl sweep DIR` continues on SLURM")
    s.add_argument("--launcher", choices=("local", "slurm"), default=None,
                   help="local: the runs as processes of this machine (default); slurm: one SLURM job each "
                   "(default for a sweep folder last submitted to SLURM)")
    s.add_argument("--no-wait", action="store_true", help="submit the jobs and return; a later `fastmtl sweep DIR` "
                   "waits for them and writes the report")
    s.add_argument("--slurm-array", action=argparse.BooleanOptionalAction, default=None,
                   help="one job array of all the runs (at most --jobs running at once) instead of one job per run")
    s.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES", help="the time limit of each job (needed)")
    s.add_argument("--slurm-partition", default=None, metavar="NAME", help="the partition (default: the cluster's)")
    s.add_argument("--slurm-gpus", type=int, default=None, metavar="N", help="GPUs per job (--gpus-per-node; "
                   "default 1; 0: none)")
    s.add_argument("--slurm-cpus", type=int, default=None, metavar="N", help="CPUs per job (--cpus-per-task)")
    s.add_argument("--slurm-account", default=None, metavar="NAME", help="the account charged")
    s.add_argument("--slurm-qos", default=None, metavar="NAME", help="the quality of service")
    s.add_argument("--slurm-constraint", default=None, metavar="FEATURES", help="node features, e.g. a100")
    s.add_argument("--slurm-opt", action="append", default=None, metavar="KEY=VALUE",
                   help="any other sbatch option (repeatable), e.g. --slurm-opt mem=32G --slurm-opt mail-type=END")
    s.add_argument("--slurm-cluster", choices=CLUSTERS, default=None, help="slurm (default); local: submitit's "
                   "LocalExecutor, the jobs as processes of this machine (to try a sweep's SLURM setup, tests)")


def run(args: argparse.Namespace) -> int:
    from ..sweep.runner import open_sweep, user_command
    from ..sweep.builtin import builtin_sweep
    from ..sweep.report import collect, write_report

    overrides: Dict = {}
    for flag, key in (("steps", "max_steps"), ("size", "size"), ("encoder", "encoder"), ("batch_size", "batch_size"),
                      ("seeds", "seeds"), ("pretrained", "pretrained")):
        if flag == "pretrained" and builtin_sweep(args.sweep) is not None:
            continue  # a built-in sweep places it (report-ladder: from its ImageNet-init step on)
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if "size" in overrides:
        overrides["size"] = list(overrides["size"])
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: must look like KEY=VALUE (a JSON value or text), e.g. lr=3e-4")
        check_depth(nesting_depth(value), f"--set {key.strip()}")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    given = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in FLAGS.items()}
    given["opts"] = parse_opts(args.slurm_opt) if args.slurm_opt else None
    check_given(given)
    sweep = open_sweep(args.sweep, args.out, overrides, lambda name: builtin_sweep(name, args.pretrained))
    if args.print_commands:
        for p in sweep.points:
            if p.state() != "done":
                print(user_command(p))
        return 0
    print(f"sweep {sweep.name}: {len(sweep.points)} runs ({len(sweep.variants)} variants) in {sweep.folder}", flush=True)
    failed = launch(args, sweep, given)
    if failed is None:
        return 0
    results = collect(sweep)
    paths = write_report(results, sweep.folder)
    print()
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if failed:
        print(f"fastmtl sweep: error: {len(failed)} runs failed: "
              + "; ".join(f"{p.label} (log {log})" for p, log in failed), file=sys.stderr)
        return 1
    return 0


def launch(args: argparse.Namespace, sweep, given: Dict) -> Optional[List]:
    """Run the points not done on the launcher of ``args`` (default: the one the folder was last run on);
    the failed ``(point, log)``, or None when the jobs were submitted without waiting (--no-wait)."""
    from ..sweep.runner import run_sweep

    saved = saved_options(sweep.folder)
    if (args.launcher or ("slurm" if saved is not None else "local")) == "slurm":
        options = slurm_options(given, saved, str(options_file(sweep.folder)))
        if args.report_only:
            return []
        save_options(options, sweep.folder)
        return slurm_launcher().run_on_slurm(sweep, options, wait=not args.no_wait, echo=_echo)
    named = [FLAGS[k] for k, v in given.items() if v is not None and k != "parallelism"] + ["--no-wait"] * args.no_wait
    if named:
        raise ConfigError(f"{named[0]} goes with --launcher slurm")
    if args.report_only:
        return []
    if saved is not None:
        busy = slurm_launcher().jobs_in_flight(sweep)
        if busy:
            raise ConfigError(f"--launcher local: {len(busy)} runs have SLURM jobs still queued or running: "
                              f"{', '.join(busy[:3])}{' ...' if len(busy) > 3 else ''}; wait for them (`fastmtl sweep "
                              f"{sweep.folder}`) or scancel them first")
    return run_sweep(sweep, jobs=args.jobs or 1, echo=_echo)


def _echo(line: str) -> None:
    print(line, flush=True)


def slurm_launcher():
    """:mod:`fastmtl.sweep.slurm`, or a one-line error naming the extra that installs submitit."""
    try:
        from ..sweep import slurm
    except ImportError as e:
        if (e.name or "").split(".")[0] != "submitit":
            raise
        raise ConfigError("--launcher slurm needs submitit: pip install fastmtl[slurm]") from None
    return slurm
