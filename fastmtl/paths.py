"""fastmtl's cache folder and what lives in it (the built-in synthetic set, compile-gate results).

The root is ``$FASTMTL_CACHE``, else ``$XDG_CACHE_HOME/fastmtl``, else ``~/.cache/fastmtl``.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root of fastmtl's cache (not created here)."""
    base = os.environ.get("FASTMTL_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "fastmtl" if xdg else Path.home() / ".cache" / "fastmtl"


def aot_cache_dir() -> Path:
    """Where the compile gate and the traffic model keep their compile results."""
    return cache_root() / "aot"
