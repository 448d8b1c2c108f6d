"""Cityscapes: the official layout (labelIds -> trainIds, disparity + camera -> metres), the
MTAN .npy copy (7/19 classes, stored disparity), layout and kind detection, bad files."""
import numpy as np
import pytest
from PIL import Image

from fastmtl.config import Config, ConfigError
from fastmtl.data import (
    CATEGORY_NAMES,
    CLASS_NAMES,
    KINDS,
    LABEL_ID_TO_TRAIN_ID,
    BadSampleError,
    BadSampleWarning,
    dataset_info,
    open_dataset,
    resolve_kind,
)
from fastmtl.data.cityscapes import MTAN_BASELINE_M, MTAN_FX_PX, disparity_to_depth

from dataset_fixtures import CAMERA, write_cityscapes_mtan, write_cityscapes_official, write_nyuv2  # tests/ helper

# cityscapesScripts helpers/labels.py, written out by hand: labelId -> trainId (others 255)
HAND_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
STEM = "aachen_000000_000001"


@pytest.fixture
def official(tmp_path):
    root = tmp_path / "cityscapes"
    written = write_cityscapes_official(root, "train", "aachen", n=2, size=(8, 16))
    written.update(write_cityscapes_official(root, "train", "bonn", n=1, size=(8, 16), seed=1))
    write_cityscapes_official(root, "val", "frankfurt", n=1, size=(8, 16), seed=2)
    return root, written


def test_label_id_table_matches_the_official_one():
    for label_id in range(256):
        assert LABEL_ID_TO_TRAIN_ID[label_id] == HAND_TRAIN_IDS.get(label_id, 255), label_id
    # the ignored ids of labels.py: void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer
    for ignored in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert LABEL_ID_TO_TRAIN_ID[ignored] == 255


def test_disparity_to_depth_by_hand():
    v = np.array([[0, 1, 257, 513, 32257]], dtype=np.uint16)
    depth = disparity_to_depth(v, 0.2, 2000.0)
    assert np.isnan(depth[0, :2]).all()  # 0: invalid, 1: zero disparity
    # d = (v - 1) / 256 = 1, 2, 126 px; depth = 0.2 * 2000 / d
    assert depth[0, 2:].tolist() == pytest.approx([400.0, 200.0, 400.0 / 126], rel=1e-6)


def test_official_samples(official):
    root, written = official
    ds = open_dataset(root, "train", "cityscapes")
    assert len(ds) == 3 and ds.keys == [("aachen", "aachen_000000_000000"), ("aachen", STEM),
                                        ("bonn", "bonn_000000_000000")]
    for j, (city, stem) in enumerate(ds.keys):
        rgb, ids, disp = written[stem]
        s = ds[j]
        assert s["index"] == j and ds.paths(j)["camera"].name == f"{stem}_camera.json"
        assert np.array_equal(s["rgb"].numpy(), rgb.transpose(2, 0, 1))
        assert np.array_equal(s["semseg"].numpy(), np.vectorize(lambda i: HAND_TRAIN_IDS.get(int(i), 255))(ids))
        d = (disp.astype(np.float64) - 1) / 256
        expect = np.where(disp > 1, CAMERA["baseline"] * CAMERA["fx"] / np.where(d > 0, d, 1), np.nan)
        got = s["depth"].numpy()[0]
        assert np.array_equal(np.isnan(got), disp <= 1) and np.isnan(got[0, :5]).all()
        assert np.allclose(got[disp > 1], expect[disp > 1], rtol=1e-6)
    info = dataset_info(root)
    assert info.num_classes == 19 and info.class_names == CLASS_NAMES and info.tasks == ("semseg", "depth")
    depths = np.concatenate([ds.load_depth(j)[np.isfinite(ds.load_depth(j))] for j in range(3)]).astype(np.float64)
    assert info.depth_stats["log_mean"] == pytest.approx(np.log(depths).mean(), rel=1e-6)


def _camera(root):
    return root / "camera" / "train" / "aachen" / f"{STEM}_camera.json"


def _png(root, sub, suffix):
    return root / sub / "train" / "aachen" / f"{STEM}{suffix}"


OFFICIAL_BAD = [
    (lambda r: Image.fromarray(np.full((8, 16), 34, np.uint8)).save(_png(r, "gtFine", "_gtFine_labelIds.png")),
     "gtFine", r"gtFine: 128 pixel\(s\) with labels out of range \(34\)"),
    (lambda r: Image.fromarray(np.zeros((8, 16), np.uint8)).save(_png(r, "disparity", "_disparity.png")),
     "disparity", r"disparity: expected a 16-bit grey PNG \(mode I;16\), got mode L"),
    (lambda r: Image.fromarray(np.zeros((9, 16), np.uint16)).save(_png(r, "disparity", "_disparity.png")),
     "disparity", r"disparity: size \(H, W\) = \(9, 16\) differs"),
    (lambda r: _png(r, "leftImg8bit", "_leftImg8bit.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"),
     "leftImg8bit", r"leftImg8bit: "),
    (lambda r: _camera(r).write_text('{"extrinsic": {"baseline": 0.2}, "intrinsic": {}}'),
     "camera", r"camera: expected JSON with extrinsic.baseline and intrinsic.fx \(KeyError"),
    (lambda r: _camera(r).write_text('{"extrinsic": {"baseline": -0.2}, "intrinsic": {"fx": 2000}}'),
     "camera", r"camera: extrinsic.baseline must be a finite number > 0, got -0.2"),
    (lambda r: _camera(r).write_text("{not json"), "camera", r"camera: expected JSON"),
]


@pytest.mark.parametrize("write,sub,message", OFFICIAL_BAD)
def test_official_bad_file_error_or_skip(official, write, sub, message):
    root, _ = official
    write(root)
    ds = open_dataset(root, "train", "cityscapes")
    with pytest.raises(BadSampleError, match=message) as err:
        ds[1]
    assert err.value.path.parent.parent.parent.name == sub and STEM in err.value.path.name
    assert "\n" not in str(err.value)
    ds[0], ds[2]
    skip = open_dataset(root, "train", "cityscapes", on_bad_sample="skip")
    with pytest.warns(BadSampleWarning):
        assert skip[1] is None


def test_missing_camera_json_is_named(official):
    root, _ = official
    _camera(root).unlink()
    with pytest.raises(BadSampleError, match=rf"missing file of sample 1: camera/train/aachen/{STEM}_camera\.json "
                                             r"not found but leftImg8bit, gtFine, disparity exist"):
        open_dataset(root, "train", "cityscapes")
    with pytest.warns(BadSampleWarning, match="skipping 1 incomplete sample"):
        ds = open_dataset(root, "train", "cityscapes", on_bad_sample="skip")
    assert len(ds) == 2 and ds.indices == [0, 2]


def test_official_layout_needs_its_four_folders(official):
    root, _ = official
    (root / "camera" / "val" / "frankfurt" / "frankfurt_000000_000000_camera.json").unlink()
    (root / "camera" / "val" / "frankfurt").rmdir()
    (root / "camera" / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"missing folder .*camera/val"):
        open_dataset(root, "val", "cityscapes")


def test_mtan_copy_7_classes_and_stored_disparity(tmp_path):
    root = tmp_path / "mtan"
    write_cityscapes_mtan(root, classes=(7,), train=2, val=1, size=(8, 16))
    ds = open_dataset(root, "train", "cityscapes")
    label = np.load(root / "train" / "label_7" / "0.npy")
    v = np.load(root / "train" / "depth" / "0.npy")[..., 0].astype(np.float64)
    s = ds[0]
    assert np.array_equal(s["semseg"].numpy(), np.where(label < 0, 255, label).astype(np.int64))
    got = s["depth"].numpy()[0]
    assert np.array_equal(np.isnan(got), v == 0) and np.isnan(got[0, :4]).all()
    # depth = B * fx / d with d = 256 v (full-resolution pixels)
    assert np.allclose(got[v > 0], MTAN_BASELINE_M * MTAN_FX_PX / (256 * v[v > 0]), rtol=1e-6)
    assert "normals" not in s
    info = dataset_info(root, "cityscapes")
    assert info.num_classes == 7 and info.class_names == CATEGORY_NAMES and info.tasks == ("semseg", "depth")
    assert dataset_info(root, "cityscapes7") == info
    with pytest.raises(FileNotFoundError, match="label_19"):
        open_dataset(root, "train", "cityscapes19")
    np.save(root / "train" / "label_7" / "1.npy", np.full((8, 16), 7.0, np.float32))
    with pytest.raises(BadSampleError, match=r"label_7/1\.npy: label_7: 128 pixel\(s\) with labels out of range \(7\); "
                                             r"expected 0\.\.6 or -1"):
        ds[1]


def test_mtan_class_count_detection(tmp_path):
    root = tmp_path / "mtan"
    write_cityscapes_mtan(root, classes=(7, 19), train=1, val=1, size=(4, 8))
    with pytest.raises(FileNotFoundError, match="both label_7/ and label_19/; choose the classes with --dataset "
                                                "cityscapes7 or cityscapes19"):
        open_dataset(root, "train", "cityscapes")
    assert open_dataset(root, "train", "cityscapes19").num_classes == 19
    assert dataset_info(root, "cityscapes19").class_names == CLASS_NAMES
    assert dataset_info(root, "cityscapes7").class_names == CATEGORY_NAMES


# labels.py categories of the 19 evaluated labelIds, by hand: flat, construction, object, nature, sky, human, vehicle
HAND_CATEGORIES = {7: 0, 8: 0, 11: 1, 12: 1, 13: 1, 17: 2, 19: 2, 20: 2, 21: 3, 22: 3, 23: 4, 24: 5, 25: 5,
                   26: 6, 27: 6, 28: 6, 31: 6, 32: 6, 33: 6}


def test_official_layout_with_7_categories(official):
    """--dataset cityscapes7 on the official layout: the categories of the 19 evaluated labels
    (ignore-in-eval ids such as parking 9 or caravan 29 stay ignored, as in cityscapesScripts)."""
    root, written = official
    ds = open_dataset(root, "train", "cityscapes7")
    assert ds.num_classes == 7
    for j, (_, stem) in enumerate(ds.keys):
        _, ids, _ = written[stem]
        expect = np.vectorize(lambda i: HAND_CATEGORIES.get(int(i), 255))(ids)
        assert np.array_equal(ds[j]["semseg"].numpy(), expect)
    assert set(np.unique(written[STEM][1])) - set(HAND_CATEGORIES), "the fixture has ignored ids too"
    info = dataset_info(root, "cityscapes7")
    assert info.num_classes == 7 and info.class_names == CATEGORY_NAMES
    assert open_dataset(root, "train", "cityscapes19").num_classes == 19


def test_auto_detects_every_layout(tmp_path, official, tiny_data):
    write_nyuv2(tmp_path / "nyu", train=1, val=1, size=(4, 4))
    write_cityscapes_mtan(tmp_path / "mtan", classes=(19,), train=1, val=1, size=(4, 8))
    mini = tmp_path / "mini"
    for sub in ("rgb", "semseg", "depth"):
        (mini / "train" / sub).mkdir(parents=True)
    assert resolve_kind(tmp_path / "nyu") == "nyuv2"
    assert resolve_kind(official[0]) == "cityscapes"
    assert resolve_kind(tmp_path / "mtan") == "cityscapes"
    assert resolve_kind(tiny_data) == "synthetic"
    assert resolve_kind(mini) == "miniscapes"
    assert resolve_kind(tmp_path / "nyu", "cityscapes19") == "cityscapes19"
    assert open_dataset(tmp_path / "mtan", "val").num_classes == 19
    assert dataset_info(tmp_path / "nyu").tasks == ("semseg", "depth", "normals")
    with pytest.raises(ValueError, match="unknown dataset kind 'kitti'"):
        resolve_kind(mini, "kitti")
    with pytest.raises(FileNotFoundError, match=r"not a Cityscapes folder"):
        open_dataset(mini, "train", "cityscapes")


def test_config_dataset_choices_are_the_reader_kinds():
    with pytest.raises(ConfigError, match="valid choices: " + ", ".join(KINDS)):
        Config(dataset="kitti").validate()

