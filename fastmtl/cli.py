"""The ``fastmtl`` command: parses flags into a :class:`~fastmtl.config.Config` and calls one
function per subcommand. No logic of its own beyond argument handling and error reporting.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional

from .config import Config, ConfigError, format_dilation, parse_dilation, parse_size

_SUPPRESS = argparse.SUPPRESS


def _dilation(text: str):
    try:
        return parse_dilation(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size(text: str):
    try:
        return parse_size(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model knobs the report varies (defaults: the report's best recipe)."""
    d = Config()
    g = p.add_argument_group("model")
    g.add_argument("--model", default=_SUPPRESS, help=f"joint | branched | distill | distill_allconnect (default {d.model})")
    g.add_argument("--encoder", default=_SUPPRESS, help=f"resnet18 | resnet34 | resnet50 | resnet101 (default {d.encoder})")
    g.add_argument("--dilation", type=_dilation, default=_SUPPRESS, metavar="F,F,T",
                   help=f"replace stride with dilation in layer2,layer3,layer4 (default {format_dilation(d.dilation)})")
    g.add_argument("--aspp", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="ASPP head (default on)")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="decoder skip connections (default on)")
    g.add_argument("--se", action=argparse.BooleanOptionalAction, default=_SUPPRESS, help="squeeze-excitation in the encoder (default on)")
    g.add_argument("--attention-init", default=_SUPPRESS, help=f"zero | default: init of the distillation attention (default {d.attention_init})")
    g.add_argument("--pretrained", default=_SUPPRESS, metavar="PATH_OR_URL", help="torchvision-format ResNet state_dict for the encoder")
    g.add_argument("--aspp-dropout", type=float, default=_SUPPRESS, help="dropout after the ASPP projection (default 0)")


def config_from_args(args: argparse.Namespace) -> Config:
    """A validated Config from the flags that were given (the rest keep their defaults)."""
    fields = set(Config.__dataclass_fields__)
    return Config(**{k: v for k, v in vars(args).items() if k in fields}).validate()


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .models import build_model
    from .profile import format_profile, profile_model

    cfg = config_from_args(args)
    h, w = args.profile_size
    if h % cfg.output_stride or w % cfg.output_stride:
        raise ConfigError(f"--size {h}x{w}: height and width must be multiples of {cfg.output_stride} (the output stride)")
    model = build_model(cfg, {"semseg": args.num_classes, "depth": 1}, fused=args.fused)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    result = profile_model(model, (h, w), depth=args.depth, throughput=args.throughput,
                           device=resolve_device(args.device), batch_size=args.batch_size, amp_dtype=amp)
    result["model"] = cfg.model
    print(json.dumps(result) if args.json else format_profile(result))
    return 0


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; anything else is checked by torch."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return name


def build_parser(commands: Dict[str, Callable]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastmtl", description="Multi-task semantics + depth with fused Triton kernels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("profile", help="parameters, GMACs and throughput of a model")
    add_model_args(p)
    p.add_argument("--size", dest="profile_size", type=_size, default=(256, 256), metavar="HxW", help="input size (default 256x256)")
    p.add_argument("--num-classes", type=int, default=19, help="semantic classes (default 19)")
    p.add_argument("--depth", type=int, default=0, metavar="N", help="per-module breakdown N levels deep")
    p.add_argument("--throughput", action="store_true", help="also measure forward and train-step images/s")
    p.add_argument("--device", default="auto", help="device for --throughput (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=2, help="batch for --throughput (default 2)")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off", help="autocast for --throughput")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=False, help="fused Triton modules")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands["profile"])
    return parser


COMMANDS: Dict[str, Callable] = {"profile": cmd_profile}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"fastmtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastmtl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
