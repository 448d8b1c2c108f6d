"""Procedural street scenes: a built-in, offline stand-in for MiniScapes.

Every image is rendered by casting one ray per pixel (vectorised numpy) into a small random
3D street: a straight road with lanes, markings, crossings and zebra crossings, raised
sidewalks, building rows with windows and shop fronts, lamp posts and sign poles at many
distances, traffic signs and lights, trees and hedges, fences, parked and driving cars,
buses/trucks, pedestrians and a sky with clouds. The camera sits on a car with random
lateral position, height, pitch, yaw, roll and field of view. Shading uses a sun with
analytic building shadows, ambient light, specular paint and glass, procedural texture
noise, distance fog, exposure, vignetting and sensor noise, so that colour alone gives
neither the class nor the depth.

Labels are Cityscapes trainIds (:mod:`fastmtl.data.classes`); the classes that occur are
road, sidewalk, building, wall, fence, pole, traffic light, traffic sign, vegetation,
terrain, sky, person, car, truck and bus. Depth is the z-depth (distance along the optical
axis) of the first hit in metres, clamped to :data:`DEPTH_RANGE`; sky has no depth.

On disk (the MiniScapes layout), per split and index ``i``:

* ``{split}/rgb/{i}.png``: 8-bit RGB PNG;
* ``{split}/semseg/{i}.png``: 8-bit PNG (mode ``L``) of trainIds, 255 = ignore (unused here);
* ``{split}/depth/{i}.png``: 16-bit PNG (mode ``I;16``), value = ``round(depth_m * 256)``,
  0 = invalid (sky);
* ``meta.json``: format, classes, colours, depth encoding, depth range and statistics.

Images depend only on ``(seed, split, index, size)``: the same arguments give byte-identical
files for any number of workers.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .classes import CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX

GENERATOR_VERSION = 1
FORMAT_NAME = "fastmtl-synthetic"
DEPTH_RANGE = (1.0, 250.0)
DEPTH_SCALE = 256.0
DEFAULT_SIZE = (128, 256)
DEFAULT_TRAIN = 2000
DEFAULT_VAL = 250
DEFAULT_SEED = 0
SPLITS = ("train", "val")

# Cityscapes trainIds used by the renderer.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON = range(12)
CAR, TRUCK, BUS = 13, 14, 15

# Primitive kinds.
_PLANE, _BOX, _ELLIPSOID = 0, 1, 2
# Materials.
(_GROUND, _SIDEWALK, _FACADE, _METAL, _SIGNFACE, _TLIGHT, _FOLIAGE, _BARK, _PAINT, _CABIN,
 _TIRE, _CLOTH, _SKIN, _CONCRETE) = range(14)
# Alpha shapes (cut-outs evaluated on the hit point).
_SOLID, _CIRCLE, _TRIANGLE, _YIELD, _DIAMOND, _OCTAGON, _SLATS = range(7)
# Face codes: outward normal of the face that was hit; _CURVED = ellipsoid.
_FACE_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32)
_CURVED = 6
_NPARAM = 6


def _lin(r: float, g: float, b: float) -> Tuple[float, float, float]:
    """sRGB 0..255 -> linear RGB 0..1."""
    return tuple((c / 255.0) ** 2.2 for c in (r, g, b))


_FACADE_COLORS = [_lin(*c) for c in (
    (200, 185, 160), (150, 150, 148), (222, 216, 204), (150, 82, 62), (208, 178, 112),
    (92, 92, 98), (120, 130, 142), (200, 152, 140), (172, 166, 156), (180, 120, 90),
    (110, 100, 90), (235, 230, 220))]
_PAINT_COLORS = [_lin(*c) for c in (
    (235, 235, 235), (170, 172, 176), (25, 25, 28), (90, 92, 96), (160, 20, 20),
    (30, 60, 150), (20, 30, 70), (30, 90, 50), (220, 180, 30), (190, 170, 130),
    (120, 20, 30), (60, 120, 170))]
_FOLIAGE_COLORS = [_lin(*c) for c in (
    (70, 110, 40), (50, 90, 35), (95, 120, 50), (60, 80, 40), (110, 130, 60), (40, 70, 45))]
# Traffic signs: shape, border colour, inner colour, symbol (0 none, 1 black, 2 white).
_SIGN_TYPES = [
    (_CIRCLE, _lin(200, 20, 25), _lin(240, 240, 240), 1),
    (_CIRCLE, _lin(235, 235, 235), _lin(20, 70, 170), 2),
    (_TRIANGLE, _lin(200, 20, 25), _lin(240, 240, 235), 1),
    (_YIELD, _lin(200, 20, 25), _lin(245, 245, 245), 0),
    (_DIAMOND, _lin(240, 240, 240), _lin(240, 190, 20), 0),
    (_OCTAGON, _lin(240, 240, 240), _lin(190, 15, 20), 2),
    (_SOLID, _lin(235, 235, 235), _lin(20, 70, 160), 2),
    (_SOLID, _lin(235, 235, 235), _lin(20, 110, 60), 2),
]


# --------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------
class _Builder:
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
class _Scene:
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


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation (radians): yaw right-positive, pitch up-positive."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def _in_any(z: float, intervals, margin: float = 0.0) -> bool:
    return any(a - margin <= z <= b + margin for a, b in intervals)


def _jitter(rng, color, amount=0.12):
    return tuple(float(c * rng.uniform(1 - amount, 1 + amount)) for c in color)


def _build_scene(rng: np.random.Generator, width: int) -> _Scene:
    """Draw a random street scene (all randomness of an image comes from ``rng``)."""
    b = _Builder()
    u = rng.uniform

    # --- road, lanes, sidewalks, crossings
    n_lanes = int(rng.choice([2, 2, 3, 4, 4]))
    lane_w = u(2.9, 3.7)
    park_l = 2.3 if u() < 0.6 else 0.0
    park_r = 2.3 if u() < 0.6 else 0.0
    lane_x0 = -n_lanes * lane_w / 2
    road = (lane_x0 - park_l, -lane_x0 + park_r)
    centre_line = n_lanes // 2 if u() < 0.8 else 0  # 0: one-way street
    z_end = u(200, 330)
    crossings: List[Tuple[float, float]] = []
    n_cross = int(rng.choice([0, 1, 1, 2]))
    zc = u(14, 70)
    for _ in range(n_cross):
        w = u(8, 16)
        crossings.append((zc, zc + w))
        zc += w + u(40, 120)
    zebras = [(c0 - u(4.0, 5.5), c0 - 1.0) for c0, _ in crossings if u() < 0.7]
    if not crossings and u() < 0.25:
        z = u(10, 60)
        zebras.append((z, z + u(3, 4.5)))

    sw_h = u(0.1, 0.18)
    sw_w = (u(1.8, 5.0), u(1.8, 5.0))
    sw_color = _jitter(rng, _lin(*[(170, 168, 165), (185, 160, 150), (150, 150, 155),
                                   (200, 195, 185)][int(rng.integers(4))]), 0.1)
    tile = u(0.3, 1.0)
    outer = (road[0] - sw_w[0], road[1] + sw_w[1])  # outer sidewalk edges
    edges = [-60.0] + [v for c in crossings for v in c] + [1000.0]
    for side in (0, 1):
        x0, x1 = (outer[0], road[0]) if side == 0 else (road[1], outer[1])
        for za, zb in zip(edges[0::2], edges[1::2]):
            b.box((x0, 0, za), (x1, sw_h, zb), _SIDEWALK, SIDEWALK, sw_color, (tile,))

    # --- buildings
    style = u()  # 0 suburban .. 1 downtown
    h_lo, h_hi = 5 + 10 * style, 12 + 35 * style
    shadow_rows = []
    for side in (0, 1):
        sgn = -1 if side == 0 else 1
        x_sw = outer[side]
        z = u(-50, -35)
        z0s, z1s, hs, xs = [], [], [], []
        while z < z_end:
            z0, z1 = z, z + u(8, 32)
            z = z1
            for c0, c1 in crossings:  # no building on a cross street
                if c0 <= z0 < c1 or z0 < c0 < z1:
                    z1, z = min(z1, c0), c1
                    break
            if z1 - z0 < 2:
                continue
            if u() < 0.13:  # gap: open lot with trees, fence or wall
                _lot(b, rng, sgn, x_sw, z0, z1)
                continue
            setback = 0.0 if u() < 0.7 else u(1.0, 6.0)
            xf = x_sw + sgn * setback
            h = u(h_lo, h_hi)
            depth = u(10, 25)
            lo, hi = sorted((xf, xf + sgn * depth))
            color = _jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
            param = (u(2.9, 3.6), u(2.0, 4.2), u(0.35, 0.7), u(0.4, 0.6),
                     float(u() < 0.5 * style + 0.15), u(0.0, 1.0))
            b.box((lo, 0, z0), (hi, h, z1), _FACADE, BUILDING, color, param)
            if setback > 1.5 and u() < 0.5:
                hx0, hx1 = sorted((xf - sgn * u(0.6, 1.2), xf - sgn * 0.05))
                b.box((hx0, 0, z0 + 0.5), (hx1, u(0.7, 1.6), z1 - 0.5), _FOLIAGE, VEGETATION,
                      _jitter(rng, _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]))
            z0s.append(z0), z1s.append(z1), hs.append(h), xs.append(xf)
        if hs:
            shadow_rows.append((float(np.mean(xs)), np.array(z0s), np.array(z1s), np.array(hs)))
        # a second, taller row further back
        z = u(-30, 0)
        while z < z_end and u() < 0.9:
            length = u(20, 70)
            if u() < 0.6:
                xf = x_sw + sgn * u(30, 70)
                lo, hi = sorted((xf, xf + sgn * 25))
                color = _jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
                param = (u(2.9, 3.6), u(2.0, 4.2), u(0.35, 0.7), u(0.4, 0.6), 0.0, u())
                b.box((lo, 0, z), (hi, u(h_lo, h_hi * 1.5), z + length), _FACADE, BUILDING,
                      color, param)
            z += length + u(0, 30)

    # --- the end of the street: a row of buildings across it, a tree line, or open land
    end = u()
    if end < 0.45:
        x = -200.0
        ze = z_end + u(0, 60)
        while x < 200:
            w = u(15, 40)
            color = _jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
            param = (u(2.9, 3.6), u(2.0, 4.2), u(0.35, 0.7), u(0.4, 0.6), 0.0, u())
            b.box((x, 0, ze), (x + w, u(h_lo, h_hi * 1.3), ze + 20), _FACADE, BUILDING, color,
                  param)
            x += w
    elif end < 0.75:
        for _ in range(int(rng.integers(8, 16))):
            r = u(6, 15)
            b.ellipsoid((u(-150, 150), r * u(0.5, 0.9), z_end + u(20, 120)), (r, r * u(0.7, 1.1), r),
                        _FOLIAGE, VEGETATION,
                        _jitter(rng, _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]))

    # --- poles, lamps, signs and traffic lights along the kerbs
    pole_color = _jitter(rng, _lin(*[(120, 122, 125), (60, 70, 60), (150, 150, 150),
                                     (45, 48, 52)][int(rng.integers(4))]), 0.1)
    for side in (0, 1):
        sgn = -1 if side == 0 else 1
        x_kerb = road[side] + sgn * u(0.35, 0.7)
        spacing = u(12, 32)
        z = u(-10, -10 + spacing)
        while z < z_end - 10:
            if not _in_any(z, crossings, 1.0):
                kind = u()
                if kind < 0.5:
                    _lamp_post(b, rng, sgn, x_kerb, z, pole_color)
                elif kind < 0.85:
                    _sign_pole(b, rng, x_kerb, z, pole_color)
                else:
                    pw = u(0.18, 0.35)
                    b.box((x_kerb - pw / 2, 0, z - pw / 2), (x_kerb + pw / 2, u(6, 10), z + pw / 2),
                          _METAL, POLE, _jitter(rng, _lin(110, 95, 80)))
            z += spacing * u(0.7, 1.3)
        for c0, c1 in crossings:  # traffic lights at the near corner of each crossing
            _traffic_light(b, rng, sgn, x_kerb, c0 - u(0.5, 2.0), pole_color)
            if u() < 0.5:
                _traffic_light(b, rng, sgn, x_kerb, c1 + u(0.5, 2.0), pole_color)
        for _ in range(int(rng.integers(0, 4))):  # loose signs on the sidewalk, any distance
            zs = u(3, z_end - 20)
            if not _in_any(zs, crossings, 1.0):
                _sign_pole(b, rng, x_kerb + sgn * u(0, 1.0), zs, pole_color)

    # --- street trees
    for side in (0, 1):
        if u() < 0.55:
            sgn = -1 if side == 0 else 1
            x_t = road[side] + sgn * min(sw_w[side] * u(0.4, 0.7), 2.5)
            spacing = u(7, 20)
            z = u(-10, spacing)
            leaf = _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]
            while z < z_end * u(0.4, 1.0):
                if not _in_any(z, crossings, 2.0):
                    _tree(b, rng, x_t, z, u(2.2, 4.0), u(1.4, 3.2), _jitter(rng, leaf, 0.1), sw_h)
                z += spacing * u(0.8, 1.2)

    # --- vehicles
    footprints = []
    def paint():
        return _jitter(rng, _PAINT_COLORS[int(rng.integers(len(_PAINT_COLORS)))], 0.08)

    cam_lane = int(rng.integers(n_lanes))
    cam_x = lane_x0 + (cam_lane + 0.5) * lane_w + u(-0.4, 0.4)
    for side, width_p in ((0, park_l), (1, park_r)):
        if width_p <= 0:
            continue
        x_c = road[side] + (1.15 if side == 0 else -1.15)
        z = u(-12, 0)
        while z < 160:
            length = u(3.8, 5.0)
            if u() > 0.3 and not _in_any(z, crossings, 3.0) and not _in_any(z + length, crossings, 3.0):
                footprints.append(_vehicle(b, rng, x_c, z, length, side == 1, paint(), u() < 0.05))
            z += length + u(0.6, 8.0)
    for lane in range(n_lanes):
        x_c = lane_x0 + (lane + 0.5) * lane_w + u(-0.3, 0.3)
        same_way = lane >= centre_line
        z = u(5, 40) if lane != cam_lane else u(9, 40)
        while z < 170:
            length = u(3.8, 5.0)
            big = u() < 0.08
            if big:
                length = u(8, 12)
            if u() < 0.55:
                footprints.append(_vehicle(b, rng, x_c, z, length, same_way, paint(), big))
            z += length + u(6, 45)

    # --- pedestrians on sidewalks and zebra crossings
    for _ in range(int(rng.poisson(5))):
        side = int(rng.integers(2))
        x = road[side] + (1 if side else -1) * u(0.5, sw_w[side] - 0.3)
        z = u(1.5, 90)
        _person(b, rng, x, z, sw_h, along_z=True)
    for z0, z1 in zebras:
        for _ in range(int(rng.integers(0, 4))):
            _person(b, rng, u(road[0] + 0.5, road[1] - 0.5), u(z0 + 0.3, z1 - 0.3), 0.0, along_z=False)

    # --- camera, light, atmosphere
    hfov = math.radians(u(66, 84))
    focal = width / 2 / math.tan(hfov / 2)
    yaw = u(-18, 18) if u() < 0.85 else u(-40, 40)
    rot = _rotation(math.radians(yaw), math.radians(u(-6, 2.5)), math.radians(u(-2, 2)))
    origin = (cam_x, u(1.25, 2.2), 0.0)

    overcast = u() ** 1.5
    elev, azim = math.radians(u(10, 65)), u(0, 2 * math.pi)
    sun = np.array([math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)],
                   np.float32)
    warm = max(0.0, 1 - elev / math.radians(35))
    sun_color = np.array([1.0, 0.93 - 0.15 * warm, 0.85 - 0.35 * warm], np.float32)
    sun_color *= (1 - 0.88 * overcast) * 3.2
    zenith = np.array([0.10, 0.22, 0.60], np.float32) * (1 - overcast) + 0.45 * overcast
    horizon = np.array([0.55, 0.65, 0.80], np.float32) * (1 - overcast) + 0.62 * overcast
    if u() < 0.12:  # dusk tint
        horizon = horizon * np.array([1.3, 0.85, 0.6], np.float32)
    sky_level = u(0.8, 1.2)
    zenith, horizon = zenith * sky_level, horizon * sky_level
    ambient = (0.35 * horizon + 0.25 * zenith) * (1.0 + 0.8 * overcast)
    brightness = float(sun_color.mean() * 0.45 + ambient.mean())

    road_color = _jitter(rng, _lin(*[(80, 80, 82), (95, 92, 90), (65, 66, 70), (110, 108, 105)][
        int(rng.integers(4))]), 0.1)
    line_color = _lin(*[(235, 235, 230), (225, 225, 215)][int(rng.integers(2))])
    centre_color = line_color if u() < 0.7 else _lin(230, 180, 30)
    terrain_color = _jitter(rng, _lin(*[(95, 115, 50), (120, 120, 70), (110, 95, 70)][
        int(rng.integers(3))]), 0.1)
    return _Scene(
        origin=origin, rot=rot, focal=focal, prims=b.arrays(), road=road,
        lanes=(lane_x0, n_lanes, lane_w), centre_line=centre_line, crossings=crossings,
        zebras=zebras, marking=(u(0.12, 0.2), u(2, 4), u(6, 12), u(0, 12)),
        road_color=road_color, line_color=line_color, centre_color=centre_color,
        terrain_color=terrain_color, shadow_rows=shadow_rows,
        footprints=np.array(footprints, np.float32).reshape(-1, 4),
        sun=sun, sun_color=sun_color, ambient=ambient.astype(np.float32),
        sky_zenith=zenith.astype(np.float32), sky_horizon=horizon.astype(np.float32),
        clouds=(u(0.2, 0.9) * (0.5 + overcast), u(1.5, 5), u(0.3, 1.5)),
        fog=u(300, 2500) * (1 - 0.5 * overcast), exposure=u(0.75, 1.25) / brightness * 0.6,
        noise_seed=int(rng.integers(2 ** 31)), grain=u(0.004, 0.02), vignette=u(0, 0.35),
    )


def _lot(b: _Builder, rng, sgn: int, x_sw: float, z0: float, z1: float) -> None:
    """An open lot between buildings: trees on terrain, maybe a fence or wall at the front."""
    u = rng.uniform
    kind = u()
    if kind < 0.35:
        xa, xb = sorted((x_sw + sgn * 0.1, x_sw + sgn * 0.16))
        b.box((xa, 0, z0), (xb, u(1.0, 2.2), z1), _METAL, FENCE,
              _jitter(rng, _lin(*[(90, 90, 95), (120, 90, 60), (60, 70, 60)][int(rng.integers(3))])),
              (u(0.12, 0.3), u(0.25, 0.6)), _SLATS)
    elif kind < 0.6:
        xa, xb = sorted((x_sw + sgn * 0.1, x_sw + sgn * 0.4))
        b.box((xa, 0, z0), (xb, u(0.6, 2.5), z1), _CONCRETE, WALL,
              _jitter(rng, _lin(*[(160, 155, 145), (140, 80, 60), (120, 120, 115)][int(rng.integers(3))])))
    leaf = _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]
    for _ in range(int(rng.integers(1, 4))):
        _tree(b, rng, x_sw + sgn * u(3, 12), u(z0, z1), u(2.5, 5), u(2.5, 5), _jitter(rng, leaf, 0.1), 0)


def _tree(b: _Builder, rng, x, z, trunk_h, crown_r, leaf, base) -> None:
    u = rng.uniform
    tw = u(0.2, 0.4)
    b.box((x - tw / 2, base, z - tw / 2), (x + tw / 2, base + trunk_h + crown_r * 0.5, z + tw / 2),
          _BARK, VEGETATION, _jitter(rng, _lin(85, 70, 55)))
    cy = base + trunk_h + crown_r * 0.8
    for _ in range(int(rng.integers(3, 6))):
        r = crown_r * u(0.55, 0.85)
        b.ellipsoid((x + u(-0.5, 0.5) * crown_r, cy + u(-0.3, 0.4) * crown_r, z + u(-0.5, 0.5) * crown_r),
                    (r, r * u(0.8, 1.1), r), _FOLIAGE, VEGETATION, _jitter(rng, leaf, 0.08))


def _lamp_post(b: _Builder, rng, sgn, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.14, 0.26), u(6, 9.5)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    arm = u(0.8, 2.5)
    xa, xb = sorted((x, x - sgn * arm))
    b.box((xa, h - 0.12, z - 0.05), (xb, h, z + 0.05), _METAL, POLE, color)
    xl = x - sgn * arm
    b.box((xl - 0.3, h - 0.25, z - 0.15), (xl + 0.3, h - 0.05, z + 0.15), _METAL, POLE, color)
    if u() < 0.3:
        _sign(b, rng, x, u(2.2, 3.0), z - pw / 2 - 0.03, u(0.5, 0.8))


def _sign_pole(b: _Builder, rng, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.06, 0.12), u(2.6, 3.8)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    size = u(0.5, 0.9)
    _sign(b, rng, x, h - size / 2 - 0.05, z - pw / 2 - 0.03, size)
    if u() < 0.35:
        _sign(b, rng, x, h - size * 1.6 - 0.1, z - pw / 2 - 0.03, size * 0.8)


def _sign(b: _Builder, rng, x, y, z, size) -> None:
    """A sign facing the camera (-z) centred at (x, y), ``size`` metres across."""
    shape, border, inner, symbol = _SIGN_TYPES[int(rng.integers(len(_SIGN_TYPES)))]
    w = size * (rng.uniform(1.0, 1.8) if shape == _SOLID else 1.0)
    b.box((x - w / 2, y - size / 2, z - 0.03), (x + w / 2, y + size / 2, z), _SIGNFACE, SIGN, inner,
          tuple(border) + (float(symbol),), shape)


def _traffic_light(b: _Builder, rng, sgn, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.12, 0.2), u(3.0, 4.2)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    state = float(rng.integers(3))
    b.box((x - 0.17, h - 0.95, z - pw / 2 - 0.3), (x + 0.17, h, z - pw / 2), _TLIGHT, LIGHT,
          _lin(30, 30, 30), (state,))
    if u() < 0.5:  # overhead arm with a second light above the road
        arm = u(3, 6)
        ha = h + u(1.2, 2.2)
        b.box((x - pw / 2, h, z - pw / 2), (x + pw / 2, ha, z + pw / 2), _METAL, POLE, color)
        xa, xb = sorted((x, x - sgn * arm))
        b.box((xa, ha - 0.15, z - 0.07), (xb, ha, z + 0.07), _METAL, POLE, color)
        xl = x - sgn * arm * u(0.6, 0.95)
        b.box((xl - 0.17, ha - 1.1, z - 0.4), (xl + 0.17, ha - 0.15, z - 0.1), _TLIGHT, LIGHT,
              _lin(30, 30, 30), (state,))
    if u() < 0.5:
        _sign(b, rng, x, h - 1.6, z - pw / 2 - 0.03, u(0.5, 0.7))


def _vehicle(b: _Builder, rng, x, z, length, same_way, paint, big) -> Tuple[float, ...]:
    """A car (or bus/truck when ``big``) centred at ``x`` whose rear (camera side) is at ``z``."""
    u = rng.uniform
    if big:
        width, height = u(2.3, 2.6), u(2.8, 3.4)
        cls = BUS if u() < 0.5 else TRUCK
        b.box((x - width / 2, 0.35, z), (x + width / 2, height, z + length), _PAINT, cls, paint,
              (float(same_way), 1.0))
        for zw in (z + 1.5, z + length - 2.0):
            b.box((x - width / 2 + 0.05, 0, zw - 0.5), (x + width / 2 - 0.05, 0.9, zw + 0.5), _TIRE,
                  cls, _lin(20, 20, 20))
        return (x - width / 2, x + width / 2, z, z + length)
    width, height = u(1.65, 1.95), u(1.35, 1.75)
    body = u(0.75, 0.95)
    b.box((x - width / 2, 0.28, z), (x + width / 2, body, z + length), _PAINT, CAR, paint,
          (float(same_way), 0.0))
    inset, c0, c1 = u(0.08, 0.18), u(0.8, 1.3), u(1.0, 1.6)
    b.box((x - width / 2 + inset, body, z + c0), (x + width / 2 - inset, height, z + length - c1),
          _CABIN, CAR, paint)
    r = u(0.3, 0.36)
    for zw in (z + 0.85, z + length - 0.85):
        b.box((x - width / 2 + 0.02, 0, zw - r), (x + width / 2 - 0.02, 2 * r, zw + r), _TIRE, CAR,
              _lin(22, 22, 24))
    return (x - width / 2, x + width / 2, z, z + length)


def _person(b: _Builder, rng, x, z, base, along_z) -> None:
    u = rng.uniform
    s = u(1.5, 1.95) / 1.75
    skin = _lin(*[(230, 190, 160), (190, 140, 100), (120, 80, 55), (240, 200, 175)][int(rng.integers(4))])
    top = _lin(*rng.integers(20, 230, 3))
    legs = _lin(*rng.integers(15, 120, 3))
    lw, leg_h = 0.13 * s, 0.85 * s
    stride = u(-0.15, 0.15) * s
    for k in (-1, 1):  # legs
        dx, dz = (k * 0.09 * s, k * stride) if along_z else (k * stride, k * 0.09 * s)
        b.box((x + dx - lw / 2, base, z + dz - lw / 2), (x + dx + lw / 2, base + leg_h, z + dz + lw / 2),
              _CLOTH, PERSON, legs)
    rx, rz = (0.21 * s, 0.13 * s) if along_z else (0.13 * s, 0.21 * s)
    b.ellipsoid((x, base + leg_h + 0.3 * s, z), (rx, 0.36 * s, rz), _CLOTH, PERSON, top)
    for k in (-1, 1):  # arms
        ax, az = (x + k * (rx + 0.04 * s), z) if along_z else (x, z + k * (rz + 0.04 * s))
        b.box((ax - 0.045 * s, base + leg_h - 0.05 * s, az - 0.05 * s),
              (ax + 0.045 * s, base + leg_h + 0.6 * s, az + 0.05 * s), _CLOTH, PERSON, top)
    b.ellipsoid((x, base + leg_h + 0.78 * s, z), (0.1 * s, 0.12 * s, 0.1 * s), _SKIN, PERSON, skin)


# --------------------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------------------
def _ray_directions(scene: _Scene, height: int, width: int) -> np.ndarray:
    """World-space ray directions ``(3, H, W)`` float32, scaled so camera-z = 1.

    With that scaling the ray parameter ``t`` of a hit is its z-depth.
    """
    f = scene.focal
    xc = ((np.arange(width) + 0.5 - width / 2) / f).astype(np.float64)
    yc = (-(np.arange(height) + 0.5 - height / 2) / f).astype(np.float64)
    cam = np.stack(np.broadcast_arrays(xc[None, :], yc[:, None], np.ones((1, 1))))
    d = np.einsum("ij,jhw->ihw", scene.rot, cam).astype(np.float32)
    tiny = np.float32(1e-7)
    d[np.abs(d) < tiny] = tiny
    return d


def _screen_rects(scene: _Scene, height: int, width: int):
    """Pixel rectangles ``(N, 4)`` (r0, r1, c0, c1) bounding each primitive, and its minimum
    camera-z (a lower bound of its depth)."""
    p = scene.prims
    lo, hi = p["lo"].astype(np.float64), p["hi"].astype(np.float64)
    bits = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)
    corners = np.where(bits[None], hi[:, None], lo[:, None])  # (N, 8, 3)
    cam = (corners - np.array(scene.origin)) @ scene.rot  # camera coordinates
    zc = cam[..., 2]
    zmin = zc.min(1)
    front = zmin > 0.05
    zs = np.where(front[:, None], zc, 1.0)
    uu = scene.focal * cam[..., 0] / zs + width / 2
    vv = height / 2 - scene.focal * cam[..., 1] / zs
    rects = np.stack([
        np.floor(vv.min(1) - 0.5), np.ceil(vv.max(1) - 0.5) + 1,
        np.floor(uu.min(1) - 0.5), np.ceil(uu.max(1) - 0.5) + 1], 1)
    rects = np.where(front[:, None], rects, [[0, height, 0, width]])
    rects[:, :2] = np.clip(rects[:, :2], 0, height)
    rects[:, 2:] = np.clip(rects[:, 2:], 0, width)
    rects[zc.max(1) <= 0.05] = 0  # entirely behind the camera
    return rects.astype(np.int64), zmin


def _hit_box(o, lo, hi, inv):
    """Slab test. ``inv``: (3, h, w) reciprocal directions. Returns t (inf = miss), face code."""
    tn, tf, axis = None, None, None
    for a in range(3):
        t1 = (lo[a] - o[a]) * inv[a]
        t2 = (hi[a] - o[a]) * inv[a]
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        if tn is None:
            tn, tf, axis = near, far, np.zeros(near.shape, np.int8)
        else:
            axis = np.where(near > tn, np.int8(a), axis)
            tn, tf = np.maximum(tn, near), np.minimum(tf, far)
    t = np.where((tn <= tf) & (tn > 0), tn, np.float32(np.inf))
    entering_lo = np.where(axis == 0, inv[0] > 0, np.where(axis == 1, inv[1] > 0, inv[2] > 0))
    return t, axis * 2 + entering_lo.astype(np.int8)


def _hit_ellipsoid(o, lo, hi, d):
    c = [(lo[a] + hi[a]) / 2 for a in range(3)]
    r = [(hi[a] - lo[a]) / 2 for a in range(3)]
    oc = [(o[a] - c[a]) / r[a] for a in range(3)]
    dd = [d[a] / r[a] for a in range(3)]
    qa = dd[0] * dd[0] + dd[1] * dd[1] + dd[2] * dd[2]
    qb = oc[0] * dd[0] + oc[1] * dd[1] + oc[2] * dd[2]
    qc = oc[0] ** 2 + oc[1] ** 2 + oc[2] ** 2 - 1
    disc = qb * qb - qa * qc
    t = (-qb - np.sqrt(np.maximum(disc, 0))) / qa
    return np.where((disc >= 0) & (t > 0), t, np.float32(np.inf))


def _shape_metric(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Outline metric of a sign shape on local coords in [-1, 1]: inside where <= 1."""
    au, av = np.abs(u), np.abs(v)
    if shape == _CIRCLE:
        return np.sqrt(u * u + v * v)
    if shape == _TRIANGLE:
        return np.maximum(-v, 2 * au + v)
    if shape == _YIELD:
        return np.maximum(v, 2 * au - v)
    if shape == _DIAMOND:
        return au + av
    if shape == _OCTAGON:
        return np.maximum(np.maximum(au, av), (au + av) / 1.45)
    return np.maximum(au, av)


def _cut_out(t, o, d, lo, hi, shape, param):
    """Apply a primitive's alpha shape: misses (inf) where the hit point is cut away."""
    finite = np.isfinite(t)
    tt = np.where(finite, t, 0)
    p = [o[a] + tt * d[a] for a in range(3)]
    if shape == _SLATS:  # vertical slats along z plus two rails
        frac = np.mod(p[2] / param[0], 1.0)
        rail = (np.abs(p[1] - hi[1] + 0.08) < 0.06) | (np.abs(p[1] - hi[1] * 0.3) < 0.05)
        keep = (frac < param[1]) | rail
    else:
        u = (p[0] - (lo[0] + hi[0]) / 2) / ((hi[0] - lo[0]) / 2)
        v = (p[1] - (lo[1] + hi[1]) / 2) / ((hi[1] - lo[1]) / 2)
        keep = _shape_metric(shape, u, v) <= 1
    return np.where(keep & finite, t, np.float32(np.inf))


def _cast(scene: _Scene, d: np.ndarray):
    """Nearest hit per pixel: depth ``(H, W)`` (inf = sky), primitive id (-1 = sky), face code."""
    _, height, width = d.shape
    o = [float(v) for v in scene.origin]
    inv = (1.0 / d).astype(np.float32)
    depth = np.full((height, width), np.inf, np.float32)
    pid = np.full((height, width), -1, np.int32)
    face = np.zeros((height, width), np.int8)
    ground = d[1] < 0
    depth[ground] = -o[1] / d[1][ground]
    pid[ground] = 0
    face[ground] = 2
    p = scene.prims
    rects, zmin = _screen_rects(scene, height, width)
    order = np.argsort(zmin[1:], kind="stable") + 1
    for k in order:
        r0, r1, c0, c1 = rects[k]
        if r0 >= r1 or c0 >= c1:
            continue
        zs = depth[r0:r1, c0:c1]
        if zmin[k] >= zs.max():
            continue
        lo, hi = [float(v) for v in p["lo"][k]], [float(v) for v in p["hi"][k]]
        dd = d[:, r0:r1, c0:c1]
        if p["kind"][k] == _BOX:
            t, fc = _hit_box(o, lo, hi, inv[:, r0:r1, c0:c1])
        else:
            t, fc = _hit_ellipsoid(o, lo, hi, dd), _CURVED
        if p["shape"][k] != _SOLID:
            t = _cut_out(t, o, dd, lo, hi, int(p["shape"][k]), [float(v) for v in p["param"][k]])
        m = t < zs
        if not m.any():
            continue
        zs[m] = t[m]
        pid[r0:r1, c0:c1][m] = k
        face[r0:r1, c0:c1][m] = fc[m] if isinstance(fc, np.ndarray) else fc
    return depth, pid, face


# --------------------------------------------------------------------------------------
# Shading
# --------------------------------------------------------------------------------------
_U32 = np.uint32


def _hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash -> float32 in [0, 1)."""
    h = ix * _U32(0x8DA6B343) ^ iy * _U32(0xD8163841) ^ _U32(seed)
    h ^= h >> _U32(15)
    h *= _U32(0x2C1B3C6D)
    h ^= h >> _U32(12)
    h *= _U32(0x297A2D39)
    h ^= h >> _U32(15)
    return (h >> _U32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _noise2(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2D value noise in [0, 1) at float coordinates (any shape)."""
    x = np.clip(x, -1e6, 1e6)
    y = np.clip(y, -1e6, 1e6)
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = (x - xf).astype(np.float32), (y - yf).astype(np.float32)
    ix = xf.astype(np.int64).astype(np.uint32)
    iy = yf.astype(np.int64).astype(np.uint32)
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    one = _U32(1)
    a = _hash2(ix, iy, seed) + (_hash2(ix + one, iy, seed) - _hash2(ix, iy, seed)) * sx
    b = _hash2(ix, iy + one, seed)
    b = b + (_hash2(ix + one, iy + one, seed) - b) * sx
    return a + (b - a) * sy


def _sky(scene: _Scene, dx, dy, dz, clouds: bool = True) -> np.ndarray:
    """Sky radiance ``(N, 3)`` for ray directions (N,) of any length; ``clouds=False``: the
    plain gradient and sun (used for reflections)."""
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    ex, ey, ez = dx / norm, dy / norm, dz / norm
    up = np.clip(ey, 0, 1)[:, None]
    col = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * np.sqrt(up)
    sd = np.clip(ex * scene.sun[0] + ey * scene.sun[1] + ez * scene.sun[2], 0, 1)[:, None]
    sun = scene.sun_color * (0.25 * sd ** 64 + 2.0 * sd ** 2000)
    if not clouds:
        return (col + sun).astype(np.float32)
    cover, sharp, scale = scene.clouds
    hgt = np.maximum(ey, 0.02)
    cx, cz = ex / hgt * scale, ez / hgt * scale
    seed = scene.noise_seed
    n = (0.6 * _noise2(cx, cz, seed + 11) + 0.3 * _noise2(cx * 2.7, cz * 2.7, seed + 12)
         + 0.1 * _noise2(cx * 7.1, cz * 7.1, seed + 13))
    cloud = np.clip((n - (1 - cover * 0.7)) * sharp, 0, 1)[:, None] * np.clip(ey * 8, 0, 1)[:, None]
    cloud_col = scene.sky_horizon.mean() * 1.15 * (0.75 + 0.35 * n[:, None])
    return (col * (1 - cloud) + cloud_col * cloud + sun).astype(np.float32)


def _ground_albedo(scene: _Scene, x, z, n1, n2, n3):
    """Road (with markings) / terrain albedo ``(N, 3)`` and class (N,) on the ground plane."""
    crossing = np.zeros(x.shape, bool)
    for c0, c1 in scene.crossings:
        crossing |= (z >= c0) & (z <= c1)
    on_road = ((x > scene.road[0]) & (x < scene.road[1])) | crossing
    cls = np.where(on_road, ROAD, TERRAIN).astype(np.uint8)
    asphalt = np.array(scene.road_color, np.float32) * (0.75 + 0.35 * n1 + 0.15 * n2 + 0.12 * n3)[:, None]
    grass = np.array(scene.terrain_color, np.float32) * (0.55 + 0.6 * n2 + 0.25 * n3)[:, None]
    dirt = np.array(_lin(120, 100, 80), np.float32)
    grass = grass + (dirt - grass) * np.clip((n1 - 0.55) * 3, 0, 1)[:, None]
    albedo = np.where(on_road[:, None], asphalt, grass)
    x0, n_lanes, lane_w = scene.lanes
    lw, dash, period, phase = scene.marking
    dashed = np.mod(z + phase, period) < dash
    line = np.zeros(x.shape, bool)
    centre = np.zeros(x.shape, bool)
    for k in range(n_lanes + 1):
        near = np.abs(x - (x0 + k * lane_w)) < lw / 2
        if k in (0, n_lanes):
            line |= near
        elif k == scene.centre_line:
            centre |= near
        else:
            line |= near & dashed
    line &= ~crossing & (z > -80)
    centre &= ~crossing
    zebra = np.zeros(x.shape, bool)
    for z0, z1 in scene.zebras:
        stripes = (np.mod(x, 1.0) < 0.5) & (x > scene.road[0] + 0.3) & (x < scene.road[1] - 0.3)
        zebra |= (z >= z0) & (z <= z1) & stripes
    wear = (0.7 + 0.3 * n3)[:, None]
    albedo = np.where((line | zebra)[:, None], np.array(scene.line_color, np.float32) * wear, albedo)
    albedo = np.where((centre & on_road)[:, None], np.array(scene.centre_color, np.float32) * wear, albedo)
    return albedo, cls


def _local(p, lo, hi):
    """Hit point in box-local coordinates: -1..1 per axis (list of three (N,) arrays)."""
    return [(p[a] - (lo[:, a] + hi[:, a]) / 2) / np.maximum((hi[:, a] - lo[:, a]) / 2, 1e-6)
            for a in range(3)]


def _shade(scene: _Scene, d, depth, pid, face) -> Tuple[np.ndarray, np.ndarray]:
    """Linear RGB image ``(H, W, 3)`` float32 and label map ``(H, W)`` uint8."""
    _, height, width = d.shape
    pr = scene.prims
    image = np.empty((height * width, 3), np.float32)
    labels = np.full(height * width, SKY, np.uint8)
    flat_pid = pid.ravel()
    sky = np.flatnonzero(flat_pid < 0)
    dx, dy, dz = (d[a].ravel() for a in range(3))
    image[sky] = _sky(scene, dx[sky], dy[sky], dz[sky])

    idx = np.flatnonzero(flat_pid >= 0)
    k = flat_pid[idx]
    t = depth.ravel()[idx]
    rd = [dx[idx], dy[idx], dz[idx]]
    p = [scene.origin[a] + t * rd[a] for a in range(3)]
    fc = face.ravel()[idx]
    lo, hi = pr["lo"][k], pr["hi"][k]
    mat = pr["mat"][k]
    labels[idx] = pr["cls"][k]

    normal = _FACE_NORMALS[np.minimum(fc, 5)]
    curved = fc == _CURVED
    if curved.any():
        c = (lo[curved] + hi[curved]) / 2
        r2 = ((hi[curved] - lo[curved]) / 2) ** 2
        nv = np.stack([p[a][curved] for a in range(3)], 1) - c
        nv = nv / r2
        normal[curved] = nv / np.linalg.norm(nv, axis=1, keepdims=True)
    # planar texture coordinates by the dominant normal axis
    axis = np.argmax(np.abs(normal), 1)
    ta = np.where(axis == 0, p[2], p[0])
    tb = np.where(axis == 1, p[2], p[1])
    seed = scene.noise_seed
    n1 = _noise2(ta * 0.15, tb * 0.15, seed)
    n2 = _noise2(ta * 1.3, tb * 1.3, seed + 1)
    n3 = _noise2(ta * 6.0, tb * 6.0, seed + 2)
    n4 = _noise2(ta * 23.0 + k, tb * 23.0, seed + 3)

    albedo = pr["color"][k].copy()
    emit = np.zeros_like(albedo)
    spec = np.zeros(len(idx), np.float32)
    loc = _local(p, lo, hi)
    front = fc == 5  # faces the camera side (-z)

    def sel(m):
        return np.flatnonzero(mat == m)

    s = sel(_GROUND)
    albedo[s], labels[idx[s]] = _ground_albedo(scene, p[0][s], p[2][s], n1[s], n2[s], n3[s])

    s = sel(_SIDEWALK)
    tile = pr["param"][k[s], 0]
    gu, gv = np.mod(ta[s] / tile, 1.0), np.mod(tb[s] / tile, 1.0)
    grout = ((gu < 0.06) | (gv < 0.06)) & (axis[s] == 1)
    per_tile = _noise2(np.floor(ta[s] / tile) * 7.3 + 0.5, np.floor(tb[s] / tile) * 7.3 + 0.5, seed + 4)
    shade = (0.8 + 0.25 * per_tile + 0.15 * n3[s] + 0.1 * n2[s]) * np.where(grout, 0.72, 1.0)
    shade = np.where(axis[s] != 1, 1.15 * (0.85 + 0.2 * n3[s]), shade)  # kerb face
    albedo[s] *= shade[:, None]

    s = sel(_FACADE)
    _facade(albedo, spec, s, k, p, fc, axis, lo, hi, pr["param"], n1, n2, n3, scene)

    s = sel(_METAL)
    albedo[s] *= (0.85 + 0.3 * n3[s])[:, None]
    spec[s] = 0.15

    s = sel(_SIGNFACE)
    _sign_face(albedo, s, k, loc, front, pr, n3)

    s = sel(_TLIGHT)
    on_front = front[s]
    lu, lv = loc[0][s] * 0.17, loc[1][s] * 0.475
    state = pr["param"][k[s], 0]
    for j, (yc, col) in enumerate(((0.3, (4.0, 0.3, 0.1)), (0.0, (4.0, 2.0, 0.2)), (-0.3, (0.3, 3.0, 0.8)))):
        lamp = on_front & (lu * lu + (lv - yc) ** 2 < 0.1 ** 2)
        lit = lamp & (state == j)
        albedo[s[lamp]] = 0.05
        emit[s[lit]] = col
    spec[s] = 0.3

    s = sel(_FOLIAGE)
    leaf = 0.35 + 0.9 * n4[s] * (0.4 + 0.8 * n3[s]) + 0.2 * n2[s]
    albedo[s] *= (leaf * (0.75 + 0.25 * np.clip(normal[s, 1] + 1, 0, 1)))[:, None]

    s = sel(_BARK)
    albedo[s] *= (0.7 + 0.5 * n4[s])[:, None]

    s = sel(_PAINT)
    _car_body(albedo, emit, spec, s, k, p, loc, front, pr, hi, n3)

    s = sel(_CABIN)
    roof = fc[s] == 2
    along = np.where(fc[s] < 2, loc[2][s], loc[0][s])  # horizontal in-face coordinate
    glass = ~roof & (np.abs(along) < 0.9) & (loc[1][s] > -0.75)
    albedo[s[glass]] = np.array([0.02, 0.025, 0.03], np.float32)
    spec[s] = np.where(glass, 1.0, 0.6)

    s = sel(_TIRE)
    albedo[s] *= (0.8 + 0.4 * n4[s])[:, None]

    for m in (_CLOTH, _SKIN, _CONCRETE):
        s = sel(m)
        albedo[s] *= (0.8 + 0.25 * n3[s] + 0.15 * n2[s])[:, None]

    # lighting: sun (with analytic building shadows and vehicle contact shadows) + ambient
    lit = _sun_visibility(scene, p)
    ndl = np.clip(normal @ scene.sun, 0, 1) * lit
    sky_light = (0.55 + 0.45 * normal[:, 1])[:, None]
    col = albedo * (scene.ambient * sky_light * _contact_shadow(scene, p, mat)[:, None]
                    + scene.sun_color * ndl[:, None])
    rn = np.sqrt(rd[0] ** 2 + rd[1] ** 2 + rd[2] ** 2)
    view = np.stack(rd, 1) / rn[:, None]
    refl = view - 2 * (view * normal).sum(1, keepdims=True) * normal
    rs = np.clip(refl @ scene.sun, 0, 1)
    col += (spec * (rs ** 40) * lit)[:, None] * scene.sun_color
    col += (spec * 0.1)[:, None] * _sky(scene, refl[:, 0], np.abs(refl[:, 1]), refl[:, 2], clouds=False)
    col += emit
    # distance fog towards the horizon colour
    fog = np.exp(-(t * rn) / scene.fog)[:, None]
    haze = scene.sky_horizon * 0.95
    image[idx] = col * fog + haze * (1 - fog)
    return image.reshape(height, width, 3), labels.reshape(height, width)


def _facade(albedo, spec, s, k, p, fc, axis, lo, hi, param, n1, n2, n3, scene) -> None:
    """Walls with floors, windows and shop fronts; flat grey roofs."""
    pa = param[k[s]]
    floor_h, col_w, win_w, win_h, shop, tint = (pa[:, j] for j in range(6))
    y = p[1][s]
    along = np.where(axis[s] == 0, p[2][s], p[0][s])
    a_lo = np.where(axis[s] == 0, lo[s, 2], lo[s, 0])
    a_hi = np.where(axis[s] == 0, hi[s, 2], hi[s, 0])
    storey = np.floor(y / floor_h)
    fy = y / floor_h - storey
    column = np.floor((along - a_lo) / col_w)
    fa = (along - a_lo) / col_w - column
    inside = (along - a_lo > 0.6) & (a_hi - along > 0.6) & (y < hi[s, 1] - 0.9)
    is_shop = (storey == 0) & (shop > 0.5)
    window = inside & (np.abs(fa - 0.5) < win_w / 2) & (fy > 0.3) & (fy < 0.3 + win_h) & (storey >= 1)
    shopwin = inside & is_shop & (np.abs(fa - 0.5) < 0.43) & (fy > 0.08) & (fy < 0.82)
    frame = (inside & (np.abs(fa - 0.5) < win_w / 2 + 0.06) & (fy > 0.26) & (fy < 0.34 + win_h)
             & ~window & (storey >= 1))
    ledge = fy < 0.05
    base = albedo[s] * (0.8 + 0.25 * n2[s] + 0.15 * n1[s] + 0.08 * n3[s])[:, None]
    base = base * np.where(ledge, 0.8, 1.0)[:, None]
    base = np.where((is_shop & ~shopwin)[:, None], base * 0.6, base)
    rnd = _hash2(column.astype(np.int64).astype(np.uint32) + k[s].astype(np.uint32) * _U32(977),
                 storey.astype(np.int64).astype(np.uint32), scene.noise_seed + 5)
    glass = np.array([0.025, 0.03, 0.04], np.float32) * (0.6 + 0.8 * rnd)[:, None]
    lit_room = np.array([0.35, 0.28, 0.18], np.float32) * (0.5 + tint)[:, None]
    glass = np.where((rnd > 0.9)[:, None], lit_room, glass)
    glass = np.where(((rnd > 0.55) & (rnd < 0.7))[:, None], base * 0.5, glass)  # blinds
    out = np.where((window | shopwin)[:, None], glass, base)
    out = np.where(frame[:, None], np.array([0.5, 0.5, 0.5], np.float32) * (0.5 + tint)[:, None], out)
    roof = fc[s] == 2
    gravel = np.float32(0.12) * (0.7 + 0.6 * n3[s])[:, None]
    out = np.where(roof[:, None], gravel, out)
    albedo[s] = out
    spec[s] = np.where(window | shopwin, 0.8, 0.0)


def _sign_face(albedo, s, k, loc, front, pr, n3) -> None:
    """Sign fronts: border ring, inner colour and a simple symbol; grey metal elsewhere."""
    shape = pr["shape"][k[s]]
    pa = pr["param"][k[s]]
    u, v = loc[0][s], loc[1][s]
    metric = np.zeros(len(s), np.float32)
    for sh in np.unique(shape):
        m = shape == sh
        metric[m] = _shape_metric(int(sh), u[m], v[m])
    border = metric > 0.78
    symbol = (pa[:, 3] > 0) & (metric < 0.4) & ((np.abs(v) < 0.12) | ((np.abs(u) < 0.1) & (pa[:, 3] > 1.5)))
    sym_col = np.where((pa[:, 3] > 1.5)[:, None], np.float32(0.85), np.float32(0.02))
    out = np.where(border[:, None], pa[:, :3], albedo[s])
    out = np.where(symbol[:, None], sym_col, out)
    out = np.where(front[s][:, None], out, np.float32(0.25))
    albedo[s] = out * (0.9 + 0.15 * n3[s])[:, None]


def _car_body(albedo, emit, spec, s, k, p, loc, front, pr, hi, n3) -> None:
    """Paint with lights on the camera-facing end (red rear lights or white headlights)."""
    pa = pr["param"][k[s]]
    same_way = pa[:, 0] > 0.5
    u = loc[0][s]
    y_top = hi[s, 1]
    lamp = front[s] & (np.abs(u) > 0.7) & (p[1][s] > y_top - 0.28) & (pa[:, 1] < 0.5)
    bumper = front[s] & (p[1][s] < y_top - 0.45) & (pa[:, 1] < 0.5)
    lower = p[1][s] < 0.45
    out = albedo[s] * (0.95 + 0.1 * n3[s])[:, None]
    out = np.where((bumper | lower)[:, None], out * 0.3 + 0.02, out)
    lamp_col = np.where(same_way[:, None], np.array([0.5, 0.02, 0.02], np.float32),
                        np.array([0.7, 0.7, 0.65], np.float32))
    out = np.where(lamp[:, None], lamp_col, out)
    albedo[s] = out
    spec[s] = np.where(lamp, 0.8, 0.5)
    emit[s[lamp & same_way]] = np.array([0.25, 0.0, 0.0], np.float32)


def _sun_visibility(scene: _Scene, p) -> np.ndarray:
    """1 where the sun is visible, 0 where a building row shadows the point (N,)."""
    lit = np.ones(p[0].shape, np.float32)
    sx, sy, sz = (float(v) for v in scene.sun)
    if abs(sx) < 1e-4:
        return lit
    for x_plane, z0, z1, h in scene.shadow_rows:
        s = (x_plane - p[0]) / sx
        ok = s > 0.05
        yc = p[1] + s * sy
        zc = p[2] + s * sz
        j = np.clip(np.searchsorted(z0, zc, side="right") - 1, 0, len(z0) - 1)
        shadow = ok & (zc >= z0[j]) & (zc < z1[j]) & (yc < h[j])
        lit[shadow] = 0
    return lit


def _contact_shadow(scene: _Scene, p, mat) -> np.ndarray:
    """Ambient occlusion under vehicles on the ground (N,)."""
    occ = np.ones(p[0].shape, np.float32)
    ground = np.flatnonzero(mat == _GROUND)
    if not len(scene.footprints) or not len(ground):
        return occ
    gx, gz = p[0][ground], p[2][ground]
    for x0, x1, z0, z1 in scene.footprints:
        under = (gx > x0 - 0.15) & (gx < x1 + 0.15) & (gz > z0 - 0.15) & (gz < z1 + 0.15)
        occ[ground[under]] = 0.35
    return occ


def _develop(scene: _Scene, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, tone curve, gamma, vignetting and sensor noise -> ``(H, W, 3)`` uint8."""
    height, width, _ = image.shape
    x = image * np.float32(scene.exposure)
    x = (x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14)  # filmic (ACES fit)
    x = np.power(np.clip(x, 0, 1), 1 / 2.2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (width / 2)) ** 2
    x = x * (1 - scene.vignette * 0.5 * r2)[..., None]
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(scene.grain)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def render_sample(seed: int, split: str, index: int,
                  size: Tuple[int, int] = DEFAULT_SIZE) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index`` of ``split`` for dataset ``seed``.

    Returns ``(rgb, semseg, depth)``: rgb ``(H, W, 3)`` uint8; semseg ``(H, W)`` uint8
    trainIds; depth ``(H, W)`` float32 z-depth in metres clamped to :data:`DEPTH_RANGE`,
    0 on sky. Depends only on the arguments.
    """
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _split_code(split), int(index)]))
    scene = _build_scene(rng, width)
    d = _ray_directions(scene, height, width)
    zbuf, pid, face = _cast(scene, d)
    image, labels = _shade(scene, d, zbuf, pid, face)
    rgb = _develop(scene, image, rng)
    depth = np.where(pid >= 0, np.clip(zbuf, *DEPTH_RANGE), 0).astype(np.float32)
    return rgb, labels, depth


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


# --------------------------------------------------------------------------------------
# Writing a dataset
# --------------------------------------------------------------------------------------
def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Metres ``(H, W)`` (0 or non-finite = invalid) -> uint16 ``round(depth * 256)``, 0 invalid."""
    valid = np.isfinite(depth) & (depth > 0)
    q = np.round(np.where(valid, depth, 0) * DEPTH_SCALE)
    return np.clip(q, 0, 65535).astype(np.uint16)


def _write_sample(job) -> Tuple[float, float, float, float, float]:
    """Render and write one sample; returns depth sums (n, Σd, Σd², Σlog d, Σlog² d)."""
    root, split, index, seed, size = job
    rgb, labels, depth = render_sample(seed, split, index, size)
    q = encode_depth(depth)
    folder = Path(root) / split
    level = {"compress_level": 1}  # twice as fast as the default for ~15% larger files
    Image.fromarray(rgb, "RGB").save(folder / "rgb" / f"{index}.png", **level)
    Image.fromarray(labels, "L").save(folder / "semseg" / f"{index}.png", **level)
    Image.fromarray(q).save(folder / "depth" / f"{index}.png", **level)
    d = q[q > 0].astype(np.float64) / DEPTH_SCALE
    ld = np.log(d)
    return (float(d.size), float(d.sum()), float((d * d).sum()), float(ld.sum()), float((ld * ld).sum()))


def _stats(sums: np.ndarray) -> Dict[str, float]:
    n, s, ss, ls, lss = (float(v) for v in sums)
    if n == 0:
        raise ValueError("no valid depth pixels in the training split")
    mean, log_mean = s / n, ls / n
    return {"mean": mean, "std": math.sqrt(max(ss / n - mean * mean, 0.0)),
            "log_mean": log_mean, "log_std": math.sqrt(max(lss / n - log_mean * log_mean, 0.0))}


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def generate_dataset(out_dir, train: int = DEFAULT_TRAIN, val: int = DEFAULT_VAL,
                     size: Sequence[int] = DEFAULT_SIZE, seed: int = DEFAULT_SEED,
                     workers: Optional[int] = None, progress: bool = True) -> Path:
    """Render a synthetic street-scene dataset into ``out_dir`` (MiniScapes layout).

    Writes ``{out_dir}/{train,val}/{rgb,semseg,depth}/{i}.png`` and ``meta.json`` (see the
    module docstring). Files are rendered into a temporary folder next to ``out_dir`` that
    is renamed into place only when complete, so an interrupted run never leaves a dataset
    that looks finished. ``out_dir`` must not exist (or be an empty folder).

    Args:
        train, val: number of images per split (val may be 0; train must be >= 1).
        size: ``(H, W)`` in pixels.
        seed: dataset seed; image ``i`` of a split depends only on (seed, split, i, size).
        workers: processes (default: all usable CPU cores; 0 or 1 renders in this process).
        progress: show a tqdm progress bar.

    Returns:
        The dataset root (``out_dir`` as a ``Path``).
    """
    out = Path(out_dir)
    height, width = (int(v) for v in size)
    train, val, seed = int(train), int(val), int(seed)
    if train < 1 or val < 0:
        raise ValueError(f"need train >= 1 and val >= 0 images, got train={train}, val={val}")
    if height < 8 or width < 8:
        raise ValueError(f"size (H, W) must be at least 8x8 pixels, got {tuple(size)!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"refusing to overwrite existing {out}; remove it or pick another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    workers = _default_workers() if workers is None else max(0, int(workers))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        counts = {"train": train, "val": val}
        for split in SPLITS:
            for sub in ("rgb", "semseg", "depth"):
                (tmp / split / sub).mkdir(parents=True)
        jobs = [(str(tmp), split, i, seed, (height, width)) for split in SPLITS for i in range(counts[split])]
        sums = np.zeros(5, np.float64)
        bar = tqdm(total=len(jobs), desc=f"rendering {out.name}", unit="img", disable=not progress)
        with bar:
            if workers <= 1:
                results = map(_write_sample, jobs)
                for job, res in zip(jobs, results):
                    sums += np.array(res) if job[1] == "train" else 0
                    bar.update()
            else:
                with multiprocessing.Pool(workers) as pool:
                    for job, res in zip(jobs, pool.imap(_write_sample, jobs, chunksize=4)):
                        sums += np.array(res) if job[1] == "train" else 0
                        bar.update()
        meta = {
            "format": FORMAT_NAME, "version": GENERATOR_VERSION,
            "classes": list(CLASS_NAMES), "colors": [list(c) for c in CLASS_COLORS],
            "ignore_index": IGNORE_INDEX,
            "depth_encoding": {"type": "uint16", "scale": 1.0 / DEPTH_SCALE, "invalid": 0},
            "depth_range": list(DEPTH_RANGE), "depth_stats": _stats(sums),
            "size": [height, width], "seed": seed, "train": train, "val": val,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def default_data_root() -> Path:
    """Cache folder of the default synthetic set.

    ``$FASTMTL_CACHE``, else ``$XDG_CACHE_HOME/fastmtl``, else ``~/.cache/fastmtl``; then a
    subfolder named by the generator version and the default arguments.
    """
    base = os.environ.get("FASTMTL_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg, "fastmtl") if xdg else os.path.join(Path.home(), ".cache", "fastmtl")
    h, w = DEFAULT_SIZE
    name = f"synthetic-v{GENERATOR_VERSION}-seed{DEFAULT_SEED}-{DEFAULT_TRAIN}x{DEFAULT_VAL}-{h}x{w}"
    return Path(base) / name


def ensure_default_dataset(progress: bool = True) -> Path:
    """Return :func:`default_data_root`, rendering the default set there first if missing."""
    root = default_data_root()
    if (root / "meta.json").is_file():
        return root
    try:
        return generate_dataset(root, progress=progress)
    except OSError:
        if (root / "meta.json").is_file():  # another process finished it first
            return root
        raise
