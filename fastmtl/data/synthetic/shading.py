"""Shading: procedural textures, sun and sky light, shadows, fog and the camera's development."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .constants import (ROAD, SKY, TERRAIN, _BARK, _CABIN, _CLOTH, _CONCRETE, _CURVED, _FACADE,
    _FACE_NORMALS, _FOLIAGE, _GROUND, _METAL, _PAINT, _SIDEWALK, _SIGNFACE, _SKIN, _TIRE, _TLIGHT,
    lin)
from .primitives import Scene
from .raycast import _shape_metric

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


def _sky(scene: Scene, dx, dy, dz, clouds: bool = True) -> np.ndarray:
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


def _ground_albedo(scene: Scene, x, z, n1, n2, n3):
    """Road (with markings) / terrain albedo ``(N, 3)`` and class (N,) on the ground plane."""
    crossing = np.zeros(x.shape, bool)
    for c0, c1 in scene.crossings:
        crossing |= (z >= c0) & (z <= c1)
    on_road = ((x > scene.road[0]) & (x < scene.road[1])) | crossing
    cls = np.where(on_road, ROAD, TERRAIN).astype(np.uint8)
    asphalt = np.array(scene.road_color, np.float32) * (0.75 + 0.35 * n1 + 0.15 * n2 + 0.12 * n3)[:, None]
    grass = np.array(scene.terrain_color, np.float32) * (0.55 + 0.6 * n2 + 0.25 * n3)[:, None]
    dirt = np.array(lin(120, 100, 80), np.float32)
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


def shade(scene: Scene, d, depth, pid, face) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear RGB image ``(H, W, 3)`` float32, label map ``(H, W)`` uint8 and world-space unit
    surface normals ``(H, W, 3)`` float32 of the hit surfaces (zero on sky)."""
    _, height, width = d.shape
    pr = scene.prims
    image = np.empty((height * width, 3), np.float32)
    normals = np.zeros((height * width, 3), np.float32)
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
    normals[idx] = normal
    return image.reshape(height, width, 3), labels.reshape(height, width), normals.reshape(height, width, 3)


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


def _sun_visibility(scene: Scene, p) -> np.ndarray:
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


def _contact_shadow(scene: Scene, p, mat) -> np.ndarray:
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


def develop(scene: Scene, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
