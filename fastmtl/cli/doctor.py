"""``fastmtl doctor``: device, versions, kernel mode and the self-check of every fused op."""
from __future__ import annotations

import argparse
import json

HELP = 'device, versions, kernel mode and the self-check of every fused op'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..doctor import collect, format_report

    report = collect()
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["ok"] else 1
