"""Data: the built-in synthetic street scenes and the dataset readers (the augmentations that
apply each task's rules to a sample are :mod:`fastmtl.transforms`).

* :func:`open_dataset`, :func:`dataset_info`, :func:`resolve_kind`, :data:`KINDS`: pick the
  reader of a folder (``--dataset``; :mod:`fastmtl.data.datasets`);
* readers: :class:`SegDepthFolder` (MiniScapes layout, synthetic; :mod:`fastmtl.data.folder`),
  NYUv2 ``.npy`` (:mod:`fastmtl.data.nyuv2`), Cityscapes official / MTAN ``.npy``
  (:mod:`fastmtl.data.cityscapes`);

* :func:`generate_dataset`, :func:`ensure_default_dataset`, :func:`default_data_root`,
  :func:`render_sample` (:mod:`fastmtl.data.synthetic`);
* :class:`DatasetInfo` (:mod:`fastmtl.data.info`), :func:`build_loader`; bad-sample handling
  :data:`ON_BAD_SAMPLE`, :class:`BadSampleError`, :class:`BadSampleWarning`,
  :func:`collate_skip_bad` (:mod:`fastmtl.data.bad_samples`);
* class names/colours (:mod:`fastmtl.data.classes`).
"""
from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize
from .bad_samples import ON_BAD_SAMPLE, BadSampleError, BadSampleWarning, collate_skip_bad, nonempty_batches
from .cityscapes import CATEGORY_NAMES, LABEL_ID_TO_TRAIN_ID, CityscapesOfficial
from .datasets import KINDS, dataset_info, open_dataset, resolve_kind
from .folder import SegDepthFolder, build_loader, decode_miniscapes_depth, seed_worker
from .info import DatasetInfo
from .npy import NpySplit
from .nyuv2 import NYUV2_CLASS_COLORS, NYUV2_CLASS_NAMES
from .synthetic import (
    DEPTH_RANGE,
    GENERATOR_VERSION,
    default_data_root,
    ensure_default_dataset,
    generate_dataset,
    render_sample,
)

__all__ = [
    "CLASS_COLORS", "CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "colorize",
    "KINDS", "open_dataset", "resolve_kind", "NpySplit", "CityscapesOfficial", "CATEGORY_NAMES",
    "LABEL_ID_TO_TRAIN_ID", "NYUV2_CLASS_NAMES", "NYUV2_CLASS_COLORS", "ON_BAD_SAMPLE", "BadSampleError", "BadSampleWarning", "DatasetInfo",
    "SegDepthFolder", "build_loader", "collate_skip_bad", "nonempty_batches", "dataset_info",
    "decode_miniscapes_depth", "seed_worker",
    "DEPTH_RANGE", "GENERATOR_VERSION", "default_data_root", "ensure_default_dataset",
    "generate_dataset", "render_sample",
]
