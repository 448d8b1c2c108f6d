"""TEST-ONLY: lets ``import timm`` work where torchvision's C extension cannot load.

CI installs a CPU torch and the registry's torchvision, whose C extension is built for another
torch build; ``import torchvision`` then fails with ``operator torchvision::nms does not exist``
(its fake-tensor registrations need the operator schemas). :func:`install` defines those schemas
(no kernels: detection ops stay unusable, and timm's encoders never call them) when the extension
cannot be loaded, and does nothing when it can. fastmtl itself never imports this: users need a
torchvision that matches their torch.
"""
from __future__ import annotations

import glob
import importlib.util
import os

import torch

# the operators torchvision's python side registers fake kernels for unconditionally (0.2x)
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = []  # keeps the torch.library.Library alive (its definitions go with it)


def _extension_loads(package_dir: str) -> bool:
    for path in glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd")):
        try:
            torch.ops.load_library(path)
            return True
        except (OSError, RuntimeError):
            return False
    return False


def install() -> None:
    """Define torchvision's operator schemas if torchvision is installed and its extension can't load."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or _LIBRARY or not spec.submodule_search_locations:
        return
    if _extension_loads(list(spec.submodule_search_locations)[0]):
        return
    library = torch.library.Library("torchvision", "DEF")
    for schema in SCHEMAS:
        library.define(schema)
    _LIBRARY.append(library)
