"""Bad input never gives a silent wrong result: broken files, policies, paths, meta.json."""
import io
import json
import math
import os
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from fastmtl.data import (
    CLASS_COLORS,
    CLASS_NAMES,
    ON_BAD_SAMPLE,
    BadSampleError,
    BadSampleWarning,
    SegDepthFolder,
    collate_skip_bad,
    dataset_info,
)
from fastmtl.data import folder as folder_module
from fastmtl.tasks.depth import DepthNormalizer

H, W = 6, 10
LABELS = (np.arange(H * W).reshape(H, W) % 19).astype(np.uint8)
LABELS[0, 0] = 255
SYNTH_SCALE = 1 / 256


def _rgb(n=0):
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 20, yy * 30, xx + yy + 10 * n], -1).astype(np.uint8)


def write_mini(root, split="train", n=3):
    """A tiny MiniScapes-encoded split: rgb JPG, semseg L, depth 8-bit inverse depth."""
    for sub in ("rgb", "semseg", "depth"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_rgb(i), "RGB").save(root / split / "rgb" / f"{i}.jpg", quality=95)
        Image.fromarray(LABELS, "L").save(root / split / "semseg" / f"{i}.png")
        v = np.full((H, W), 128, np.uint8)
        v[0, 0] = 0
        Image.fromarray(v, "L").save(root / split / "depth" / f"{i}.png")
    return root


def synth_meta(**override):
    meta = {
        "format": "fastmtl-synthetic", "classes": list(CLASS_NAMES),
        "colors": [list(c) for c in CLASS_COLORS], "ignore_index": 255,
        "depth_encoding": {"type": "uint16", "scale": SYNTH_SCALE, "invalid": 0},
        "depth_range": [1.0, 250.0],
        "depth_stats": {"mean": 20.0, "std": 15.0, "log_mean": 2.5, "log_std": 0.8},
    }
    meta.update(override)
    return meta


def write_synth(root, n=2, meta=None, depth_raw=2560):
    """A tiny synthetic-format split: rgb PNG, semseg L, depth uint16 = metres * 256."""
    for sub in ("rgb", "semseg", "depth"):
        (root / "train" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_rgb(i), "RGB").save(root / "train" / "rgb" / f"{i}.png")
        Image.fromarray(LABELS, "L").save(root / "train" / "semseg" / f"{i}.png")
        q = np.full((H, W), depth_raw, np.uint16)
        q[0, 0] = 0
        Image.fromarray(q).save(root / "train" / "depth" / f"{i}.png")
    (root / "meta.json").write_text(json.dumps(meta if meta is not None else synth_meta()))
    return root


@pytest.fixture
def mini(tmp_path):
    return write_mini(tmp_path / "mini")


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _jpg_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# bad samples under both policies
# ------------------------------------------------------------------------------------------
def _not_an_image(root):
    (root / "train/rgb/1.jpg").write_bytes(b"this is not a picture\n" * 10)
    return "rgb/1.jpg", "not a JPEG or PNG image"


def _truncated_jpg(root):
    data = _jpg_bytes(_rgb())
    (root / "train/rgb/1.jpg").write_bytes(data[: len(data) // 2])
    return "rgb/1.jpg", "truncated"


def _truncated_png_semseg(root):
    data = _png_bytes(np.random.default_rng(0).integers(0, 19, (H, W)).astype(np.uint8), "L")
    (root / "train/semseg/1.png").write_bytes(data[: len(data) // 2])
    return "semseg/1.png", "truncated"


def _png_without_end(root):  # pixel data complete, only the IEND chunk cut off
    data = _png_bytes(np.full((H, W), 128, np.uint8), "L")
    (root / "train/depth/1.png").write_bytes(data[:-12])
    return "depth/1.png", "no IEND"


def _semseg_size(root):
    Image.fromarray(LABELS[:, :-1].copy(), "L").save(root / "train/semseg/1.png")
    return "semseg/1.png", f"size (H, W) = ({H}, {W - 1}) differs from rgb 1.jpg ({H}, {W})"


def _depth_size(root):
    Image.fromarray(np.full((H + 1, W), 9, np.uint8), "L").save(root / "train/depth/1.png")
    return "depth/1.png", f"size (H, W) = ({H + 1}, {W}) differs"


def _labels_out_of_range(root):
    labels = LABELS.copy()
    labels[1, 1], labels[2, 2] = 19, 200
    Image.fromarray(labels, "L").save(root / "train/semseg/1.png")
    return "semseg/1.png", "2 pixel(s) with labels out of range (19, 200); expected 0..18 or 255"


def _semseg_16bit_over_255(root):
    labels = LABELS.astype(np.uint16)
    labels[3, 3] = 300
    Image.fromarray(labels).save(root / "train/semseg/1.png")
    return "semseg/1.png", "1 pixel(s) with labels out of range (300)"


def _semseg_is_jpeg(root):  # lossy labels must not be accepted, whatever the name says
    (root / "train/semseg/1.png").write_bytes(_jpg_bytes(np.stack([LABELS] * 3, -1)))
    return "semseg/1.png", "not a PNG image"


def _semseg_rgb(root):
    Image.fromarray(np.stack([LABELS] * 3, -1), "RGB").save(root / "train/semseg/1.png")
    return "semseg/1.png", "got RGB"


def _rgb_16bit(root):
    Image.fromarray(np.full((H, W), 40000, np.uint16)).save(root / "train/rgb/1.jpg", "PNG")
    return "rgb/1.jpg", "unsupported image mode I;16"


def _depth_16bit_for_miniscapes(root):
    Image.fromarray(np.full((H, W), 300, np.uint16)).save(root / "train/depth/1.png")
    return "depth/1.png", "expected a 8-bit grey PNG (mode L), got mode I;16"


def _deleted_after_listing(root):
    return "depth/1.png", "file not found"


BAD_CASES = [_not_an_image, _truncated_jpg, _truncated_png_semseg, _png_without_end, _semseg_size,
             _depth_size, _labels_out_of_range, _semseg_16bit_over_255, _semseg_is_jpeg, _semseg_rgb,
             _rgb_16bit, _depth_16bit_for_miniscapes, _deleted_after_listing]


@pytest.mark.parametrize("make_bad", BAD_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_sample_error_and_skip(mini, make_bad):
    rel, reason = make_bad(mini)
    path = mini / "train" / rel
    ds_err = SegDepthFolder(mini, "train")
    ds_skip = SegDepthFolder(mini, "train", on_bad_sample="skip")
    if make_bad is _deleted_after_listing:
        path.unlink()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False

    with pytest.raises(BadSampleError) as info:
        ds_err[1]
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and reason in str(err)
    assert err.path == path and err.index == 1 and reason in err.reason
    for j in (0, 2):  # the good samples around it still load
        assert ds_err[j]["index"] == j

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert ds_skip[1] is None
        assert ds_skip[1] is None  # warned once per file, not per access
        assert ds_skip[0]["semseg"].shape == (H, W)
    bad = [w for w in rec if issubclass(w.category, BadSampleWarning)]
    assert len(bad) == 1 and len(rec) == 1
    assert str(path) in str(bad[0].message) and reason in str(bad[0].message)


def test_policy_names_and_validation(mini):
    assert ON_BAD_SAMPLE == ("error", "skip")
    assert SegDepthFolder(mini, "train").on_bad_sample == "error"
    with pytest.raises(ValueError, match="on_bad_sample 'ignore'; choose one of error, skip"):
        SegDepthFolder(mini, "train", on_bad_sample="ignore")


def test_error_keeps_its_parts_through_pickle_and_loader_workers(mini):
    _truncated_jpg(mini)
    err = BadSampleError("broken", mini / "x.png", 7)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.reason, back.path, back.index, str(back)) == (
        BadSampleError, "broken", mini / "x.png", 7, f"{mini / 'x.png'}: broken")
    loader = DataLoader(SegDepthFolder(mini, "train"), batch_size=3, num_workers=1)
    with pytest.raises(BadSampleError, match=r"rgb.1\.jpg: rgb: corrupt or truncated"):
        next(iter(loader))


def test_collate_skip_bad_counts_and_drops_none(mini):
    _not_an_image(mini)
    ds = SegDepthFolder(mini, "train", on_bad_sample="skip")
    with pytest.warns(BadSampleWarning, match=r"rgb.1\.jpg"):
        batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_skip_bad))
    assert [b["skipped"] for b in batches] == [1, 0]
    assert [b["index"].tolist() for b in batches] == [[0], [2]]
    assert batches[0]["rgb"].shape == (1, 3, H, W) and batches[0]["depth"].dtype == torch.float32
    good = ds[0]
    assert collate_skip_bad([None, None]) == {"skipped": 2}
    assert collate_skip_bad([]) == {"skipped": 0}
    out = collate_skip_bad([good, None, good])
    assert out["skipped"] == 2 - 1 and out["semseg"].shape == (2, H, W)
    with pytest.raises(TypeError, match="dict samples"):
        collate_skip_bad([torch.zeros(2), None])


def test_transform_runs_only_on_good_samples(mini):
    _labels_out_of_range(mini)
    seen = []
    ds = SegDepthFolder(mini, "train", transform=lambda s: seen.append(s["index"]) or s,
                        on_bad_sample="skip")
    with pytest.warns(BadSampleWarning):
        out = [ds[j] for j in range(3)]
    assert out[1] is None and seen == [0, 2]


# ------------------------------------------------------------------------------------------
# depth
# ------------------------------------------------------------------------------------------
def test_depth_without_valid_pixels_is_a_warning_free_nan_map(tmp_path):
    mini = write_mini(tmp_path / "m", n=2)
    Image.fromarray(np.zeros((H, W), np.uint8), "L").save(mini / "train/depth/1.png")
    synth = write_synth(tmp_path / "s", n=2)
    Image.fromarray(np.zeros((H, W), np.uint16)).save(synth / "train/depth/1.png")
    for root in (mini, synth):
        for policy in ON_BAD_SAMPLE:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                s = SegDepthFolder(root, "train", on_bad_sample=policy)[1]
            assert s["depth"].shape == (1, H, W) and bool(s["depth"].isnan().all())
            assert SegDepthFolder(root, "train")[0]["depth"].isnan().sum() == 1  # raw 0 -> NaN


def test_synthetic_depth_decodes_and_overflow_to_inf_is_bad(tmp_path):
    root = write_synth(tmp_path / "s", n=2)
    s = SegDepthFolder(root, "train")[1]
    assert s["depth"][0, 1, 1] == pytest.approx(10.0) and s["depth"][0, 0, 0].isnan()
    big = write_synth(tmp_path / "big", n=2, meta=synth_meta(
        depth_encoding={"type": "uint16", "scale": 1e36, "invalid": 0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow RuntimeWarning on the way
        with pytest.raises(BadSampleError, match=r"depth.0\.png: depth: 59 pixel\(s\) decode to "
                                                 r"invalid depth .*inf: 59"):
            SegDepthFolder(big, "train")[0]


@pytest.mark.parametrize("value, what", [(-3.0, "negative or zero: 1"), (0.0, "negative or zero: 1"),
                                         (math.nan, "NaN: 1"), (math.inf, "inf: 1")])
def test_decoded_depth_must_be_finite_and_positive(mini, monkeypatch, value, what):
    real = folder_module.decode_miniscapes_depth

    def broken(v):
        d = real(v)
        d[2, 3] = value  # a pixel whose raw value is valid (128)
        return d
    monkeypatch.setattr(folder_module, "decode_miniscapes_depth", broken)
    with pytest.raises(BadSampleError, match=r"depth.0\.png: depth: 1 pixel\(s\) decode to invalid "
                                             rf"depth \(.*{re.escape(what)}"):
        SegDepthFolder(mini, "train")[0]
    with pytest.warns(BadSampleWarning, match=re.escape(what)):
        assert SegDepthFolder(mini, "train", on_bad_sample="skip")[0] is None


def test_log_stats_respect_the_policy(tmp_path):
    root = write_mini(tmp_path / "m", n=3)
    (root / "train/depth/0.png").write_bytes(b"garbage")
    with pytest.raises(BadSampleError, match=r"depth.0\.png"):
        dataset_info(root)
    with pytest.warns(BadSampleWarning, match=r"depth statistics skip sample 0"):
        info = dataset_info(root, on_bad_sample="skip")
    d = 1 / ((1 / 4 - 1 / 300) * 127 / 254 + 1 / 300)  # every valid raw value is 128
    assert info.depth_stats["log_mean"] == pytest.approx(math.log(d), rel=1e-6)
    assert info.depth_stats["log_std"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------
# image modes
# ------------------------------------------------------------------------------------------
def test_rgb_modes_are_converted_to_rgb(mini):
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 3
    Image.fromarray(grey, "L").save(mini / "train/rgb/0.jpg", "PNG")
    rgba = np.dstack([_rgb(1), np.full((H, W), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(mini / "train/rgb/1.jpg", "PNG")
    pal = Image.fromarray(np.tile(np.array([0, 1, 2], np.uint8), (H, 4))[:, :W], "L").convert("P")
    pal.putpalette([10, 20, 30, 200, 100, 0, 5, 250, 5] + [0] * (3 * 253))
    pal.save(mini / "train/rgb/2.jpg", "PNG", transparency=bytes([0, 255, 128]))
    ds = SegDepthFolder(mini, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns on palette-with-transparency -> RGB directly
        s0, s1, s2 = ds[0], ds[1], ds[2]
    for s in (s0, s1, s2):
        assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape == (3, H, W)
    assert torch.equal(s0["rgb"], torch.from_numpy(grey)[None].expand(3, H, W))
    assert torch.equal(s1["rgb"], torch.from_numpy(_rgb(1)).permute(2, 0, 1))  # alpha dropped
    assert s2["rgb"][:, 0, :3].T.tolist() == [[10, 20, 30], [200, 100, 0], [5, 250, 5]]


def test_cmyk_jpeg_is_converted(mini):
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(mini / "train/rgb/0.jpg", quality=100)
    rgb = SegDepthFolder(mini, "train")[0]["rgb"]
    assert rgb.shape == (3, H, W) and (rgb[0] > 240).all() and (rgb[1:] < 15).all()


def test_semseg_palette_and_16bit_labels_are_accepted(mini):
    p = Image.frombytes("P", (W, H), LABELS.tobytes())
    p.putpalette([v for c in CLASS_COLORS for v in c] + [0] * (3 * (256 - 19)))
    p.save(mini / "train/semseg/0.png")
    Image.fromarray(LABELS.astype(np.uint16)).save(mini / "train/semseg/1.png")
    ds = SegDepthFolder(mini, "train")
    for j in (0, 1, 2):
        assert ds[j]["semseg"].dtype == torch.int64
        assert torch.equal(ds[j]["semseg"], torch.from_numpy(LABELS).long())


# ------------------------------------------------------------------------------------------
# listing-time problems
# ------------------------------------------------------------------------------------------
def test_incomplete_triple_errors_or_is_left_out(tmp_path):
    root = write_mini(tmp_path / "m", n=6)
    (root / "train/depth/5.png").unlink()
    with pytest.raises(BadSampleError, match=r"mismatched samples .*\[5\].*depth.5\.png: missing "
                                             r"file of sample 5: depth/5\.png not found but rgb, semseg"):
        SegDepthFolder(root, "train")
    with pytest.warns(BadSampleWarning, match=r"skipping 1 incomplete sample.*depth.5\.png"):
        ds = SegDepthFolder(root, "train", on_bad_sample="skip")
    assert ds.indices == [0, 1, 2, 3, 4] and len(ds) == 5 and list(ds.incomplete) == [5]
    assert [ds[j]["index"] for j in range(len(ds))] == [0, 1, 2, 3, 4]


def test_wrong_extension_and_duplicates_are_named(tmp_path):
    root = write_mini(tmp_path / "m", n=3)
    (root / "train/depth/2.png").rename(root / "train/depth/2.jpg")
    with pytest.raises(BadSampleError, match=r"found 2\.jpg, but depth files must be png"):
        SegDepthFolder(root, "train")
    (root / "train/depth/2.jpg").rename(root / "train/depth/2.png")
    Image.fromarray(_rgb(), "RGB").save(root / "train/rgb/01.png")
    with pytest.raises(BadSampleError, match=r"two files for index 1 in .*rgb: 01\.png, 1\.jpg"):
        SegDepthFolder(root, "train")
    with pytest.warns(BadSampleWarning, match="two files for index 1"):
        assert SegDepthFolder(root, "train", on_bad_sample="skip").indices == [0, 2]


def test_only_incomplete_samples_under_skip_is_an_error(tmp_path):
    root = write_mini(tmp_path / "m", n=2)
    for i in (0, 1):
        (root / f"train/semseg/{i}.png").unlink()
    with pytest.warns(BadSampleWarning, match="skipping 2 incomplete"):
        with pytest.raises(ValueError, match=r"no complete samples in .*train"):
            SegDepthFolder(root, "train", on_bad_sample="skip")


@pytest.mark.parametrize("policy", ON_BAD_SAMPLE)
def test_structural_problems_name_the_path(tmp_path, policy):
    root = write_mini(tmp_path / "m", n=1)
    with pytest.raises(FileNotFoundError, match=f"dataset root not found.*{tmp_path / 'nowhere'}"):
        SegDepthFolder(tmp_path / "nowhere", "train", on_bad_sample=policy)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match=f"not a folder.*{tmp_path / 'afile'}"):
        SegDepthFolder(tmp_path / "afile", "train", on_bad_sample=policy)
    with pytest.raises(FileNotFoundError, match=rf"split folder not found: {root / 'val'} \(found: train\)"):
        SegDepthFolder(root, "val", on_bad_sample=policy)
    for sub in ("rgb", "semseg", "depth"):
        (root / "test" / sub).mkdir(parents=True)
    (root / "test/rgb/readme.txt").write_text("x")
    (root / "test/rgb/1.png.bak").write_text("x")
    (root / "test/rgb/\u0663.png").write_bytes(_png_bytes(_rgb()))  # Arabic-Indic digit three
    with pytest.raises(ValueError, match=f"no samples in {root / 'test'}"):
        SegDepthFolder(root, "test", on_bad_sample=policy)
    (root / "test/depth").rmdir()
    with pytest.raises(FileNotFoundError, match=f"missing folder {root / 'test' / 'depth'}"):
        SegDepthFolder(root, "test", on_bad_sample=policy)


# ------------------------------------------------------------------------------------------
# paths stay inside the root
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["../m/train", "train/..", "a/b", "..", ".", "", "x\\y",
                                   "/etc", "train\0", None, 3])
def test_split_must_be_a_plain_name(mini, split):
    with pytest.raises(ValueError, match="split must be a plain folder name"):
        SegDepthFolder(mini, split)


@pytest.mark.parametrize("policy", ON_BAD_SAMPLE)
def test_symlink_outside_the_root_is_refused(tmp_path, policy):
    root = write_mini(tmp_path / "m", n=2)
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png_bytes(np.full((H, W), 3, np.uint8), "L"))
    link = root / "train/semseg/1.png"
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(BadSampleError, match=rf"{link}: symlink resolves outside the dataset root "
                                             rf".*{outside}.*refused"):
        SegDepthFolder(root, "train", on_bad_sample=policy)
    # a symlink that stays inside the root is fine
    link.unlink()
    link.symlink_to(root / "train/semseg/0.png")
    assert SegDepthFolder(root, "train", on_bad_sample=policy)[1]["semseg"].shape == (H, W)


def _symlink_loop(path):
    path.unlink()
    path.symlink_to(path.name)  # points at itself


def _unreadable(path):
    path.chmod(0)


@pytest.mark.parametrize("policy", ON_BAD_SAMPLE)
@pytest.mark.parametrize("break_it", [_symlink_loop, _unreadable])
def test_symlink_loop_or_unreadable_entry_is_a_bad_sample_named_by_its_path(tmp_path, policy, break_it):
    root = write_mini(tmp_path / "m", n=3)
    path = root / "train/semseg/1.png"
    break_it(path)
    if break_it is _unreadable and os.access(path, os.R_OK):
        pytest.skip("running as root: a chmod 000 file stays readable")
    ds = SegDepthFolder(root, "train", on_bad_sample=policy)  # listing the folder is fine
    assert len(ds) == 3 and ds[0]["semseg"].shape == (H, W)
    if policy == "error":
        with pytest.raises(BadSampleError, match=re.escape(str(path))):
            ds[1]
    else:
        with pytest.warns(BadSampleWarning, match=re.escape(str(path))):
            assert ds[1] is None


def test_split_or_meta_symlinked_outside_is_refused(tmp_path):
    root = write_mini(tmp_path / "m", n=1)
    elsewhere = write_mini(tmp_path / "other", split="val", n=1)
    (root / "val").symlink_to(elsewhere / "val")
    with pytest.raises(ValueError, match=rf"{root / 'val' / 'rgb'} resolves outside the dataset root"):
        SegDepthFolder(root, "val")
    (tmp_path / "meta.json").write_text(json.dumps(synth_meta()))
    (root / "meta.json").symlink_to(tmp_path / "meta.json")
    with pytest.raises(ValueError, match=rf"{root / 'meta.json'} resolves outside the dataset root"):
        SegDepthFolder(root, "train")
    # the root itself may be a symlink: containment is checked against the resolved root
    (root / "meta.json").unlink()
    (tmp_path / "alias").symlink_to(root)
    assert len(SegDepthFolder(tmp_path / "alias", "train")) == 1


# ------------------------------------------------------------------------------------------
# meta.json
# ------------------------------------------------------------------------------------------
def test_valid_synthetic_meta_gives_info(tmp_path):
    root = write_synth(tmp_path / "s")
    info = dataset_info(root)
    assert info.num_classes == 19 and info.depth_range == (1.0, 250.0)
    assert info.depth_stats == {"mean": 20.0, "std": 15.0, "log_mean": 2.5, "log_std": 0.8}
    assert SegDepthFolder(root, "train").info == info


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "fastmtl-synthetic", "depth_range": [1, NaN]}', "non-standard JSON constant NaN"),
    ('{"format": "fastmtl-synthetic", "format": "x"}', "duplicate key 'format'"),
    ('["fastmtl-synthetic"]', "must be a JSON object {...}, got list"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_malformed_meta_json_is_named(tmp_path, text, message):
    root = write_synth(tmp_path / "s")
    path = root / "meta.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for call in (lambda: SegDepthFolder(root, "train"), lambda: dataset_info(root)):
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(message)):
            call()


@pytest.mark.parametrize("field, value", [
    ("depth_range", "1,250"), ("depth_range", "12"), ("depth_range", [250, 1]), ("depth_range", [1]),
    ("depth_range", [1, True]), ("classes", "road"), ("classes", []), ("classes", ["road", 3]),
    ("colors", [[0, 0, 0]]), ("ignore_index", True), ("ignore_index", "255"), ("ignore_index", 250),
    ("depth_encoding", {"type": "uint16", "scale": "0.004"}),
    ("depth_encoding", {"type": "uint16", "scale": 0}),
    ("depth_encoding", {"type": "uint16", "scale": -1.0}),
    ("depth_encoding", {"type": "float32", "scale": 1.0}),
    ("depth_encoding", {"type": "uint16", "scale": 1.0, "invalid": -1}),
    ("depth_stats", {"mean": 1, "std": 0, "log_mean": 1, "log_std": 1}),
    ("depth_stats", {"mean": "1", "std": 1, "log_mean": 1, "log_std": 1}),
    ("depth_stats", None),
])
def test_meta_field_types_are_checked(tmp_path, field, value):
    meta = synth_meta()
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    root = write_synth(tmp_path / "s", meta=meta)
    for call in (lambda: SegDepthFolder(root, "train"), lambda: dataset_info(root)):
        with pytest.raises(ValueError, match=re.escape(f"{root / 'meta.json'}: field {field!r} must be")):
            call()


# ------------------------------------------------------------------------------------------
# depth normalisation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "log"])
def test_normalize_never_gives_inf(mode):
    norm = DepthNormalizer(mode, 2.0, 0.5)
    depth = torch.tensor([0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3.0, 1e30])
    z = norm.normalize(depth)
    assert not z.isinf().any()
    assert z[:6].isnan().all() and z[6:].isfinite().all()
    huge = norm.normalize(torch.tensor([3e38]))  # linear: (3e38 - 2) / 0.5 overflows -> NaN
    assert huge.isnan().item() == (mode == "linear") and not huge.isinf().any()
    expected = (math.log(3.0) - 2.0) / 0.5 if mode == "log" else (3.0 - 2.0) / 0.5
    assert z[7].item() == pytest.approx(expected, rel=1e-6)
    zi = norm.normalize(torch.tensor([0, 3]))  # integer depth works, 0 is invalid
    assert zi.dtype == torch.float32 and zi[0].isnan() and zi[1].item() == pytest.approx(expected)
    tiny = DepthNormalizer(mode, 0.0, 1e-40)  # result would overflow float32: NaN, not inf
    assert not tiny.normalize(torch.tensor([5.0, 1e30])).isinf().any()


@pytest.mark.parametrize("mean, std", [(0.0, math.nan), (0.0, math.inf), (math.nan, 1.0),
                                       (math.inf, 1.0), (0.0, "x")])
def test_normalizer_rejects_non_finite_stats(mean, std):
    with pytest.raises(ValueError, match="depth (mean|std)"):
        DepthNormalizer("log", mean, std)
