"""``fastmtl bench``: the fused ops (or, ``--models``, whole train steps) against eager and torch.compile."""
from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..runtime import resolve_device

HELP = 'time the fused ops against eager and torch.compile references'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ops", default=None, metavar="LIST",
                   help="comma-separated ops: se_scale, sigmoid_gate, aspp, silog, bn_relu (default: all)")
    p.add_argument("--modes", default="forward,backward,full", help="comma-separated passes (default: all three)")
    p.add_argument("--impls", default=None, metavar="LIST",
                   help="eager,compile,fused,fused_compile (default: all on CUDA, eager on CPU; fused rows need CUDA); "
                        "--models also compile_graphs,fused_compile_graphs (torch.compile reduce-overhead; CUDA only)")
    p.add_argument("--size", dest="bench_size", default=None, metavar="tiny|small|full",
                   help="full: batch 8 at 256x512 (default on CUDA); small: batch 2 at 64x128 (default on CPU); "
                        "tiny: a few programs per launch (the tests' size)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="activation dtype (default auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--device", default="auto", help="default: cuda if available")
    p.add_argument("--models", default=None, metavar="LIST",
                   help="time whole models instead of the ops: comma-separated NAME or NAME@ENCODER "
                        "(e.g. joint@resnet18) or 'default' (images/s and peak CUDA memory per --impls and "
                        "--layouts; --size tiny|small|full)")
    p.add_argument("--phases", default="train", metavar="LIST", help="with --models: train,inference (default train)")
    p.add_argument("--steps", type=int, default=None, help="with --models: timed calls per row (default 10 on CUDA, 3 on CPU)")
    p.add_argument("--layouts", default="nchw", metavar="LIST",
                   help="with --models: nchw,channels_last (default nchw, as fastmtl train without --channels-last)")
    p.add_argument("--rows-jsonl", default=None, metavar="FILE",
                   help="with --models: append each row to FILE as one JSON line as soon as it is measured")
    p.add_argument("--kernel-table", action="store_true",
                   help="with --models: the top 25 kernels (CUDA) or ops (CPU) of one profiled train step per "
                        "--impls and --layouts, instead of the timing rows")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..perf.cases import IMPLS, MODES, OPS, parse_list
    from ..perf.op_bench import BenchOptions, run_bench
    from ..perf.report import format_report

    if args.models:
        return _bench_models(args)
    for flag, value in (("--kernel-table", args.kernel_table), ("--rows-jsonl", args.rows_jsonl)):
        if value:
            raise ConfigError(f"{flag} needs --models (it is about whole train steps)")
    opts = BenchOptions(ops=parse_list(args.ops, OPS, "ops") if args.ops else list(OPS), modes=parse_list(args.modes, MODES, "modes"),
                        impls=parse_list(args.impls, IMPLS, "impls") if args.impls else None,
                        size=args.bench_size, device=str(resolve_device(args.device)), dtype=args.dtype,
                        progress=sys.stderr.isatty())
    report = run_bench(opts)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    from ..perf.cases import MODEL_IMPLS, parse_list
    from ..perf.model_bench import LAYOUTS, MODEL_PHASES, format_model_report, run_model_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]  # NAME[@ENCODER]: checked by resolve_models
    if not models:
        raise ConfigError("--models needs at least one NAME, NAME@ENCODER or 'default'")
    impls = parse_list(args.impls, MODEL_IMPLS, "impls") if args.impls else None
    layouts = parse_list(args.layouts, LAYOUTS, "layouts")
    device = str(resolve_device(args.device))
    if args.kernel_table:
        return _kernel_table(args, models, impls, layouts, device)
    report = run_model_bench(models, parse_list(args.phases, MODEL_PHASES, "phases"), impls, device,
                             size=args.bench_size, steps=args.steps, progress=sys.stderr.isatty(),
                             layouts=layouts, rows_jsonl=args.rows_jsonl)
    print(json.dumps(report) if args.json else format_model_report(report))
    return 0


def _kernel_table(args: argparse.Namespace, models, impls, layouts, device: str) -> int:
    from ..perf.kernel_table import format_kernel_table, run_kernel_table

    report = run_kernel_table(models, impls or ["eager"], layouts, device, size=args.bench_size)
    print(json.dumps(report) if args.json else format_kernel_table(report))
    return 0
