"""``fastmtl sweep``: many train runs from a sweep file or a built-in sweep, resumable, and their report."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict

from ..config import ConfigError
from ..files import check_depth, nesting_depth
from .flags import size_type

HELP = 'many train runs from a sweep file (or a built-in sweep), resumable; one table'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP", help="a sweep file (.json / .toml), a built-in sweep (report-ladder, "
                   "report-hparams) or a sweep folder to continue")
    p.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default sweeps/NAME)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one GPU each on a multi-GPU machine; default 1)")
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


def run(args: argparse.Namespace) -> int:
    from ..sweep.runner import open_sweep, run_sweep, user_command
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
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    sweep = open_sweep(args.sweep, args.out, overrides, lambda name: builtin_sweep(name, args.pretrained))
    if args.print_commands:
        for p in sweep.points:
            if p.state() != "done":
                print(user_command(p))
        return 0
    print(f"sweep {sweep.name}: {len(sweep.points)} runs ({len(sweep.variants)} variants) in {sweep.folder}", flush=True)
    failed = [] if args.report_only else run_sweep(sweep, jobs=args.jobs, echo=lambda line: print(line, flush=True))
    results = collect(sweep)
    paths = write_report(results, sweep.folder)
    print()
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if failed:
        print(f"fastmtl sweep: error: {len(failed)} runs failed: "
              + "; ".join(f"{p.label} (log {p.run_dir / 'train.log'})" for p in failed), file=sys.stderr)
        return 1
    return 0
