"""``fastmtl export``: a checkpoint as an ONNX or TorchScript file."""
from __future__ import annotations

import argparse

HELP = 'a checkpoint as an ONNX or TorchScript file (one output per task: semseg logits, depth in m, unit normals)'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a .pt file or a run directory (best.pt)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", default=None, metavar="FILE", help="default: model.onnx or model.pt")


def run(args: argparse.Namespace) -> int:
    from ..export import export

    path = export(args.checkpoint, args.out or f"model.{'onnx' if args.format == 'onnx' else 'pt'}", args.format)
    print(f"wrote {path}")
    return 0
