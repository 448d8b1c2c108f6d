"""The procedural street-scene generator: determinism, on-disk format, content, atomicity."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastmtl.data import (
    CLASS_COLORS,
    CLASS_NAMES,
    DEPTH_RANGE,
    GENERATOR_VERSION,
    SegDepthFolder,
    dataset_info,
    default_data_root,
    ensure_default_dataset,
    generate_dataset,
    render_sample,
)
from fastmtl.data import synthetic

SIZE = (32, 64)
SKY, POLE, SIGN = 10, 5, 7


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _make(root, seed=7, workers=1):
    return generate_dataset(root, train=4, val=2, size=SIZE, seed=seed, workers=workers, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("synthetic") / "set")


def test_same_arguments_give_byte_identical_files(tiny, tmp_path):
    assert _tree_bytes(_make(tmp_path / "again")) == _tree_bytes(tiny)


def test_worker_count_does_not_change_any_byte(tiny, tmp_path):
    assert _tree_bytes(_make(tmp_path / "two", workers=2)) == _tree_bytes(tiny)


def test_another_seed_gives_other_images(tiny, tmp_path):
    other = _make(tmp_path / "other", seed=8)
    assert (other / "train/rgb/0.png").read_bytes() != (tiny / "train/rgb/0.png").read_bytes()


def test_layout_and_png_modes(tiny):
    for split, n in (("train", 4), ("val", 2)):
        for sub, mode in (("rgb", "RGB"), ("semseg", "L"), ("depth", "I;16"), ("normals", "RGB")):
            folder = tiny / split / sub
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.png" for i in range(n))
            for i in range(n):
                with Image.open(folder / f"{i}.png") as img:
                    assert img.format == "PNG" and img.mode == mode
                    assert img.size == (SIZE[1], SIZE[0])


def test_meta_json_fields_and_depth_stats(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["format"] == "fastmtl-synthetic" and meta["version"] == GENERATOR_VERSION
    assert meta["classes"] == list(CLASS_NAMES) and len(meta["classes"]) == 19
    assert meta["colors"] == [list(c) for c in CLASS_COLORS]
    assert meta["ignore_index"] == 255
    assert meta["depth_encoding"] == {"type": "uint16", "scale": 1 / 256, "invalid": 0}
    assert meta["depth_range"] == list(DEPTH_RANGE)
    assert (meta["size"], meta["seed"], meta["train"], meta["val"]) == ([32, 64], 7, 4, 2)
    # statistics over the valid pixels of the train split only
    d = np.concatenate([np.array(Image.open(tiny / f"train/depth/{i}.png")).ravel() for i in range(4)])
    d = d[d > 0].astype(np.float64) / 256
    stats = meta["depth_stats"]
    assert stats["mean"] == pytest.approx(d.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(d.std(), rel=1e-6)
    assert stats["log_mean"] == pytest.approx(np.log(d).mean(), rel=1e-9)
    assert stats["log_std"] == pytest.approx(np.log(d).std(), rel=1e-6)


def test_depth_valid_exactly_where_not_sky(tiny):
    lo, hi = (round(v * 256) for v in DEPTH_RANGE)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            labels = np.array(Image.open(tiny / f"{split}/semseg/{i}.png"))
            depth = np.array(Image.open(tiny / f"{split}/depth/{i}.png"))
            assert (labels < 19).all()
            assert ((depth > 0) == (labels != SKY)).all()
            valid = depth[depth > 0]
            assert valid.min() >= lo and valid.max() <= hi


def test_scenes_contain_the_street_classes_and_thin_objects_at_many_distances():
    present, pole_depths, sign_depths = set(), [], []
    for i in range(4):
        rgb, labels, depth, _ = render_sample(0, "train", i, (128, 256))
        assert rgb.shape == (128, 256, 3) and rgb.dtype == np.uint8
        assert labels.dtype == np.uint8 and depth.dtype == np.float32
        present |= set(np.unique(labels).tolist())
        pole_depths.append(depth[labels == POLE])
        sign_depths.append(depth[labels == SIGN])
    assert {0, 1, 2, POLE, SIGN, 8, SKY, 13} <= present
    poles, signs = np.concatenate(pole_depths), np.concatenate(sign_depths)
    assert poles.min() < 25 and poles.max() > 100
    assert signs.min() < 30 and signs.max() > 100


def test_rendering_depends_only_on_seed_split_and_index():
    a = render_sample(3, "val", 5, SIZE)
    b = render_sample(3, "val", 5, SIZE)
    c = render_sample(3, "train", 5, SIZE)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    real, calls = synthetic.writer._write_sample, []

    def flaky(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synthetic.writer, "_write_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "out", train=4, val=1, size=SIZE, workers=1, progress=False)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out"):
        generate_dataset(out, train=1, val=0, size=SIZE, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "keep.txt").read_text() == "mine"


def test_default_root_follows_the_cache_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMTL_CACHE", str(tmp_path / "c"))
    root = default_data_root()
    assert root.parent == tmp_path / "c"
    assert f"v{GENERATOR_VERSION}" in root.name and "128x256" in root.name
    monkeypatch.delenv("FASTMTL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root().parent == tmp_path / "xdg" / "fastmtl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_root().parent == tmp_path / "home" / ".cache" / "fastmtl"


def test_ensure_default_dataset_generates_only_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMTL_CACHE", str(tmp_path))
    calls = []

    def fake_generate(out, progress=True):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "meta.json").write_text("{}")
        return out

    monkeypatch.setattr(synthetic.writer, "generate_dataset", fake_generate)
    first = ensure_default_dataset(progress=False)
    second = ensure_default_dataset(progress=False)
    assert first == second == default_data_root()
    assert calls == [first]


def test_folder_reader_decodes_the_synthetic_set(tiny):
    ds = SegDepthFolder(tiny, "val")
    assert ds.kind == "synthetic" and len(ds) == 2
    sample = ds[1]
    raw = np.array(Image.open(tiny / "val/depth/1.png"))
    labels = np.array(Image.open(tiny / "val/semseg/1.png"))
    rgb = np.array(Image.open(tiny / "val/rgb/1.png"))
    assert sample["index"] == 1
    assert sample["rgb"].dtype == torch.uint8 and torch.equal(sample["rgb"], torch.from_numpy(rgb).permute(2, 0, 1))
    assert sample["semseg"].dtype == torch.int64 and torch.equal(sample["semseg"], torch.from_numpy(labels).long())
    depth = sample["depth"]
    assert depth.dtype == torch.float32 and depth.shape == (1, *SIZE)
    assert torch.equal(depth[0].isnan(), torch.from_numpy(raw == 0))
    assert torch.equal(depth[0][raw > 0], torch.from_numpy(raw[raw > 0] / 256).float())
    info = dataset_info(tiny)
    meta = json.loads((tiny / "meta.json").read_text())
    assert info.num_classes == 19 and info.depth_range == DEPTH_RANGE
    assert info.depth_stats == meta["depth_stats"]
    assert all(math.isfinite(v) and v > 0 for v in info.depth_stats.values())


def _camera_rays(seed, split, index, size):
    """Camera-space ray directions (H, W, 3) with z = 1 (x right, y down), from the scene's focal."""
    from fastmtl.data.synthetic.render import split_code
    from fastmtl.data.synthetic.scene import build_scene
    height, width = size
    scene = build_scene(np.random.default_rng(np.random.SeedSequence([seed, split_code(split), index])), width)
    u = (np.arange(width) + 0.5 - width / 2) / scene.focal
    v = (np.arange(height) + 0.5 - height / 2) / scene.focal
    return np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), -1)


@pytest.mark.parametrize("index", [0, 3])
def test_normals_are_unit_face_the_camera_and_match_the_depth_geometry(index):
    """Independent check: normals from finite differences of the back-projected depth map."""
    size = (96, 192)
    rgb, labels, depth, normals = render_sample(0, "train", index, size)
    assert normals.shape == size + (3,) and normals.dtype == np.float32
    hit = labels != SKY
    norm = np.linalg.norm(normals, axis=-1)
    assert np.allclose(norm[hit], 1, atol=1e-5) and (norm[~hit] == 0).all()
    rays = _camera_rays(0, "train", index, size)
    assert ((normals * rays).sum(-1)[hit] < 0).all()  # every visible surface faces the camera
    road = labels == 0
    assert (normals[road][:, 1] < -0.9).all()  # the ground's normal points up (y down)
    pts = rays * depth[..., None]
    du, dv = pts[:-1, 1:] - pts[:-1, :-1], pts[1:, :-1] - pts[:-1, :-1]
    fd = np.cross(dv, du)
    fd /= np.linalg.norm(fd, axis=-1, keepdims=True) + 1e-12
    d0 = depth[:-1, :-1]
    same = ((labels[:-1, :-1] == labels[:-1, 1:]) & (labels[:-1, :-1] == labels[1:, :-1]) & hit[:-1, :-1]
            & (np.abs(depth[:-1, 1:] - d0) < 0.01 * d0) & (np.abs(depth[1:, :-1] - d0) < 0.01 * d0)
            & (d0 < 200))
    assert same.sum() > 1000
    cos = np.clip(np.abs((fd * normals[:-1, :-1]).sum(-1))[same], 0, 1)
    angle = np.degrees(np.arccos(cos))
    # exact inside faces; the tail is pixels straddling two faces/primitives of one class
    assert np.median(angle) < 0.1 and (angle < 2.0).mean() > 0.8, np.percentile(angle, [50, 80, 90])


def test_normals_on_disk_decode_to_the_rendered_normals(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    enc = meta["normals_encoding"]
    assert enc["invalid"] == [0, 0, 0] and "y down" in enc["frame"]
    size = tuple(meta["size"])
    for i in range(2):
        _, labels, _, normals = render_sample(meta["seed"], "val", i, size)
        img = Image.open(tiny / f"val/normals/{i}.png")
        assert img.mode == "RGB"
        v = np.array(img)
        invalid = (v == 0).all(-1)
        assert np.array_equal(invalid, labels == SKY)
        n = v.astype(np.float64) * enc["scale"] + enc["offset"]
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
        cos = (n * normals).sum(-1)[~invalid]
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.6
