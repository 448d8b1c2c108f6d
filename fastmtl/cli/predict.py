"""``fastmtl predict``: each task's raw result and picture per image, and a panel."""
from __future__ import annotations

import argparse

from ..runtime import resolve_device

HELP = "per image: each task's raw result and picture, and a panel PNG"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    from ..predict import predict

    written = predict(args.checkpoint, args.inputs, args.out, str(resolve_device(args.device)))
    print(f"wrote {len(written)} files to {args.out}")
    return 0
