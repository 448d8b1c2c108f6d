"""Data: the built-in synthetic street scenes, MiniScapes-layout readers, transforms.

* :func:`generate_dataset`, :func:`ensure_default_dataset`, :func:`default_data_root`,
  :func:`render_sample` (:mod:`fastmtl.data.synthetic`);
* :class:`SegDepthFolder`, :func:`dataset_info`, :class:`DatasetInfo`, :func:`build_loader`,
  bad-sample handling :data:`ON_BAD_SAMPLE`, :class:`BadSampleError`,
  :class:`BadSampleWarning`, :func:`collate_skip_bad` (:mod:`fastmtl.data.folder`);
* :func:`train_transform`, :func:`eval_transform`, :class:`DepthNormalizer`
  (:mod:`fastmtl.data.transforms`);
* class names/colours (:mod:`fastmtl.data.classes`).
"""
from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize
from .folder import (
    KINDS,
    ON_BAD_SAMPLE,
    BadSampleError,
    BadSampleWarning,
    DatasetInfo,
    SegDepthFolder,
    build_loader,
    collate_skip_bad,
    nonempty_batches,
    dataset_info,
    decode_miniscapes_depth,
    seed_worker,
)
from .synthetic import (
    DEPTH_RANGE,
    GENERATOR_VERSION,
    default_data_root,
    ensure_default_dataset,
    generate_dataset,
    render_sample,
)
from .transforms import (
    DEPTH_MODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthNormalizer,
    EvalTransform,
    TrainTransform,
    eval_transform,
    train_transform,
)

__all__ = [
    "CLASS_COLORS", "CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "colorize",
    "KINDS", "ON_BAD_SAMPLE", "BadSampleError", "BadSampleWarning", "DatasetInfo",
    "SegDepthFolder", "build_loader", "collate_skip_bad", "nonempty_batches", "dataset_info",
    "decode_miniscapes_depth", "seed_worker",
    "DEPTH_RANGE", "GENERATOR_VERSION", "default_data_root", "ensure_default_dataset",
    "generate_dataset", "render_sample",
    "DEPTH_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "DepthNormalizer", "EvalTransform",
    "TrainTransform", "eval_transform", "train_transform",
]
