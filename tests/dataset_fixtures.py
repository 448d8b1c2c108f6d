"""Tiny datasets written in the exact on-disk formats of NYUv2 (LibMTL / MTAN ``.npy``),
Cityscapes official (PNGs + camera json) and Cityscapes MTAN ``.npy`` (tests/ is on sys.path)."""
import json

import numpy as np
from PIL import Image

CAMERA = {"baseline": 0.2, "fx": 2000.0}  # depth = 400 / d metres


def nyuv2_arrays(rng, h, w):
    """One NYUv2 sample as stored: image float32 (H, W, 3) in [0, 1], label float32 (H, W)
    0..12 with -1 void, depth float32 (H, W, 1) metres with 0 invalid, normal float32
    (H, W, 3) unit vectors with all-zero invalid."""
    image = rng.random((h, w, 3)).astype(np.float32)
    label = rng.integers(-1, 13, (h, w)).astype(np.float32)
    depth = rng.uniform(0.5, 9.0, (h, w, 1)).astype(np.float32)
    depth[0, :3] = 0
    normal = rng.normal(size=(h, w, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal = normal.astype(np.float32)
    normal[1, :2] = 0
    return {"image": image, "label": label, "depth": depth, "normal": normal}


def write_nyuv2(root, train=4, val=2, size=(64, 96), seed=0):
    """``{root}/{train,val}/{image,label,depth,normal}/{i}.npy``; returns {split: [arrays]}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", train), ("val", val)):
        written[split] = []
        for sub in ("image", "label", "depth", "normal"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arrays = nyuv2_arrays(rng, *size)
            for sub, arr in arrays.items():
                np.save(root / split / sub / f"{i}.npy", arr)
            written[split].append(arrays)
    return written


def write_cityscapes_mtan(root, classes=(7,), train=4, val=2, size=(64, 128), seed=0):
    """``{root}/{split}/{image,label_C,depth}/{i}.npy`` (depth: stored disparity d/256)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            arrays = {"image": rng.random((h, w, 3)).astype(np.float32),
                      "depth": rng.uniform(0.01, 0.49, (h, w, 1)).astype(np.float32)}
            arrays["depth"][0, :4] = 0
            for c in classes:
                arrays[f"label_{c}"] = rng.integers(-1, c, (h, w)).astype(np.float32)
            for sub, arr in arrays.items():
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                np.save(root / split / sub / f"{i}.npy", arr)


def write_cityscapes_official(root, split="train", city="aachen", n=2, size=(64, 128), seed=0):
    """``leftImg8bit``, ``gtFine`` (labelIds), ``disparity`` (16-bit) and ``camera`` files of
    ``n`` samples ``{city}_000000_{k:06d}``; returns {stem: (rgb, label_ids, disparity)}."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = {}
    for k in range(n):
        stem = f"{city}_000000_{k:06d}"
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
        disp = rng.integers(2, 32258, (h, w)).astype(np.uint16)
        disp[0, :5] = 0
        disp[1, :2] = 1
        for sub, suffix, data in (("leftImg8bit", "_leftImg8bit.png", rgb), ("gtFine", "_gtFine_labelIds.png", ids),
                                  ("disparity", "_disparity.png", disp)):
            folder = root / sub / split / city
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data).save(folder / f"{stem}{suffix}")
        cam = root / "camera" / split / city
        cam.mkdir(parents=True, exist_ok=True)
        (cam / f"{stem}_camera.json").write_text(json.dumps(
            {"extrinsic": {"baseline": CAMERA["baseline"], "pitch": 0.05, "roll": 0.0, "x": 1.7, "y": 0.1,
                           "yaw": 0.007, "z": 1.2},
             "intrinsic": {"fx": CAMERA["fx"], "fy": CAMERA["fx"], "u0": w / 2, "v0": h / 2}}))
        out[stem] = (rgb, ids, disp)
    return out
