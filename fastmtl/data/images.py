"""Decoding PNG/JPG sample files completely, or a :class:`BadSampleError` naming the file.

``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left False (truncated PNG/JPG files are errors;
a PNG must also end with its IEND chunk). Accepted conversions (not errors): rgb in mode
``L``, ``LA``, ``1``, ``P``, ``PA``, ``RGBA``/``RGBX`` (alpha dropped, not composited),
``CMYK`` or ``YCbCr`` is converted to RGB; labels may be ``L``, ``P`` (the palette index is
the label) or 16-bit ``I;16`` (values must still be class ids or the ignore value).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
from PIL import Image, ImageFile

from .bad_samples import BadSampleError

_RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "1", "P", "PA", "CMYK", "YCbCr")
_LABEL_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its CRC

_warned_truncated_flag = False


def decode_image(path: Path, sub: str, index: Optional[int], to_array: Callable[[Image.Image], np.ndarray],
                 formats: Tuple[str, ...] = ("PNG",)):
    """Open ``path``, fully decode it (truncation is an error) and convert it with
    ``to_array`` while it is open. ``sub`` names the file's role in messages (``rgb``,
    ``semseg``...); ``formats`` are the PIL formats accepted. Anything unreadable ->
    :class:`BadSampleError`."""
    global _warned_truncated_flag
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated_flag:
        _warned_truncated_flag = True
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set True by other code: truncated "
                      "JPG files can no longer be detected (fastmtl leaves it False)", RuntimeWarning,
                      stacklevel=3)
    try:
        f = open(path, "rb")
    except OSError as err:
        reason = "file not found" if isinstance(err, FileNotFoundError) else f"cannot read: {err}"
        raise BadSampleError(f"{sub}: {reason}", path, index) from None
    with f:
        try:
            img = Image.open(f, formats=formats)
        except Image.UnidentifiedImageError:
            raise BadSampleError(f"{sub}: not a {' or '.join(formats)} image (unrecognised file "
                                 f"contents)", path, index) from None
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
            raise BadSampleError(f"{sub}: corrupt or truncated image (cannot open it: "
                                 f"{type(err).__name__}: {err})", path, index) from None
        with img:
            try:
                img.load()
            except MemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - OSError "truncated", SyntaxError, zlib...
                raise BadSampleError(f"{sub}: corrupt or truncated {img.format} "
                                     f"({type(err).__name__}: {err})", path, index) from None
            if img.format == "PNG":
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 4096))
                if _PNG_END not in f.read():
                    raise BadSampleError(f"{sub}: truncated PNG (no IEND chunk at the end of "
                                         f"the file)", path, index)
            return to_array(img)


def read_rgb(path: Path, index: Optional[int], sub: str = "rgb",
             formats: Tuple[str, ...] = ("JPEG", "PNG")) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` uint8 of a JPG/PNG (other 8-bit modes converted, see the module)."""
    def to_array(img):
        if img.mode not in _RGB_MODES:
            raise BadSampleError(f"{sub}: unsupported image mode {img.mode} (expected 8-bit RGB, "
                                 f"RGBA, CMYK, grey or palette)", path, index)
        if img.mode in ("P", "PA"):  # via RGBA: PIL warns on P -> RGB with transparency
            img = img.convert("RGBA")
        return np.array(img.convert("RGB"))
    return decode_image(path, sub, index, to_array, formats)


def read_labels(path: Path, index: Optional[int], num_classes: int, ignore: int,
                sub: str = "semseg") -> np.ndarray:
    """Class ids ``(H, W)`` int64 of a single-channel PNG; each must be in ``0..num_classes-1``
    or be ``ignore``."""
    def to_array(img):
        if img.mode not in _LABEL_MODES:
            raise BadSampleError(f"{sub}: expected a single-channel PNG of class ids (mode "
                                 f"{', '.join(_LABEL_MODES)}), got {img.mode}", path, index)
        return np.array(img)
    labels = decode_image(path, sub, index, to_array)
    bad = labels >= num_classes
    if labels.dtype.kind == "i":
        bad |= labels < 0
    bad &= labels != ignore
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")
        raise BadSampleError(f"{sub}: {int(bad.sum())} pixel(s) with labels out of range "
                             f"({shown}); expected 0..{num_classes - 1} or {ignore} (ignore)",
                             path, index)
    return labels.astype(np.int64)
