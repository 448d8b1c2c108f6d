"""fastmtl: multi-task dense prediction (semantic segmentation + monocular depth).

Public entry points: :func:`fastmtl.models.build_model`, :mod:`fastmtl.nn` (fused drop-in
modules), :mod:`fastmtl.metrics`, :mod:`fastmtl.losses` and the ``fastmtl`` command.
"""
__version__ = "0.1.0"
