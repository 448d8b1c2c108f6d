"""NYUv2 in the LibMTL / MTAN .npy layout: exact decoding, invalid masks, normals through the
transforms, every bad-file error and the skip policy."""
import warnings

import numpy as np
import pytest
import torch

from fastmtl.data import (
    NYUV2_CLASS_NAMES,
    BadSampleError,
    BadSampleWarning,
    build_loader,
    collate_skip_bad,
    dataset_info,
    open_dataset,
)
from fastmtl.data import npy as npy_module
from fastmtl.tasks.depth import DepthNormalizer
from fastmtl.transforms import crop, pad_to, random_hflip, random_scale, train_transform

from dataset_fixtures import nyuv2_arrays, write_nyuv2  # tests/ helper


@pytest.fixture
def nyu(tmp_path):
    root = tmp_path / "nyuv2"
    return root, write_nyuv2(root, train=3, val=2, size=(8, 12))


def test_samples_decode_exactly_with_void_invalid_depth_and_zero_normals(nyu):
    root, written = nyu
    ds = open_dataset(root, "train", "nyuv2")
    assert len(ds) == 3
    for j, arrays in enumerate(written["train"]):
        s = ds[j]
        assert s["index"] == j
        assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape == (3, 8, 12)
        assert np.array_equal(s["rgb"].numpy(), np.rint(arrays["image"].astype(np.float64) * 255).transpose(2, 0, 1))
        label = arrays["label"].astype(np.int64)
        assert s["semseg"].dtype == torch.int64
        assert np.array_equal(s["semseg"].numpy(), np.where(label == -1, 255, label))
        assert (label == -1).any()
        d = arrays["depth"][..., 0]
        got = s["depth"].numpy()
        assert got.dtype == np.float32 and got.shape == (1, 8, 12)
        assert np.array_equal(np.isnan(got[0]), d == 0) and np.isnan(got[0, 0, :3]).all()
        assert np.array_equal(got[0][d > 0], d[d > 0])
        n = s["normals"].numpy()
        assert n.dtype == np.float32 and n.shape == (3, 8, 12)
        assert np.allclose(n, arrays["normal"].transpose(2, 0, 1), atol=1e-6)
        zero = (n == 0).all(0)
        assert np.array_equal(zero, (arrays["normal"] == 0).all(-1)) and zero[1, :2].all()


def test_without_the_normals_task_normal_files_are_not_read(nyu):
    root, _ = nyu
    for path in (root / "train" / "normal").iterdir():
        path.write_bytes(b"not an npy file")
    ds = open_dataset(root, "train", "nyuv2", tasks=("semseg", "depth"))
    assert "normals" not in ds[0] and ds[0]["depth"].shape == (1, 8, 12)
    with pytest.raises(BadSampleError, match="normal"):
        open_dataset(root, "train", "nyuv2")[0]


def test_non_unit_normals_are_rescaled_and_zero_stays_invalid(tmp_path):
    root = tmp_path / "nyuv2"
    write_nyuv2(root, train=1, val=1, size=(4, 4))
    normal = np.zeros((4, 4, 3), np.float32)
    normal[0, 0] = (0, 0, 2)
    normal[1, 1] = (3, 4, 0)
    np.save(root / "train" / "normal" / "0.npy", normal)
    n = open_dataset(root, "train", "nyuv2")[0]["normals"]
    assert torch.allclose(n[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(n[:, 1, 1], torch.tensor([0.6, 0.8, 0.0]))
    assert (n[:, 2:, 2:] == 0).all()


def test_info_classes_tasks_and_depth_stats(nyu):
    root, written = nyu
    info = dataset_info(root, "nyuv2")
    assert info.num_classes == 13 and info.class_names == NYUV2_CLASS_NAMES and len(info.colors) == 13
    assert info.class_names[0] == "bed" and info.class_names[-1] == "window"
    assert info.tasks == ("semseg", "depth", "normals") and info.ignore_index == 255
    d = np.concatenate([a["depth"][a["depth"] > 0] for a in written["train"]]).astype(np.float64)
    assert info.depth_stats["mean"] == pytest.approx(d.mean(), rel=1e-6)
    assert info.depth_stats["std"] == pytest.approx(d.std(), rel=1e-5)
    assert info.depth_stats["log_mean"] == pytest.approx(np.log(d).mean(), rel=1e-6)
    assert info.depth_stats["log_std"] == pytest.approx(np.log(d).std(), rel=1e-5)
    DepthNormalizer.from_stats("log", info.depth_stats)  # usable as the normaliser


def _sample(h=6, w=8):
    rng = np.random.default_rng(3)
    a = nyuv2_arrays(rng, h, w)
    return {"rgb": torch.from_numpy((a["image"] * 255).astype(np.uint8).transpose(2, 0, 1).copy()),
            "semseg": torch.from_numpy(np.where(a["label"] < 0, 255, a["label"]).astype(np.int64)),
            "depth": torch.from_numpy(np.where(a["depth"] > 0, a["depth"], np.nan).transpose(2, 0, 1).copy()),
            "normals": torch.from_numpy(a["normal"].transpose(2, 0, 1).copy()), "index": 0}


def test_flip_mirrors_normals_and_negates_x():
    s = _sample()
    f = random_hflip(s, p=1.0)
    assert torch.equal(f["normals"][0], -s["normals"][0].flip(-1))
    assert torch.equal(f["normals"][1:], s["normals"][1:].flip(-1))
    assert torch.equal(f["semseg"], s["semseg"].flip(-1))
    assert random_hflip(s, p=0.0) is s


def test_scale_crop_pad_carry_normals_with_the_other_maps():
    s = _sample()
    c = crop(s, 1, 2, (3, 4))
    assert torch.equal(c["normals"], s["normals"][:, 1:4, 2:6])
    p = pad_to(s, (9, 10))
    assert p["normals"].shape == (3, 9, 10) and (p["normals"][:, 6:] == 0).all() and (p["normals"][:, :, 8:] == 0).all()
    assert torch.equal(p["normals"][:, :6, :8], s["normals"])
    g = torch.Generator().manual_seed(0)
    r = random_scale(s, (2.0, 2.0), g)  # nearest: every output normal is an input normal
    assert r["normals"].shape == (3, 12, 16)
    assert torch.equal(r["normals"][:, ::2, ::2], s["normals"])
    out = train_transform((4, 4), scale=(0.75, 1.25))(s, torch.Generator().manual_seed(1))
    assert out["normals"].shape == (3, 4, 4)
    norms = out["normals"].norm(dim=0)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))


def test_loader_batches_hold_normals(nyu):
    root, _ = nyu
    ds = open_dataset(root, "val", "nyuv2")
    batch = next(iter(build_loader(ds, 2, shuffle=False, workers=0, seed=0)))
    assert batch["normals"].shape == (2, 3, 8, 12) and batch["rgb"].shape == (2, 3, 8, 12)


def _object_npy(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _npz(path):
    with open(path, "wb") as f:
        np.savez(f, x=np.zeros(3))


BAD_FILES = [
    ("image", lambda p: np.save(p, np.zeros((8, 12), np.float32)), r"image: expected a float \(H, W, 3\)"),
    ("image", lambda p: np.save(p, np.full((8, 12, 3), 2.0, np.float32)), r"image: values in \[2, 2\]"),
    ("image", lambda p: np.save(p, np.zeros((7, 12, 3), np.float32)), r"label: size .* differs from image 1\.npy"),
    ("label", lambda p: np.save(p, np.full((8, 12), 13.0, np.float32)), r"label: 96 pixel\(s\) with labels out of range \(13\)"),
    ("label", lambda p: np.save(p, np.full((8, 12), 0.5, np.float32)), r"label: non-integer label values"),
    ("label", lambda p: np.save(p, np.zeros((8, 11), np.float32)), r"label: size \(H, W\) = \(8, 11\) differs"),
    ("depth", lambda p: np.save(p, np.full((8, 12, 1), np.nan, np.float32)), r"depth: 96 value\(s\) are NaN or infinite"),
    ("depth", lambda p: np.save(p, np.full((8, 12, 1), -1.0, np.float32)), r"depth: 96 negative value"),
    ("depth", lambda p: np.save(p, np.zeros((8, 12, 2), np.float32)), r"depth: expected a float \(H, W, 1\)"),
    ("normal", lambda p: np.save(p, np.zeros((8, 12), np.float32)), r"normal: expected a float \(H, W, 3\)"),
    ("normal", lambda p: np.save(p, np.full((8, 12, 3), np.inf, np.float32)), r"normal: 288 value\(s\) are NaN"),
    ("normal", _object_npy, r"normal: not a readable \.npy array \(ValueError"),
    ("depth", lambda p: p.write_bytes(b"not an npy file"), r"depth: not a readable \.npy array"),
    ("label", _npz, r"label: an \.npz archive"),
]


@pytest.mark.parametrize("sub,write,message", BAD_FILES)
def test_bad_file_is_one_line_error_naming_it_or_skipped(nyu, sub, write, message):
    root, _ = nyu
    path = root / "train" / sub / "1.npy"
    write(path)
    ds = open_dataset(root, "train", "nyuv2")
    with pytest.raises(BadSampleError, match=message) as err:
        ds[1]
    assert "\n" not in str(err.value) and err.value.index == 1
    named = "label" if message.startswith("label: size") else sub  # a smaller image: the label differs from it
    assert err.value.path == root / "train" / named / "1.npy" and str(err.value).startswith(str(err.value.path))
    ds[0], ds[2]  # the other samples are fine
    skip = open_dataset(root, "train", "nyuv2", on_bad_sample="skip")
    with pytest.warns(BadSampleWarning, match="skipping bad sample 1"):
        assert skip[1] is None
    batch = collate_skip_bad([skip[j] for j in range(3)])
    assert batch["skipped"] == 1 and batch["index"].tolist() == [0, 2]


def test_a_pickle_is_never_loaded(nyu):
    root, _ = nyu
    path = root / "train" / "label" / "0.npy"
    np.save(path, np.array([object()], dtype=object)[:0].astype(object), allow_pickle=True)
    with pytest.raises(BadSampleError, match="Object arrays cannot be loaded when allow_pickle=False"):
        open_dataset(root, "train", "nyuv2")[0]


def test_missing_partner_file_is_an_error_or_left_out(nyu):
    root, _ = nyu
    (root / "train" / "normal" / "2.npy").unlink()
    with pytest.raises(BadSampleError, match=r"missing file of sample 2: normal/2\.npy not found but image, "
                                             r"label, depth exist"):
        open_dataset(root, "train", "nyuv2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = open_dataset(root, "train", "nyuv2", on_bad_sample="skip")
    assert len(ds) == 2 and ds.indices == [0, 1]
    assert any(issubclass(w.category, BadSampleWarning) for w in caught)


def test_missing_folder_is_a_structural_error(nyu):
    root, _ = nyu
    for p in (root / "val" / "normal").iterdir():
        p.unlink()
    (root / "val" / "normal").rmdir()
    with pytest.raises(FileNotFoundError, match=r"missing folder .*val/normal"):
        open_dataset(root, "val", "nyuv2", on_bad_sample="skip")


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_npy_header_claiming_more_than_the_file_holds_is_refused_before_allocating(nyu, policy, monkeypatch):
    root, _ = nyu
    path = root / "train" / "depth" / "1.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1 << 20, 1 << 10)}  # 4 PiB
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called on a file whose header claims more than it holds")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises(BadSampleError, match=r"depth: the \.npy header claims a float32 array of shape "
                                             r"\(1048576, 1048576, 1024\) .* but the file holds 64 bytes"):
        npy_module.load_npy(path, "depth", 1)
    monkeypatch.undo()
    ds = open_dataset(root, "train", "nyuv2", on_bad_sample=policy)
    if policy == "error":
        with pytest.raises(BadSampleError, match=str(path)):
            ds[1]
    else:
        with pytest.warns(BadSampleWarning, match="the .npy header claims"):
            assert ds[1] is None
