"""The comma-separated list flags of ``fastmtl gate`` and ``fastmtl traffic``."""
from __future__ import annotations

from typing import List, Sequence

from ..config import ConfigError

ARCH_CHOICES = ("80", "90", "100")  # compute capabilities: A100, H100/H200, B200
DTYPE_CHOICES = ("bf16", "fp32")
LAYOUT_CHOICES = ("nchw", "channels_last")


def parse_choices(text: str, valid: Sequence[str], flag: str) -> List[str]:
    """``"a,b"`` -> ``["a", "b"]``, each one of ``valid``; a ConfigError naming ``flag`` otherwise."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if not items or bad:
        raise ConfigError(f"{flag} {text!r}: expected a comma-separated list of {', '.join(valid)}")
    return items
