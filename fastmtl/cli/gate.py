"""``fastmtl gate``: compile every Triton kernel specialisation for the GPU targets, no GPU needed."""
from __future__ import annotations

import argparse
import json
import sys

from .aot_flags import ARCH_CHOICES, DTYPE_CHOICES, parse_choices

HELP = 'compile every Triton kernel specialisation for sm_80/90/100 (no GPU needed)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="80,90,100", help="comma-separated targets: 80 (A100), 90 (H100/H200), 100 (B200)")
    p.add_argument("--dtype", default="bf16,fp32", help="comma-separated activation dtypes (default bf16,fp32)")
    p.add_argument("--op", default=None, help="comma-separated ops (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="compiler processes (default 2)")
    p.add_argument("--no-cache", action="store_true", help="recompile everything (results are cached per spec)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/aot/results.md)")


def run(args: argparse.Namespace) -> int:
    from ..perf.cases import OPS
    from ..perf.aot.gate import format_gate, run_gate

    report = run_gate(archs=[int(a) for a in parse_choices(args.arch, ARCH_CHOICES, "--arch")],
                      ops=parse_choices(args.op, OPS, "--op") if args.op else None,
                      dtypes=parse_choices(args.dtype, DTYPE_CHOICES, "--dtype"), use_cache=not args.no_cache,
                      workers=args.jobs, progress=sys.stderr.isatty())
    print(json.dumps(report) if args.json else format_gate(report, markdown=args.markdown))
    return 0 if report["ok"] else 1
