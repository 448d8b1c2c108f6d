"""Surface normals in a MiniScapes-layout folder: decoding, the bad-file checks of the other folders,
the dataset's task list, and a clear ``--tasks`` error when a dataset has no normals."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastmtl.data import BadSampleError, SegDepthFolder, dataset_info, open_dataset
from fastmtl.data.folder import decode_normals

from normals_fixture import normals_png


def write_folder(root, n=3, h=8, w=10, normals=True):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("rgb", "semseg", "depth") + (("normals",) if normals else ()):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / split / "rgb" / f"{i}.png")
            Image.fromarray(rng.integers(0, 19, (h, w), dtype=np.uint8)).save(root / split / "semseg" / f"{i}.png")
            Image.fromarray(rng.integers(1, 255, (h, w), dtype=np.uint8)).save(root / split / "depth" / f"{i}.png")
            if normals:
                Image.fromarray(normals_png(h, w, seed=i)).save(root / split / "normals" / f"{i}.png")
    return root


def test_normals_are_decoded_renormalised_and_zero_where_invalid(tmp_path):
    root = write_folder(tmp_path / "d")
    ds = SegDepthFolder(root, "train")
    assert ds.targets == ("semseg", "depth", "normals")
    sample = ds[1]
    n = sample["normals"]
    assert n.dtype == torch.float32 and n.shape == (3, 8, 10)
    raw = np.array(Image.open(root / "train" / "normals" / "1.png")).astype(np.float64)
    invalid = ~raw.any(-1)
    assert invalid.any() and (n.permute(1, 2, 0).numpy()[invalid] == 0).all()
    expected = raw / 127.5 - 1
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True).clip(1e-12)
    np.testing.assert_allclose(n.permute(1, 2, 0).numpy()[~invalid], expected[~invalid], rtol=1e-6, atol=1e-6)
    assert torch.allclose(n.norm(dim=0)[torch.from_numpy(~invalid)], torch.ones(()), atol=1e-6)
    assert dataset_info(root).tasks == ("semseg", "depth", "normals")
    assert decode_normals(np.array([[[255, 128, 0]]], np.uint8))[0, 0] == pytest.approx([0.7071, 0.0028, -0.7071], abs=1e-3)


def test_without_a_normals_folder_the_sample_has_none(tmp_path):
    root = write_folder(tmp_path / "d", normals=False)
    ds = SegDepthFolder(root, "val")
    assert ds.targets == ("semseg", "depth") and "normals" not in ds[0]
    assert dataset_info(root).tasks == ("semseg", "depth")


def test_a_run_without_normals_neither_lists_nor_reads_them(tmp_path):
    """open_dataset(tasks=...) without normals: a broken or missing normals file is not looked at."""
    root = write_folder(tmp_path / "d")
    (root / "train" / "normals" / "1.png").write_bytes(b"not a png")
    (root / "train" / "normals" / "2.png").unlink()
    ds = open_dataset(root, "train", tasks=("semseg", "depth"))
    assert ds.targets == ("semseg", "depth") and len(ds) == 3
    assert all("normals" not in ds[j] for j in range(3))
    with pytest.raises(BadSampleError, match="2.png"):  # with normals: the missing file is an error
        open_dataset(root, "train", tasks=("semseg", "depth", "normals"))


@pytest.mark.parametrize("damage,message", [
    ("grey", "normals: expected an 8-bit RGB PNG, got mode L"),
    ("short", "normals: 1 pixel\\(s\\) decode to vectors shorter than 0.5"),
    ("size", "normals: size \\(H, W\\) = \\(4, 10\\) differs from rgb"),
    ("garbage", "normals: not a PNG image"),
])
def test_bad_normals_files_name_the_file(tmp_path, damage, message):
    root = write_folder(tmp_path / "d")
    path = root / "train" / "normals" / "2.png"
    if damage == "grey":
        Image.fromarray(np.full((8, 10), 128, np.uint8)).save(path)
    elif damage == "short":
        v = normals_png(8, 10, seed=2, invalid_fraction=0)
        v[3, 4] = (128, 127, 128)
        Image.fromarray(v).save(path)
    elif damage == "size":
        Image.fromarray(normals_png(4, 10, seed=2)).save(path)
    else:
        path.write_bytes(b"not a png at all")
    ds = SegDepthFolder(root, "train")
    with pytest.raises(BadSampleError, match=message) as err:
        ds[2]
    assert err.value.path == path
    skipping = SegDepthFolder(root, "train", on_bad_sample="skip")
    with pytest.warns(UserWarning, match="2.png"):
        assert skipping[2] is None


def test_a_missing_normals_file_is_an_incomplete_sample(tmp_path):
    root = write_folder(tmp_path / "d")
    (root / "train" / "normals" / "1.png").unlink()
    with pytest.raises(BadSampleError, match="normals/1.png not found but rgb, semseg, depth exist"):
        SegDepthFolder(root, "train")
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(SegDepthFolder(root, "train", on_bad_sample="skip")) == 2


def test_training_normals_on_a_dataset_without_them_is_a_one_line_error(tmp_path, capsys):
    from fastmtl.cli import main

    root = write_folder(tmp_path / "d", normals=False)
    assert main(["train", "--data-root", str(root), "--dataset", "miniscapes", "--tasks", "semseg,normals",
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"fastmtl train: error: --tasks normals: dataset {root} has no normals (it has: depth, semseg)")
