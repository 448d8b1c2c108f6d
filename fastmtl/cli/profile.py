"""``fastmtl profile``: parameters, GMACs and (``--throughput``) images/s of a model."""
from __future__ import annotations

import argparse
import json

from ..config import ConfigError
from ..runtime import resolve_device
from .flags import add_model_args, config_from_args, count_type, size_type

HELP = 'parameters, GMACs and throughput of a model'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--size", dest="profile_size", type=size_type, default=(256, 256), metavar="HxW", help="input size (default 256x256)")
    p.add_argument("--num-classes", type=count_type(1), default=19, help="semantic classes (default 19)")
    p.add_argument("--depth", type=count_type(0), default=0, metavar="N", help="per-module breakdown N levels deep")
    p.add_argument("--throughput", action="store_true", help="also measure forward and train-step images/s")
    p.add_argument("--device", default="auto", help="device for --throughput (default: cuda if available)")
    p.add_argument("--batch-size", type=count_type(1), default=2, help="batch for --throughput (default 2)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off", help="autocast for --throughput")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=False, help="fused Triton modules")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..perf.profile import format_profile, profile_model

    cfg = config_from_args(args)
    h, w = args.profile_size
    if h % cfg.output_stride or w % cfg.output_stride:
        raise ConfigError(f"--size {h}x{w}: height and width must be multiples of {cfg.output_stride} (the output stride)")
    result = profile_model(cfg, (h, w), depth=args.depth, throughput=args.throughput,
                           device=str(resolve_device(args.device)), batch_size=args.batch_size,
                           num_classes=args.num_classes)
    result["model"] = cfg.model
    print(json.dumps(result) if args.json else format_profile(result))
    return 0
