"""The ``fastmtl gate`` and ``fastmtl traffic`` subcommands (registered by :mod:`fastmtl.cli`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Sequence

from fastmtl.config import ConfigError

ARCH_CHOICES = ("80", "90", "100")
DTYPE_CHOICES = ("bf16", "fp32")
LAYOUT_CHOICES = ("nchw", "channels_last")


def _list(text: str, valid: Sequence[str], flag: str) -> List[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if not items or bad:
        raise ConfigError(f"{flag} {text!r}: expected a comma-separated list of {', '.join(valid)}")
    return items


def cmd_gate(args: argparse.Namespace) -> int:
    from fastmtl.perf.cases import OPS
    from fastmtl.perf.aot.gate import format_gate, run_gate

    report = run_gate(archs=[int(a) for a in _list(args.arch, ARCH_CHOICES, "--arch")],
                      ops=_list(args.op, OPS, "--op") if args.op else None,
                      dtypes=_list(args.dtype, DTYPE_CHOICES, "--dtype"), use_cache=not args.no_cache,
                      workers=args.jobs, progress=sys.stderr.isatty())
    print(json.dumps(report) if args.json else format_gate(report, markdown=args.markdown))
    return 0 if report["ok"] else 1


def cmd_traffic(args: argparse.Namespace) -> int:
    from fastmtl.perf.cases import OPS
    from fastmtl.perf.aot.traffic import format_traffic, run_traffic

    report = run_traffic(ops=_list(args.op, OPS, "--op") if args.op else None,
                         dtypes=_list(args.dtype, DTYPE_CHOICES, "--dtype"),
                         layouts=_list(args.layout, LAYOUT_CHOICES, "--layout"), variants=args.variants)
    print(json.dumps(report) if args.json else format_traffic(report, markdown=args.markdown))
    return 0


def add_commands(sub) -> None:
    """Add ``gate`` and ``traffic`` to the ``fastmtl`` subparsers ``sub``."""
    p = sub.add_parser("gate", help="compile every Triton kernel specialisation for sm_80/90/100 (no GPU needed)")
    p.add_argument("--arch", default="80,90,100", help="comma-separated targets: 80 (A100), 90 (H100/H200), 100 (B200)")
    p.add_argument("--dtype", default="bf16,fp32", help="comma-separated activation dtypes (default bf16,fp32)")
    p.add_argument("--op", default=None, help="comma-separated ops (default: all four)")
    p.add_argument("--jobs", type=int, default=2, help="compiler processes (default 2)")
    p.add_argument("--no-cache", action="store_true", help="recompile everything (results are cached per spec)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/RESULTS.md)")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("traffic", help="memory-traffic MODEL (bytes, launches) of every op and pass")
    p.add_argument("--op", default=None, help="comma-separated ops (default: all four)")
    p.add_argument("--dtype", default="bf16,fp32", help="comma-separated activation dtypes (default bf16,fp32)")
    p.add_argument("--layout", default="nchw", help="nchw and/or channels_last (default nchw)")
    p.add_argument("--variants", action="store_true",
                   help="also the code paths the bench does not take (no residual, ASPP train, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/RESULTS.md)")
    p.set_defaults(func=cmd_traffic)
