"""Random street scenes: road, sidewalks, buildings, furniture, vehicles, people, camera and light."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from .constants import (BUILDING, POLE, SIDEWALK, VEGETATION, _FACADE, _FACADE_COLORS, _FOLIAGE,
    _FOLIAGE_COLORS, _METAL, _PAINT_COLORS, _SIDEWALK, jitter, lin)
from .primitives import Builder, Scene
from .props import (lamp_post, lot, person, sign_pole, traffic_light, tree, vehicle)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation (radians): yaw right-positive, pitch up-positive."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def in_any(z: float, intervals, margin: float = 0.0) -> bool:
    return any(a - margin <= z <= b + margin for a, b in intervals)


def build_scene(rng: np.random.Generator, width: int) -> Scene:
    """Draw a random street scene (all randomness of an image comes from ``rng``)."""
    b = Builder()
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
    sw_color = jitter(rng, lin(*[(170, 168, 165), (185, 160, 150), (150, 150, 155),
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
                lot(b, rng, sgn, x_sw, z0, z1)
                continue
            setback = 0.0 if u() < 0.7 else u(1.0, 6.0)
            xf = x_sw + sgn * setback
            h = u(h_lo, h_hi)
            depth = u(10, 25)
            lo, hi = sorted((xf, xf + sgn * depth))
            color = jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
            param = (u(2.9, 3.6), u(2.0, 4.2), u(0.35, 0.7), u(0.4, 0.6),
                     float(u() < 0.5 * style + 0.15), u(0.0, 1.0))
            b.box((lo, 0, z0), (hi, h, z1), _FACADE, BUILDING, color, param)
            if setback > 1.5 and u() < 0.5:
                hx0, hx1 = sorted((xf - sgn * u(0.6, 1.2), xf - sgn * 0.05))
                b.box((hx0, 0, z0 + 0.5), (hx1, u(0.7, 1.6), z1 - 0.5), _FOLIAGE, VEGETATION,
                      jitter(rng, _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]))
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
                color = jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
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
            color = jitter(rng, _FACADE_COLORS[int(rng.integers(len(_FACADE_COLORS)))])
            param = (u(2.9, 3.6), u(2.0, 4.2), u(0.35, 0.7), u(0.4, 0.6), 0.0, u())
            b.box((x, 0, ze), (x + w, u(h_lo, h_hi * 1.3), ze + 20), _FACADE, BUILDING, color,
                  param)
            x += w
    elif end < 0.75:
        for _ in range(int(rng.integers(8, 16))):
            r = u(6, 15)
            b.ellipsoid((u(-150, 150), r * u(0.5, 0.9), z_end + u(20, 120)), (r, r * u(0.7, 1.1), r),
                        _FOLIAGE, VEGETATION,
                        jitter(rng, _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]))

    # --- poles, lamps, signs and traffic lights along the kerbs
    pole_color = jitter(rng, lin(*[(120, 122, 125), (60, 70, 60), (150, 150, 150),
                                     (45, 48, 52)][int(rng.integers(4))]), 0.1)
    for side in (0, 1):
        sgn = -1 if side == 0 else 1
        x_kerb = road[side] + sgn * u(0.35, 0.7)
        spacing = u(7, 18)  # v2: about twice v1's density of poles, lamps and signs
        z = u(-10, -10 + spacing)
        while z < z_end - 10:
            if not in_any(z, crossings, 1.0):
                kind = u()
                if kind < 0.5:
                    lamp_post(b, rng, sgn, x_kerb, z, pole_color)
                elif kind < 0.85:
                    sign_pole(b, rng, x_kerb, z, pole_color)
                else:
                    pw = u(0.18, 0.35)
                    b.box((x_kerb - pw / 2, 0, z - pw / 2), (x_kerb + pw / 2, u(6, 10), z + pw / 2),
                          _METAL, POLE, jitter(rng, lin(110, 95, 80)))
            z += spacing * u(0.7, 1.3)
        for c0, c1 in crossings:  # traffic lights at the near corner of each crossing
            traffic_light(b, rng, sgn, x_kerb, c0 - u(0.5, 2.0), pole_color)
            if u() < 0.5:
                traffic_light(b, rng, sgn, x_kerb, c1 + u(0.5, 2.0), pole_color)
        if u() < 0.5:  # v2: a mid-block pedestrian light
            zl = u(8, 60)
            if not in_any(zl, crossings, 3.0):
                traffic_light(b, rng, sgn, x_kerb, zl, pole_color)
        for _ in range(int(rng.integers(2, 7))):  # loose signs on the sidewalk, more of them near
            zs = 3 + (z_end - 23) * u() ** 2
            if not in_any(zs, crossings, 1.0):
                sign_pole(b, rng, x_kerb + sgn * u(0, 1.0), zs, pole_color)

    # --- street trees
    for side in (0, 1):
        if u() < 0.55:
            sgn = -1 if side == 0 else 1
            x_t = road[side] + sgn * min(sw_w[side] * u(0.4, 0.7), 2.5)
            spacing = u(7, 20)
            z = u(-10, spacing)
            leaf = _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]
            while z < z_end * u(0.4, 1.0):
                if not in_any(z, crossings, 2.0):
                    tree(b, rng, x_t, z, u(2.2, 4.0), u(1.4, 3.2), jitter(rng, leaf, 0.1), sw_h)
                z += spacing * u(0.8, 1.2)

    # --- vehicles
    footprints = []
    def paint():
        return jitter(rng, _PAINT_COLORS[int(rng.integers(len(_PAINT_COLORS)))], 0.08)

    cam_lane = int(rng.integers(n_lanes))
    cam_x = lane_x0 + (cam_lane + 0.5) * lane_w + u(-0.4, 0.4)
    for side, width_p in ((0, park_l), (1, park_r)):
        if width_p <= 0:
            continue
        x_c = road[side] + (1.15 if side == 0 else -1.15)
        z = u(-12, 0)
        while z < 160:
            length = u(3.8, 5.0)
            if u() > 0.3 and not in_any(z, crossings, 3.0) and not in_any(z + length, crossings, 3.0):
                footprints.append(vehicle(b, rng, x_c, z, length, side == 1, paint(), u() < 0.05))
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
                footprints.append(vehicle(b, rng, x_c, z, length, same_way, paint(), big))
            z += length + u(6, 45)

    # --- pedestrians on sidewalks and zebra crossings
    for _ in range(int(rng.poisson(5))):
        side = int(rng.integers(2))
        x = road[side] + (1 if side else -1) * u(0.5, sw_w[side] - 0.3)
        z = u(1.5, 90)
        person(b, rng, x, z, sw_h, along_z=True)
    for z0, z1 in zebras:
        for _ in range(int(rng.integers(0, 4))):
            person(b, rng, u(road[0] + 0.5, road[1] - 0.5), u(z0 + 0.3, z1 - 0.3), 0.0, along_z=False)

    # --- camera, light, atmosphere
    hfov = math.radians(u(66, 84))
    focal = width / 2 / math.tan(hfov / 2)
    yaw = u(-18, 18) if u() < 0.85 else u(-40, 40)
    rot = rotation(math.radians(yaw), math.radians(u(-6, 2.5)), math.radians(u(-2, 2)))
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

    road_color = jitter(rng, lin(*[(80, 80, 82), (95, 92, 90), (65, 66, 70), (110, 108, 105)][
        int(rng.integers(4))]), 0.1)
    line_color = lin(*[(235, 235, 230), (225, 225, 215)][int(rng.integers(2))])
    centre_color = line_color if u() < 0.7 else lin(230, 180, 30)
    terrain_color = jitter(rng, lin(*[(95, 115, 50), (120, 120, 70), (110, 95, 70)][
        int(rng.integers(3))]), 0.1)
    return Scene(
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
