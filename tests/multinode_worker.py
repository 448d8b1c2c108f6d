"""A torchrun worker for tests/test_multinode.py: ``fastmtl train`` (the CLI's own ``main``) that also
tells the test which torchrun it runs under and saves this rank's final weights, so that the test can
compare the ranks (only rank 0 writes the run directory).

``multinode_worker.py WEIGHTS_DIR STALL_AT TRAIN_ARGS...`` runs ``fastmtl train TRAIN_ARGS``:

- at the start, ``WEIGHTS_DIR/rank{RANK}.pid`` holds ``PID PARENT_PID`` (the parent: its torchrun);
- after the run, ``WEIGHTS_DIR/rank{RANK}.pt`` holds the model's state dict;
- ``STALL_AT`` > 0: rank 1 stops (sleeps) right after its ``last.pt`` save of that step, as a hung
  node would, so the checkpoint exists and the run cannot finish before the test kills the node;
  ``0``: no stall.
"""
import os
import sys
import time
from pathlib import Path

import torch

from fastmtl import train as trainer
from fastmtl.cli import main

RANK = int(os.environ["RANK"])
STALL_SECONDS = 600  # far longer than the test waits: only a kill ends it


def main_with_weights(weights_dir: Path, stall_at: int, argv) -> int:
    (weights_dir / f"rank{RANK}.pid").write_text(f"{os.getpid()} {os.getppid()}\n")
    run_to_end, save_last = trainer.Run.run, trainer.Run._save_last

    def run_and_save_weights(self, *args, **kwargs):
        summary = run_to_end(self, *args, **kwargs)
        torch.save(self.model.state_dict(), weights_dir / f"rank{RANK}.pt")
        return summary

    def save_then_stall(self, *args, **kwargs):
        save_last(self, *args, **kwargs)
        if RANK == 1 and self.step == stall_at:
            time.sleep(STALL_SECONDS)

    trainer.Run.run, trainer.Run._save_last = run_and_save_weights, save_then_stall
    return main(["train", *argv])


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main_with_weights(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
