"""The scene description: a list of primitives (:class:`Builder`) and a :class:`Scene`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from .constants import (ROAD, _BOX, _ELLIPSOID, _GROUND, _NPARAM, _PLANE, _SOLID)

class Builder:
    """Collects primitives (axis-aligned boxes and ellipsoids) with material and class.

    Primitive 0 is the ground plane ``y = 0``.
    """

    def __init__(self) -> None:
        self.rows: List[tuple] = []
        self._add(_PLANE, (0, 0, 0), (0, 0, 0), _GROUND, ROAD, (0, 0, 0), (), _SOLID)

    def _add(self, kind, lo, hi, mat, cls, color, param, shape) -> None:
        param = tuple(param) + (0.0,) * (_NPARAM - len(param))
        self.rows.append((kind, tuple(lo), tuple(hi), mat, cls, tuple(color), param, shape))

    def box(self, lo, hi, mat, cls, color, param=(), shape=_SOLID) -> None:
        """Axis-aligned box with corners ``lo`` < ``hi`` (x, y, z in metres)."""
        self._add(_BOX, lo, hi, mat, cls, color, param, shape)

    def ellipsoid(self, centre, radii, mat, cls, color) -> None:
        """Axis-aligned ellipsoid; stored through its bounding box."""
        lo = [c - r for c, r in zip(centre, radii)]
        hi = [c + r for c, r in zip(centre, radii)]
        self._add(_ELLIPSOID, lo, hi, mat, cls, color, (), _SOLID)

    def arrays(self) -> Dict[str, np.ndarray]:
        kind, lo, hi, mat, cls, color, param, shape = zip(*self.rows)
        return {
            "kind": np.array(kind, np.int8), "lo": np.array(lo, np.float32),
            "hi": np.array(hi, np.float32), "mat": np.array(mat, np.int16),
            "cls": np.array(cls, np.uint8), "color": np.array(color, np.float32),
            "param": np.array(param, np.float32), "shape": np.array(shape, np.int8),
        }


@dataclass
class Scene:
    """A random street: camera, primitives and the global parameters used in shading."""

    origin: Tuple[float, float, float]
    rot: np.ndarray  # (3, 3) camera-to-world rotation; camera axes x right, y up, z forward
    focal: float  # pixels
    prims: Dict[str, np.ndarray]
    road: Tuple[float, float]  # x extent of the carriageway
    lanes: Tuple[float, int, float]  # x of the first lane edge, number of lanes, lane width
    centre_line: int  # index of the lane boundary that separates the two directions
    crossings: List[Tuple[float, float]]  # z intervals of cross streets
    zebras: List[Tuple[float, float]]  # z intervals of zebra crossings
    marking: Tuple[float, ...]  # line width, dash length, dash period, dash phase
    road_color: Tuple[float, float, float]
    line_color: Tuple[float, float, float]
    centre_color: Tuple[float, float, float]
    terrain_color: Tuple[float, float, float]
    shadow_rows: List[Tuple[float, np.ndarray, np.ndarray, np.ndarray]]  # x, z0, z1, height
    footprints: np.ndarray  # (K, 4) x0, x1, z0, z1 of vehicles (contact shadows)
    sun: np.ndarray  # (3,) unit vector towards the sun
    sun_color: np.ndarray
    ambient: np.ndarray
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    clouds: Tuple[float, float, float]  # cover, sharpness, scale
    fog: float  # visibility distance (m) of exponential fog
    exposure: float
    noise_seed: int
    grain: float
    vignette: float
