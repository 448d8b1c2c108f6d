"""The ``fastmtl`` command: one table of subcommands (:data:`COMMANDS`), each a module of this package
with its ``HELP``, ``add_arguments(parser)`` and ``run(args)``; :func:`main` parses and runs one and turns
the errors a user can fix into a one-line message.

Exit codes: 0 success; 2 an error the user can fix (one line: a bad flag, file or path, a diverged
run, a distributed run that lost a process); 3 an unexpected error (one line naming the command and the error; the full traceback is in
the log file the line names: the run directory of ``train`` when it exists, else
``fastmtl.paths.cache_root() / "logs"``); 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .. import __version__
from ..errors import TrainingDiverged
from ..paths import cache_root
from ..runtime import is_peer_failure, launch_ranks
from . import bench, compare, data, doctor, evaluate, export, gate, predict, profile, sweep, traffic, train

# The modules the commands import inside their ``run`` only to keep start-up fast (``fastmtl --help``,
# FASTMTL_PARSE_ONLY); the import-graph test (tests/test_import_graph.py) excepts exactly these.
LAZY_IMPORTS = (
    "fastmtl.compare", "fastmtl.data.synthetic", "fastmtl.doctor", "fastmtl.evaluate", "fastmtl.export",
    "fastmtl.perf.aot.gate", "fastmtl.perf.aot.traffic", "fastmtl.perf.cases", "fastmtl.perf.kernel_table", "fastmtl.perf.model_bench", "fastmtl.perf.op_bench", "fastmtl.perf.profile",
    "fastmtl.perf.scaling_model", "fastmtl.perf.step_model",
    "fastmtl.perf.report", "fastmtl.predict", "fastmtl.sweep.builtin", "fastmtl.sweep.report",
    "fastmtl.sweep.runner", "fastmtl.sweep.slurm", "fastmtl.train",
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


# the flags naming a command's run directory, where its crash log goes (when the directory exists)
RUN_DIR_FLAGS: Dict[str, Tuple[str, ...]] = {"train": ("resume", "out")}
EXIT_USER_ERROR, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 3, 130


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
        return EXIT_USER_ERROR
    except KeyboardInterrupt as e:  # train's says what it saved and how to resume
        print(f"fastmtl {args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the last line of defence: anything else is a bug or an unforeseen failure
        if is_peer_failure(e):  # torch.distributed: another rank or node failed, was stopped or timed out
            where = write_crash_log(args, sys.argv[1:] if argv is None else argv, report=False)
            print(f"fastmtl {args.command}: error: the distributed run lost a process (another rank or node "
                  f"failed, was stopped or timed out): {_one_line(e)}; when every node is up again, resume "
                  f"each with 'fastmtl train --resume RUN' ({where})", file=sys.stderr)
            return EXIT_USER_ERROR
        where = write_crash_log(args, sys.argv[1:] if argv is None else argv)
        print(f"fastmtl {args.command}: unexpected error: {type(e).__name__}: {_one_line(e)} ({where})",
              file=sys.stderr)
        return EXIT_UNEXPECTED


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, at most 300 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def crash_log_dirs(args: argparse.Namespace) -> List[Path]:
    """Where a crash log of ``args.command`` may go, best first: its run directory (if it exists and
    this process is global rank 0, the one process that writes there), then ``cache_root() / "logs"``."""
    dirs = [Path(v) for v in (getattr(args, f, None) for f in RUN_DIR_FLAGS.get(args.command, ())) if v]
    writer = launch_ranks()[0] == 0
    return [d for d in dirs if writer and d.is_dir()][:1] + [cache_root() / "logs"]


def write_crash_log(args: argparse.Namespace, argv: List[str], report: bool = True) -> str:
    """Write the traceback of the exception being handled to a log file; say where (or why not);
    ``report``: ask for a bug report (not for a failure outside fastmtl, such as a lost node)."""
    name = f"crash-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = f"fastmtl {' '.join(argv)}\n\n{traceback.format_exc()}"
    reasons = []
    for folder in crash_log_dirs(args):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return f"traceback in {folder / name}" + ("; please report it" if report else "")
        except OSError as e:
            reasons.append(f"{folder}: {e.strerror or e}")
    return f"the traceback could not be written: {'; '.join(reasons)}"
