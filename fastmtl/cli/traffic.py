"""``fastmtl traffic``: the memory-traffic model (bytes, launches) of every fused op and pass, or
(``--step MODEL``) the step MODEL of a whole train step (:mod:`fastmtl.perf.step_model`), with
``--gpus`` its scaling MODEL on N GPUs (:mod:`fastmtl.perf.scaling_model`)."""
from __future__ import annotations

import argparse
import json

from ..config import ConfigError
from ..models import MODEL_NAMES
from .aot_flags import DTYPE_CHOICES, LAYOUT_CHOICES, parse_choices

HELP = 'memory-traffic MODEL (bytes, launches) of every op and pass'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", default=None, help="comma-separated ops (default: all)")
    p.add_argument("--dtype", default="bf16,fp32", help="comma-separated activation dtypes (default bf16,fp32)")
    p.add_argument("--layout", default="nchw", help="nchw and/or channels_last (default nchw)")
    p.add_argument("--variants", action="store_true",
                   help="also the code paths the bench does not take (no residual, ASPP train, ...)")
    p.add_argument("--step", default=None, metavar="MODEL",
                   help="the step MODEL of MODEL's whole train step ('default' or a model name): modelled time per "
                        "scenario, launches, bytes, groups, host syncs")
    p.add_argument("--gpu", default="h200", choices=("h100", "h200"), help="with --step: the roofline (default h200)")
    p.add_argument("--batch", type=int, default=8, help="with --step: images per step, >= 2 (default 8)")
    p.add_argument("--size", default="256x512", metavar="HxW", help="with --step: image size (default 256x512)")
    p.add_argument("--nchw", action="store_true", help="with --step: NCHW instead of channels_last")
    p.add_argument("--gpus", default=None, metavar="N|LIST",
                   help="with --step: the scaling MODEL (weak scaling, --batch per GPU) on 1, 2, 4, ... up to N GPUs, "
                        "or on a comma-separated list; above 8, whole 8-GPU nodes")
    p.add_argument("--weighting", default=None, metavar="LIST",
                   help="with --gpus: comma-separated --weighting methods to scale (default fixed)")
    p.add_argument("--weighting-grads", default=None, metavar="LIST",
                   help="with --gpus: the gradient methods' modes, params and/or rep (default params,rep)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for benchmarks/aot/results.md)")


def _hw(text: str) -> tuple:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must be HxW (e.g. 256x512), got {text!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"--size must be positive, got {text!r}")
    return h, w


def _gpu_counts(text: str, check) -> tuple:
    """``--gpus``: N (1, 2, 4, ... up to N) or a comma list, always with 1 (the efficiency's base)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--gpus must be a GPU count or a comma-separated list of them, got {text!r}") from None
    if len(values) == 1:
        top = values[0]
        values = [n for n in (2 ** i for i in range(max(top, 1).bit_length())) if n <= top] + [top]
    for n in values:
        try:
            check(n)
        except ValueError as e:
            raise ConfigError(f"--gpus: {e}") from None
    return tuple(sorted({1, *values}))


def run_step_model(args: argparse.Namespace) -> int:
    from ..perf.scaling_model import FABRICS, format_scaling_model, nodes_of, scaling_model
    from ..perf.step_model import format_step_model, step_model

    for flag, value in (("--op", args.op), ("--variants", args.variants), ("--markdown", args.markdown)):
        if value:
            raise ConfigError(f"{flag} is for the per-op traffic model, not --step")
    if args.gpus is None:
        for flag, value in (("--weighting", args.weighting), ("--weighting-grads", args.weighting_grads)):
            if value is not None:
                raise ConfigError(f"{flag} is for the scaling model: add --gpus")
    if args.step not in ("default",) + tuple(MODEL_NAMES):
        raise ConfigError(f"--step must be 'default' or one of {', '.join(MODEL_NAMES)}, got {args.step!r}")
    if args.batch < 2:
        raise ConfigError(f"--batch must be >= 2 (training BatchNorm needs 2 values per channel), got {args.batch}")
    size, channels_last = _hw(args.size), not args.nchw
    scaling = None
    if args.gpus is not None:
        gpus = _gpu_counts(args.gpus, lambda n: nodes_of(n, FABRICS[args.gpu]))
        weightings, modes = (args.weighting or "fixed").split(","), (args.weighting_grads or "params,rep").split(",")
        scaling = scaling_model(args.step, args.gpu, args.batch, size, channels_last, gpus, weightings, modes)
    report = step_model(args.step, args.gpu, args.batch, size, channels_last=channels_last)
    if args.json:
        print(json.dumps(report if scaling is None else {**report, "scaling": scaling}))
    else:
        print(format_step_model(report) + ("" if scaling is None else "\n\n" + format_scaling_model(scaling)))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.step is not None:
        return run_step_model(args)
    for flag, value in (("--gpus", args.gpus), ("--weighting", args.weighting),
                        ("--weighting-grads", args.weighting_grads)):
        if value is not None:
            raise ConfigError(f"{flag} is for the scaling model of --step MODEL")
    from ..perf.cases import OPS
    from ..perf.aot.traffic import format_traffic, run_traffic

    report = run_traffic(ops=parse_choices(args.op, OPS, "--op") if args.op else None,
                         dtypes=parse_choices(args.dtype, DTYPE_CHOICES, "--dtype"),
                         layouts=parse_choices(args.layout, LAYOUT_CHOICES, "--layout"), variants=args.variants)
    print(json.dumps(report) if args.json else format_traffic(report, markdown=args.markdown))
    return 0
