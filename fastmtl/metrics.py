"""The run's streaming evaluation: every task's meter merged, and the score ``multitask`` (each task's
headline metric, signed so that higher is better, summed; for semseg + depth ``mIoU - SI-logRMSE``).
Each task's own metrics live with it in :mod:`fastmtl.tasks`."""
from __future__ import annotations

from typing import Dict, Mapping

import torch


class TasksMeter:
    """One meter per task, merged.

    Args:
        meters: ``{task: meter}``, each with ``update(prediction, target)`` and ``compute()``.
        score: ``{metric: +1 or -1}``; ``compute()`` adds ``multitask = sum(sign * metric)`` (the
            trainer passes each task's headline metric with its direction).
    """

    def __init__(self, meters: Mapping[str, object], score: Mapping[str, int]):
        self.meters, self.score = dict(meters), dict(score)

    def update(self, predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        """``{task: prediction}`` (in the task's units) and ``{task: target}`` of one batch."""
        for name, meter in self.meters.items():
            meter.update(predictions[name], targets[name])

    def compute(self) -> Dict[str, float]:
        out: Dict = {}
        for meter in self.meters.values():
            out.update(meter.compute())
        out["multitask"] = sum(sign * out[k] for k, sign in self.score.items())
        return out
