"""The built-in sweeps of ``fastmtl sweep``: the report's ablation ladder and its hyper-parameter tables.

The template base is the course template's network and training (docs/models.md):
joint, F,F,F, no ASPP, no skip, no SE, linear depth, L2, attention init zero,
Adam 1e-4, batch 4.

``report-ladder`` (cumulative; the report's ladder): template base -> + ImageNet init (only
with ``pretrained``) -> + dilation F,F,T -> + ASPP -> + skip -> branched -> distill -> + SE -> +
all-scale skip (distill_allconnect) -> + log depth, L1, attention init default -> + dilation
F,T,T (= the default recipe).

``report-hparams`` (Tables 1-4, each a change of the template base): SGD lr 0.01 vs Adam 1e-4;
Adam lr 1e-3 / 1e-5; batch 8 / 12; task weights (0.67, 0.33) / (0.33, 0.67).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

TEMPLATE_BASE: Dict[str, Any] = {
    "model": "joint", "dilation": "F,F,F", "aspp": False, "skip": False, "se": False,
    "depth_norm": "linear", "depth_loss": "l2", "attention_init": "zero",
    "optimizer": "adam", "lr": 1e-4, "batch_size": 4, "weight_semseg": 0.5, "weight_depth": 0.5,
}

NAMES = ("report-ladder", "report-hparams")


def report_ladder(pretrained: Optional[str] = None) -> Dict[str, Any]:
    steps: List[Dict[str, Any]] = [{"name": "template base", "set": {}}]
    if pretrained:
        steps.append({"name": "+ ImageNet init", "set": {"pretrained": pretrained}})
    steps += [
        {"name": "+ dilation F,F,T", "set": {"dilation": "F,F,T"}},
        {"name": "+ ASPP", "set": {"aspp": True}},
        {"name": "+ skip", "set": {"skip": True}},
        {"name": "branched", "set": {"model": "branched"}},
        {"name": "distill", "set": {"model": "distill"}},
        {"name": "+ SE", "set": {"se": True}},
        {"name": "+ all-scale skip", "set": {"model": "distill_allconnect"}},
        {"name": "+ log depth, L1, attention init", "set": {"depth_norm": "log", "depth_loss": "l1",
                                                            "attention_init": "default"}},
        {"name": "+ dilation F,T,T", "set": {"dilation": "F,T,T"}},
    ]
    return {"name": "report-ladder", "base": dict(TEMPLATE_BASE), "variants": steps, "cumulative": True,
            "seeds": [0, 1, 2]}


def report_hparams(pretrained: Optional[str] = None) -> Dict[str, Any]:
    base = dict(TEMPLATE_BASE, **({"pretrained": pretrained} if pretrained else {}))
    variants = [
        {"name": "Adam lr 1e-4, batch 4, weights 0.5/0.5", "set": {}},
        {"name": "SGD lr 0.01", "set": {"optimizer": "sgd", "lr": 0.01}},  # Table 1
        {"name": "Adam lr 1e-3", "set": {"lr": 1e-3}},  # Table 2
        {"name": "Adam lr 1e-5", "set": {"lr": 1e-5}},
        {"name": "batch 8", "set": {"batch_size": 8}},  # Table 3
        {"name": "batch 12", "set": {"batch_size": 12}},
        {"name": "weights 0.67/0.33", "set": {"weight_semseg": 0.67, "weight_depth": 0.33}},  # Table 4
        {"name": "weights 0.33/0.67", "set": {"weight_semseg": 0.33, "weight_depth": 0.67}},
    ]
    return {"name": "report-hparams", "base": base, "variants": variants, "seeds": [0, 1, 2]}


def builtin_sweep(name: str, pretrained: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The built-in sweep ``name`` as a sweep-file dict, or None when there is none of that name."""
    return {"report-ladder": report_ladder, "report-hparams": report_hparams}.get(name, lambda p: None)(pretrained)
