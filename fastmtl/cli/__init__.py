"""The ``fastmtl`` command: one table of subcommands (:data:`COMMANDS`), each a module of this package
with its ``HELP``, ``add_arguments(parser)`` and ``run(args)``; :func:`main` parses and runs one and turns
the errors a user can fix into a one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .. import __version__
from ..errors import TrainingDiverged
from . import bench, compare, data, doctor, evaluate, export, gate, predict, profile, sweep, traffic, train

# The modules the commands import inside their ``run`` only to keep start-up fast (``fastmtl --help``,
# FASTMTL_PARSE_ONLY); the import-graph test (tests/test_import_graph.py) excepts exactly these.
LAZY_IMPORTS = (
    "fastmtl.compare", "fastmtl.data.synthetic", "fastmtl.doctor", "fastmtl.evaluate", "fastmtl.export",
    "fastmtl.perf.aot.gate", "fastmtl.perf.aot.traffic", "fastmtl.perf.cases", "fastmtl.perf.model_bench", "fastmtl.perf.op_bench", "fastmtl.perf.profile",
    "fastmtl.perf.report", "fastmtl.predict", "fastmtl.sweep.builtin", "fastmtl.sweep.report",
    "fastmtl.sweep.runner", "fastmtl.train",
)

Command = Tuple[str, Callable[[argparse.ArgumentParser], None], Optional[Callable[[argparse.Namespace], int]]]
# name -> (help, add_arguments, run); run None: a group whose subcommands set their own (``data``)
COMMANDS: Dict[str, Command] = {
    "train": (train.HELP, train.add_arguments, train.run),
    "eval": (evaluate.HELP, evaluate.add_arguments, evaluate.run),
    "predict": (predict.HELP, predict.add_arguments, predict.run),
    "compare": (compare.HELP, compare.add_arguments, compare.run),
    "export": (export.HELP, export.add_arguments, export.run),
    "data": (data.HELP, data.add_arguments, None),
    "profile": (profile.HELP, profile.add_arguments, profile.run),
    "bench": (bench.HELP, bench.add_arguments, bench.run),
    "sweep": (sweep.HELP, sweep.add_arguments, sweep.run),
    "doctor": (doctor.HELP, doctor.add_arguments, doctor.run),
    "gate": (gate.HELP, gate.add_arguments, gate.run),
    "traffic": (traffic.HELP, traffic.add_arguments, traffic.run),
}


def build_parser(commands: Mapping[str, Command] = COMMANDS) -> argparse.ArgumentParser:
    """The ``fastmtl`` parser: one subcommand per entry of ``commands``."""
    parser = argparse.ArgumentParser(prog="fastmtl", description="Multi-task dense prediction with fused Triton kernels.")
    parser.add_argument("--version", action="version", version=f"fastmtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_arguments, run) in commands.items():
        p = sub.add_parser(name, help=help_text)
        add_arguments(p)
        if run is not None:
            p.set_defaults(func=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if os.environ.get("FASTMTL_PARSE_ONLY") == "1":  # the flags parse; run nothing (gpu_check.sh --dry-run)
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError, TrainingDiverged) as e:  # ConfigError, bad files, paths, a diverged run
        print(f"fastmtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmtl {args.command}: interrupted", file=sys.stderr)
        return 130
