"""``fastmtl train``: a run from flags (over ``--config``), or ``--resume`` of a run directory."""
from __future__ import annotations

import argparse
import json

from ..config import ConfigError
from .flags import add_model_args, add_train_args, config_from_args, given_config_fields

HELP = "train a model (default: the report's best recipe on the built-in dataset)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_train_args(p)


def run(args: argparse.Namespace) -> int:
    from ..train import train

    if args.resume:
        for flag, value in (("--config", args.config), ("--overwrite", args.overwrite)):
            if value:
                raise ConfigError(f"{flag} cannot be used with --resume (a resumed run keeps its own config and files)")
        summary = train(None, resume=args.resume, resume_overrides=given_config_fields(args))
    else:
        summary = train(config_from_args(args), overwrite=args.overwrite)
    if summary is not None and args.json:
        print(json.dumps(summary))
    return 0
