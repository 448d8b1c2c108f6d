"""MiniScapes-layout reader: exact decoding of the MiniScapes encodings, errors, loaders."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastmtl.data import (
    CLASS_COLORS,
    CLASS_NAMES,
    SegDepthFolder,
    build_loader,
    colorize,
    dataset_info,
    decode_miniscapes_depth,
)
from fastmtl.data import folder as folder_module
from fastmtl.transforms import train_transform

H, W = 24, 40


def _disp(v):
    return (1 / 4 - 1 / 300) * (v - 1) / 254 + 1 / 300


def _write_miniscapes(root, split="train", indices=(0, 1, 2), seed=0):
    """Write samples in the exact MiniScapes encodings; returns {index: (rgb, labels, v)}."""
    rng = np.random.default_rng(seed)
    for sub in ("rgb", "semseg", "depth"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    palette = [v for c in CLASS_COLORS for v in c] + [0] * (3 * (256 - len(CLASS_COLORS)))
    truth = {}
    for n, i in enumerate(indices):
        yy, xx = np.mgrid[0:H, 0:W]
        rgb = np.stack([xx * 6, yy * 10, (xx + yy) * 3 + 20 * n], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(root / split / "rgb" / f"{i}.jpg", quality=95)
        labels = rng.integers(0, 19, (H, W)).astype(np.uint8)
        labels[:2] = 255
        if n % 2 == 0:  # palette PNG, as MiniScapes ships it
            img = Image.frombytes("P", (W, H), labels.tobytes())
            img.putpalette(palette)
        else:
            img = Image.fromarray(labels, "L")
        img.save(root / split / "semseg" / f"{i}.png")
        v = rng.integers(0, 256, (H, W)).astype(np.uint8)
        v[0, :3] = (0, 1, 255)
        Image.fromarray(v, "L").save(root / split / "depth" / f"{i}.png")
        truth[i] = (rgb, labels, v)
    return truth


@pytest.fixture
def mini(tmp_path):
    root = tmp_path / "miniscapes"
    return root, _write_miniscapes(root)


def test_decode_formula_end_points():
    d = decode_miniscapes_depth(np.array([[0, 1, 128, 255]], np.uint8))
    assert d.dtype == np.float32 and np.isnan(d[0, 0])
    np.testing.assert_allclose(d[0, 1:], [300.0, 1 / _disp(128.0), 4.0], rtol=1e-6)


def test_miniscapes_samples_decode_exactly(mini):
    root, truth = mini
    ds = SegDepthFolder(root, "train")
    assert ds.kind == "miniscapes" and len(ds) == 3 and ds.indices == [0, 1, 2]
    for j, (i, (rgb, labels, v)) in enumerate(sorted(truth.items())):
        s = ds[j]
        assert s["index"] == i
        assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape == (3, H, W)
        assert (s["rgb"].permute(1, 2, 0).float() - torch.from_numpy(rgb).float()).abs().mean() < 3
        assert s["semseg"].dtype == torch.int64 and torch.equal(s["semseg"], torch.from_numpy(labels).long())
        depth = s["depth"]
        assert depth.dtype == torch.float32 and depth.shape == (1, H, W)
        assert torch.equal(depth[0].isnan(), torch.from_numpy(v == 0))
        expected = 1 / _disp(v[v > 0].astype(np.float64))
        np.testing.assert_allclose(depth[0].numpy()[v > 0], expected, rtol=1e-6)
        assert depth[0, 0, 1] == pytest.approx(300.0) and depth[0, 0, 2] == pytest.approx(4.0)


def test_auto_kind_is_miniscapes_unless_meta_says_synthetic(mini):
    root, _ = mini
    (root / "meta.json").write_text(json.dumps({"format": "something-else"}))
    assert SegDepthFolder(root, "train").kind == "miniscapes"
    with pytest.raises(FileNotFoundError, match="meta.json"):
        SegDepthFolder(root, "train", kind="synthetic")
    with pytest.raises(ValueError, match="auto, synthetic, miniscapes"):
        SegDepthFolder(root, "train", kind="cityscapes")


def test_miniscapes_info_uses_published_stats_and_first_maps_for_log_stats(tmp_path, monkeypatch):
    root = tmp_path / "m"
    truth = _write_miniscapes(root, indices=(10, 2, 9))
    monkeypatch.setattr(folder_module, "MINISCAPES_LOG_STATS_MAPS", 2)
    info = dataset_info(root)
    assert info.num_classes == 19 and info.class_names == CLASS_NAMES and info.ignore_index == 255
    assert info.colors == CLASS_COLORS and info.depth_range == (4.0, 300.0)
    assert info.depth_stats["mean"] == 27.0727 and info.depth_stats["std"] == 29.1264
    # the first two maps by numeric index are 2 and 9 (not "10", which sorts first as text)
    v = np.concatenate([truth[i][2].ravel() for i in (2, 9)])
    logd = np.log(1 / _disp(v[v > 0].astype(np.float64)))
    assert info.depth_stats["log_mean"] == pytest.approx(logd.mean(), rel=1e-5)
    assert info.depth_stats["log_std"] == pytest.approx(logd.std(), rel=1e-5)


def test_missing_root_split_or_folder_are_named(tmp_path, mini):
    root, _ = mini
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SegDepthFolder(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="val"):
        SegDepthFolder(root, "val")
    (root / "train" / "depth").rename(root / "train" / "depth_old")
    with pytest.raises(FileNotFoundError, match="depth"):
        SegDepthFolder(root, "train")


def test_split_must_stay_inside_the_root(mini):
    root, _ = mini
    for bad in ("../miniscapes/train", "train/..", "", ".."):
        with pytest.raises(ValueError, match="split"):
            SegDepthFolder(root, bad)


def test_empty_and_mismatched_splits_are_errors(mini):
    root, _ = mini
    for sub in ("rgb", "semseg", "depth"):
        (root / "test" / sub).mkdir(parents=True)
    with pytest.raises(ValueError, match="no samples"):
        SegDepthFolder(root, "test")
    (root / "train" / "semseg" / "1.png").unlink()
    with pytest.raises(ValueError, match=r"mismatched.*\[1\]"):
        SegDepthFolder(root, "train")


def test_only_numbered_image_files_are_samples(mini):
    root, _ = mini
    (root / "train" / "rgb" / "notes.txt").write_text("x")
    (root / "train" / "rgb" / "3.txt").write_text("x")
    (root / "train" / "depth" / "thumb.png").write_bytes(b"")
    assert SegDepthFolder(root, "train").indices == [0, 1, 2]


def test_unexpected_png_mode_names_the_file(mini):
    root, _ = mini
    Image.new("RGB", (W, H)).save(root / "train" / "semseg" / "2.png")
    ds = SegDepthFolder(root, "train")
    with pytest.raises(ValueError, match=r"semseg.2\.png.*RGB"):
        ds[2]


def test_colorize_maps_train_ids_to_cityscapes_colours():
    out = colorize(np.array([[0, 10, 18, 255]]))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0].tolist() == [list(CLASS_COLORS[0]), list(CLASS_COLORS[10]), list(CLASS_COLORS[18]), [0, 0, 0]]


def _batches(loader):
    return [(b["index"].tolist(), b["rgb"].clone(), b["depth"].clone()) for b in loader]


def test_loader_order_and_augmentation_reproducible_with_workers(tmp_path):
    root = tmp_path / "m"
    _write_miniscapes(root, indices=range(6))
    ds = SegDepthFolder(root, "train", transform=train_transform(16, color_jitter=0.3))
    runs = []
    for seed in (5, 5, 6):
        loader = build_loader(ds, batch_size=2, shuffle=True, workers=2, seed=seed, drop_last=True)
        assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
        runs.append(_batches(loader))
    (a, b, c) = runs
    assert [x[0] for x in a] == [x[0] for x in b]
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[2].isnan(), y[2].isnan()) for x, y in zip(a, b))
    assert [x[0] for x in a] != [x[0] for x in c]
    assert a[0][1].shape == (2, 3, 16, 16) and a[0][1].dtype == torch.float32


def test_loader_in_process_order_depends_on_seed_only(mini):
    root, _ = mini
    ds = SegDepthFolder(root, "train")
    orders = [[b["index"].tolist() for b in build_loader(ds, 1, True, 0, seed)] for seed in (1, 1)]
    assert orders[0] == orders[1] and sorted(sum(orders[0], [])) == [0, 1, 2]
    unshuffled = [b["index"].tolist() for b in build_loader(ds, 3, False, 0, 1)]
    assert unshuffled == [[0, 1, 2]]
