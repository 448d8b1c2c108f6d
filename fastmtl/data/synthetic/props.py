"""Street furniture, vegetation, vehicles and people, each added to a :class:`Builder`."""
from __future__ import annotations

from typing import Tuple

from .constants import (BUS, CAR, FENCE, LIGHT, PERSON, POLE, SIGN, TRUCK, VEGETATION, WALL, _BARK,
    _CABIN, _CLOTH, _CONCRETE, _FOLIAGE, _FOLIAGE_COLORS, _METAL, _PAINT, _SIGNFACE, _SIGN_TYPES,
    _SKIN, _SLATS, _SOLID, _TIRE, _TLIGHT, jitter, lin)
from .primitives import Builder


def lot(b: Builder, rng, sgn: int, x_sw: float, z0: float, z1: float) -> None:
    """An open lot between buildings: trees on terrain, maybe a fence or wall at the front."""
    u = rng.uniform
    kind = u()
    if kind < 0.35:
        xa, xb = sorted((x_sw + sgn * 0.1, x_sw + sgn * 0.16))
        b.box((xa, 0, z0), (xb, u(1.0, 2.2), z1), _METAL, FENCE,
              jitter(rng, lin(*[(90, 90, 95), (120, 90, 60), (60, 70, 60)][int(rng.integers(3))])),
              (u(0.12, 0.3), u(0.25, 0.6)), _SLATS)
    elif kind < 0.6:
        xa, xb = sorted((x_sw + sgn * 0.1, x_sw + sgn * 0.4))
        b.box((xa, 0, z0), (xb, u(0.6, 2.5), z1), _CONCRETE, WALL,
              jitter(rng, lin(*[(160, 155, 145), (140, 80, 60), (120, 120, 115)][int(rng.integers(3))])))
    leaf = _FOLIAGE_COLORS[int(rng.integers(len(_FOLIAGE_COLORS)))]
    for _ in range(int(rng.integers(1, 4))):
        tree(b, rng, x_sw + sgn * u(3, 12), u(z0, z1), u(2.5, 5), u(2.5, 5), jitter(rng, leaf, 0.1), 0)


def tree(b: Builder, rng, x, z, trunk_h, crown_r, leaf, base) -> None:
    u = rng.uniform
    tw = u(0.2, 0.4)
    b.box((x - tw / 2, base, z - tw / 2), (x + tw / 2, base + trunk_h + crown_r * 0.5, z + tw / 2),
          _BARK, VEGETATION, jitter(rng, lin(85, 70, 55)))
    cy = base + trunk_h + crown_r * 0.8
    for _ in range(int(rng.integers(3, 6))):
        r = crown_r * u(0.55, 0.85)
        b.ellipsoid((x + u(-0.5, 0.5) * crown_r, cy + u(-0.3, 0.4) * crown_r, z + u(-0.5, 0.5) * crown_r),
                    (r, r * u(0.8, 1.1), r), _FOLIAGE, VEGETATION, jitter(rng, leaf, 0.08))


def lamp_post(b: Builder, rng, sgn, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.14, 0.26), u(6, 9.5)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    arm = u(0.8, 2.5)
    xa, xb = sorted((x, x - sgn * arm))
    b.box((xa, h - 0.12, z - 0.05), (xb, h, z + 0.05), _METAL, POLE, color)
    xl = x - sgn * arm
    b.box((xl - 0.3, h - 0.25, z - 0.15), (xl + 0.3, h - 0.05, z + 0.15), _METAL, POLE, color)
    if u() < 0.3:
        sign(b, rng, x, u(2.2, 3.0), z - pw / 2 - 0.03, u(0.5, 0.8))


def sign_pole(b: Builder, rng, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.06, 0.12), u(2.6, 3.8)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    size = u(0.5, 0.9)
    sign(b, rng, x, h - size / 2 - 0.05, z - pw / 2 - 0.03, size)
    if u() < 0.35:
        sign(b, rng, x, h - size * 1.6 - 0.1, z - pw / 2 - 0.03, size * 0.8)


def sign(b: Builder, rng, x, y, z, size) -> None:
    """A sign facing the camera (-z) centred at (x, y), ``size`` metres across."""
    shape, border, inner, symbol = _SIGN_TYPES[int(rng.integers(len(_SIGN_TYPES)))]
    w = size * (rng.uniform(1.0, 1.8) if shape == _SOLID else 1.0)
    b.box((x - w / 2, y - size / 2, z - 0.03), (x + w / 2, y + size / 2, z), _SIGNFACE, SIGN, inner,
          tuple(border) + (float(symbol),), shape)


def traffic_light(b: Builder, rng, sgn, x, z, color) -> None:
    u = rng.uniform
    pw, h = u(0.12, 0.2), u(3.0, 4.2)
    b.box((x - pw / 2, 0, z - pw / 2), (x + pw / 2, h, z + pw / 2), _METAL, POLE, color)
    state = float(rng.integers(3))
    b.box((x - 0.17, h - 0.95, z - pw / 2 - 0.3), (x + 0.17, h, z - pw / 2), _TLIGHT, LIGHT,
          lin(30, 30, 30), (state,))
    if u() < 0.5:  # overhead arm with a second light above the road
        arm = u(3, 6)
        ha = h + u(1.2, 2.2)
        b.box((x - pw / 2, h, z - pw / 2), (x + pw / 2, ha, z + pw / 2), _METAL, POLE, color)
        xa, xb = sorted((x, x - sgn * arm))
        b.box((xa, ha - 0.15, z - 0.07), (xb, ha, z + 0.07), _METAL, POLE, color)
        xl = x - sgn * arm * u(0.6, 0.95)
        b.box((xl - 0.17, ha - 1.1, z - 0.4), (xl + 0.17, ha - 0.15, z - 0.1), _TLIGHT, LIGHT,
              lin(30, 30, 30), (state,))
    if u() < 0.5:
        sign(b, rng, x, h - 1.6, z - pw / 2 - 0.03, u(0.5, 0.7))


def vehicle(b: Builder, rng, x, z, length, same_way, paint, big) -> Tuple[float, ...]:
    """A car (or bus/truck when ``big``) centred at ``x`` whose rear (camera side) is at ``z``."""
    u = rng.uniform
    if big:
        width, height = u(2.3, 2.6), u(2.8, 3.4)
        cls = BUS if u() < 0.5 else TRUCK
        b.box((x - width / 2, 0.35, z), (x + width / 2, height, z + length), _PAINT, cls, paint,
              (float(same_way), 1.0))
        for zw in (z + 1.5, z + length - 2.0):
            b.box((x - width / 2 + 0.05, 0, zw - 0.5), (x + width / 2 - 0.05, 0.9, zw + 0.5), _TIRE,
                  cls, lin(20, 20, 20))
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
              lin(22, 22, 24))
    return (x - width / 2, x + width / 2, z, z + length)


def person(b: Builder, rng, x, z, base, along_z) -> None:
    u = rng.uniform
    s = u(1.5, 1.95) / 1.75
    skin = lin(*[(230, 190, 160), (190, 140, 100), (120, 80, 55), (240, 200, 175)][int(rng.integers(4))])
    top = lin(*rng.integers(20, 230, 3))
    legs = lin(*rng.integers(15, 120, 3))
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
