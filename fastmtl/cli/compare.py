"""``fastmtl compare``: several runs' metrics side by side and Δm against baseline runs."""
from __future__ import annotations

import argparse
import json

from ..runtime import resolve_device

HELP = 'every metric of every task of several runs, and Δm against a baseline run'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (their summary.json)")
    p.add_argument("--baseline", required=True, action="append", metavar="RUN_DIR",
                   help="the run Δm is measured against; repeat it for runs that together have each task once "
                        "(e.g. single-task runs)")
    p.add_argument("--at", choices=("final", "best"), default="final",
                   help="the final evaluation (default) or each run's best step (metrics.jsonl)")
    p.add_argument("--delta-m-sign", choices=("higher-better", "lower-better"), default="higher-better",
                   help="higher-better (default; Maninis / LibMTL: a better run has Δm > 0) or lower-better "
                        "(Δm %% ↓ of the MTAN, CAGrad, Nash-MTL and FAMO tables)")
    p.add_argument("--metric-style", choices=("libmtl", "mtan"), default="libmtl",
                   help="libmtl (default: the runs' recorded metrics) or mtan (each run's last.pt / best.pt "
                        "evaluated again with per-batch means at batch size 2, as the MTAN / Nash-MTL code)")
    p.add_argument("--device", default="auto", help="where --metric-style mtan evaluates (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..compare import compare, format_table

    report = compare(args.runs, args.baseline, args.at, args.delta_m_sign, args.metric_style,
                     str(resolve_device(args.device)))
    print(json.dumps(report) if args.json else format_table(report))
    return 0
