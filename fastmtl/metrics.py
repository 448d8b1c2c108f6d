"""The run's streaming evaluation: every task's meter merged, and the score ``multitask`` (each task's
headline metric, signed so that higher is better, summed; for semseg + depth ``mIoU - SI-logRMSE``).
Each task's own metrics live with it in :mod:`fastmtl.tasks`."""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping

import torch

METRIC_STYLES = ("libmtl", "mtan")
MTAN_BATCH_SIZE = 2  # the evaluation batch size of the MTAN and Nash-MTL code


class BatchMeanMeter:
    """``--metric-style mtan``: each batch's metrics from a fresh ``make_meter()``, averaged over the
    batches unweighted (the MTAN / Nash-MTL code's ``avg_cost += cost / test_batch``), instead of
    one meter over every pixel of the split (``libmtl``). Same ``update``/``compute`` as the meter.
    """

    def __init__(self, make_meter: Callable[[], object]):
        self.make_meter = make_meter
        self.batches: List[Dict[str, float]] = []

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        meter = self.make_meter()
        meter.update(prediction, target)
        self.batches.append(meter.compute())

    def compute(self) -> Dict[str, float]:
        if not self.batches:
            return self.make_meter().compute()
        return {k: sum(b[k] for b in self.batches) / len(self.batches) for k in self.batches[0]}


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
