"""Ray casting: one ray per pixel against the ground plane, boxes and ellipsoids (vectorised numpy)."""
from __future__ import annotations

import numpy as np

from .constants import (_BOX, _CIRCLE, _CURVED, _DIAMOND, _OCTAGON, _SLATS, _SOLID, _TRIANGLE,
    _YIELD)
from .primitives import Scene


def ray_directions(scene: Scene, height: int, width: int) -> np.ndarray:
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


def _screen_rects(scene: Scene, height: int, width: int):
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


def cast(scene: Scene, d: np.ndarray):
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
