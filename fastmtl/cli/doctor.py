"""``fastmtl doctor``: device, versions, kernel mode and the self-check of every fused op."""
from __future__ import annotations

import argparse
import json
import sys

HELP = 'device, versions, kernel mode and the self-check of every fused op'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gate", action="store_true",
                   help="also run the compile gate for this GPU's target (a cold cache takes minutes; cached after)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..doctor import collect, format_report

    report = collect(gate=args.gate, progress=args.gate and sys.stderr.isatty())
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["ok"] else 1
