"""``fastmtl data synthetic``: render the built-in procedural street-scene dataset."""
from __future__ import annotations

import argparse

from ..config import ConfigError
from .flags import count_type, size_type

HELP = 'datasets'


def add_arguments(p: argparse.ArgumentParser) -> None:
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True
    q = data_sub.add_parser("synthetic", help="render the procedural street-scene dataset")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--train", type=count_type(1), default=2000, help="train images (default 2000)")
    q.add_argument("--val", type=count_type(1), default=250, help="val images (default 250)")
    q.add_argument("--size", type=size_type, default=(128, 256), metavar="HxW", help="image size (default 128x256)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=count_type(1), default=None, help="processes (default: all cores)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    from ..data.synthetic import generate_dataset

    if args.train < 1 or args.val < 1:
        raise ConfigError("--train and --val must be >= 1")
    h, w = args.size
    if h < 16 or w < 16:
        raise ConfigError(f"--size {h}x{w}: at least 16x16")
    path = generate_dataset(args.out, train=args.train, val=args.val, size=args.size, seed=args.seed,
                            workers=args.workers, progress=not args.quiet)
    print(f"wrote the synthetic dataset to {path}")
    return 0
