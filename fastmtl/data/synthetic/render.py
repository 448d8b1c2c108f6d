"""One sample: scene -> rays -> hits -> image, labels, depth and normals."""
from __future__ import annotations

import zlib
from typing import Tuple

import numpy as np

from .constants import DEFAULT_SIZE, DEPTH_RANGE
from .raycast import cast, ray_directions
from .scene import build_scene
from .shading import develop, shade


def render_sample(seed: int, split: str, index: int,
                  size: Tuple[int, int] = DEFAULT_SIZE) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index`` of ``split`` for dataset ``seed``.

    Returns ``(rgb, semseg, depth, normals)``: rgb ``(H, W, 3)`` uint8; semseg ``(H, W)``
    uint8 trainIds; depth ``(H, W)`` float32 z-depth in metres clamped to
    :data:`DEPTH_RANGE`, 0 on sky; normals ``(H, W, 3)`` float32 unit surface normals in
    camera coordinates (x right, y down, z forward: a surface facing the camera has
    z < 0), zero on sky. Depends only on the arguments.
    """
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_code(split), int(index)]))
    scene = build_scene(rng, width)
    d = ray_directions(scene, height, width)
    zbuf, pid, face = cast(scene, d)
    image, labels, world_normals = shade(scene, d, zbuf, pid, face)
    rgb = develop(scene, image, rng)
    depth = np.where(pid >= 0, np.clip(zbuf, *DEPTH_RANGE), 0).astype(np.float32)
    # world (x right, y up, z forward) -> camera (x right, y up, z forward) -> y down
    normals = world_normals @ scene.rot.astype(np.float32)
    normals[..., 1] *= -1
    return rgb, labels, depth, normals


def split_code(split: str) -> int:
    """A stable integer for a split name (part of every image's random seed)."""
    return zlib.crc32(split.encode("utf-8"))
