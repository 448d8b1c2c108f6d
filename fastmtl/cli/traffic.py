"""``fastmtl traffic``: the memory-traffic model (bytes, launches) of every fused op and pass."""
from __future__ import annotations

import argparse
import json

from .aot_flags import DTYPE_CHOICES, LAYOUT_CHOICES, parse_choices

HELP = 'memory-traffic MODEL (bytes, launches) of every op and pass'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", default=None, help="comma-separated ops (default: all four)")
    p.add_argument("--dtype", default="bf16,fp32", help="comma-separated activation dtypes (default bf16,fp32)")
    p.add_argument("--layout", default="nchw", help="nchw and/or channels_last (default nchw)")
    p.add_argument("--variants", action="store_true",
                   help="also the code paths the bench does not take (no residual, ASPP train, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/aot/results.md)")


def run(args: argparse.Namespace) -> int:
    from ..perf.cases import OPS
    from ..perf.aot.traffic import format_traffic, run_traffic

    report = run_traffic(ops=parse_choices(args.op, OPS, "--op") if args.op else None,
                         dtypes=parse_choices(args.dtype, DTYPE_CHOICES, "--dtype"),
                         layouts=parse_choices(args.layout, LAYOUT_CHOICES, "--layout"), variants=args.variants)
    print(json.dumps(report) if args.json else format_traffic(report, markdown=args.markdown))
    return 0
