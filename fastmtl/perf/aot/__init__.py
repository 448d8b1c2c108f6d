"""Ahead-of-time views of fastmtl's Triton kernels, without a GPU.

* :mod:`.harness`: runs the real launchers on meta tensors that claim to be CUDA and records
  every Triton launch (the exact specialisation Triton computes) and every torch op between them.
* :mod:`.cases`: the table of (op, pass, variant, dtype, layout) cases, from ``fastmtl.perf.cases``.
* :mod:`.archs`: the GPU targets (sm_80, sm_90, sm_100) and their per-SM limits.
* :mod:`.compile`: compiles one captured launch for one target; registers, spills, SASS loads.
* :mod:`.gate`: ``fastmtl gate``, every captured specialisation compiled for every target.
* :mod:`.traffic`: ``fastmtl traffic``, a memory-traffic MODEL per op and pass.
"""
