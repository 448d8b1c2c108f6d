"""fastmtl: multi-task dense prediction (semantic segmentation, monocular depth, surface normals).

Two words recur in the docstrings. **The report** is *Multi-task learning for semantics and
depth*, the study of the DeepLabV3+ model family that fastmtl reproduces (its models, its
ablation ladder, its hyper-parameter tables, its best recipe = fastmtl's defaults). **The
course template** ("the template") is the PyTorch starter code of the course the report was
written for, which the report extended; its grader's metrics (mIoU, SI-logRMSE) are fastmtl's
headline metrics. Both are described once in docs/models.md.

Public entry points:

* the ``fastmtl`` command (:mod:`fastmtl.cli`; ``python -m fastmtl``);
* :class:`fastmtl.config.Config` (one run's configuration) and :func:`fastmtl.train.train`;
* :func:`fastmtl.models.build_model` and the tasks (:func:`fastmtl.tasks.names`,
  :func:`fastmtl.tasks.get`);
* :mod:`fastmtl.nn` (fused drop-in modules, :func:`fastmtl.nn.fuse`, :func:`fastmtl.nn.compile`)
  and the Triton ops of :mod:`fastmtl.kernels`;
* :func:`fastmtl.data.open_dataset`; :func:`fastmtl.weighting.build`;
* :class:`fastmtl.losses.MultiTaskLoss`, :class:`fastmtl.metrics.TasksMeter`;
* from a checkpoint: :func:`fastmtl.restore.model_from_checkpoint`,
  :func:`fastmtl.evaluate.evaluate_checkpoint`, :func:`fastmtl.predict.predict`,
  :func:`fastmtl.export.export`.
"""
__version__ = "0.1.0"
