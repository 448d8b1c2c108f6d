"""Sample transforms and the depth normaliser."""
import math

import pytest
import torch

from fastmtl.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from fastmtl.tasks.depth import DepthNormalizer
from fastmtl.transforms import color_jitter, random_crop, random_hflip, random_scale

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def _sample(h, w, seed=0):
    """Every pixel carries one code c in rgb channel 0, semseg and depth, so alignment
    between the three can be checked after any geometric transform. Code 255 marks
    invalid pixels: semseg ignore and depth NaN together."""
    g = torch.Generator().manual_seed(seed)
    code = torch.randint(0, 255, (h, w), generator=g)
    code[: h // 4, : w // 3] = 255
    depth = torch.where(code == 255, torch.tensor(math.nan), code.float() + 1)
    rgb = torch.stack([code, torch.randint(0, 256, (h, w), generator=g), torch.full((h, w), 9)]).to(torch.uint8)
    return {"rgb": rgb, "semseg": code.clone(), "depth": depth[None].clone(), "index": 4}


def _unnormalize(rgb):
    return ((rgb * STD + MEAN) * 255).round()


def _assert_aligned(out):
    code = out["semseg"]
    valid = code != 255
    assert torch.equal(out["depth"][0].isnan(), ~valid)
    assert torch.equal(out["depth"][0][valid], code[valid].float() + 1)


def test_crop_pads_rgb_zero_semseg_ignore_depth_nan():
    s = _sample(10, 12)
    out = random_crop(s, (16, 20), torch.Generator().manual_seed(0))
    assert out["rgb"].shape == (3, 16, 20) and out["semseg"].shape == (16, 20) and out["depth"].shape == (1, 16, 20)
    assert torch.equal(out["rgb"][:, :10, :12], s["rgb"]) and torch.equal(out["semseg"][:10, :12], s["semseg"])
    assert (out["rgb"][:, 10:] == 0).all() and (out["rgb"][:, :, 12:] == 0).all()
    assert (out["semseg"][10:] == 255).all() and (out["semseg"][:, 12:] == 255).all()
    assert out["depth"][0, 10:].isnan().all() and out["depth"][0, :, 12:].isnan().all()
    assert out["index"] == 4


def test_crop_is_a_window_of_the_input_and_all_placements_occur():
    s = _sample(20, 30)
    offsets = set()
    for seed in range(30):
        out = random_crop(s, (8, 10), torch.Generator().manual_seed(seed))
        hits = [(t, c) for t in range(13) for c in range(21)
                if torch.equal(s["semseg"][t:t + 8, c:c + 10], out["semseg"])]
        assert len(hits) == 1
        t, c = hits[0]
        assert torch.equal(out["rgb"], s["rgb"][:, t:t + 8, c:c + 10])
        offsets.add(hits[0])
        _assert_aligned(out)
    assert len(offsets) > 20


def test_flip_mirrors_rgb_semseg_and_depth_together():
    s = _sample(6, 9)
    flipped = [random_hflip(s, 0.5, torch.Generator().manual_seed(seed)) for seed in range(16)]
    n_flipped = 0
    for out in flipped:
        if torch.equal(out["semseg"], s["semseg"].flip(-1)):
            n_flipped += 1
            assert torch.equal(out["rgb"], s["rgb"].flip(-1))
        else:
            assert torch.equal(out["semseg"], s["semseg"]) and torch.equal(out["rgb"], s["rgb"])
        _assert_aligned(out)
    assert 0 < n_flipped < 16


def test_scale_uses_nearest_for_labels_and_depth():
    s = _sample(40, 60)
    sizes = set()
    for seed in range(10):
        out = random_scale(s, (0.75, 1.25), torch.Generator().manual_seed(seed))
        h, w = out["semseg"].shape
        assert 30 <= h <= 50 and 45 <= w <= 75 and out["rgb"].shape == (3, h, w)
        assert out["rgb"].dtype == torch.uint8 and out["semseg"].dtype == torch.int64
        assert set(out["semseg"].unique().tolist()) <= set(s["semseg"].unique().tolist())
        _assert_aligned(out)
        sizes.add((h, w))
    assert len(sizes) > 5


def test_train_transform_keeps_rgb_semseg_depth_aligned_through_crop_and_flip():
    s = _sample(30, 40)
    t = train_transform((16, 24), scale=(1.0, 1.0), flip=True, color_jitter=0.0)
    for seed in range(8):
        out = t(s, torch.Generator().manual_seed(seed))
        assert out["rgb"].dtype == torch.float32 and out["rgb"].shape == (3, 16, 24)
        assert out["semseg"].shape == (16, 24) and out["depth"].shape == (1, 16, 24)
        assert torch.equal(_unnormalize(out["rgb"])[0], out["semseg"].float())
        _assert_aligned(out)


def test_train_transform_is_deterministic_for_a_seed():
    s = _sample(50, 70)
    t = train_transform(32)
    a = t(s, torch.Generator().manual_seed(11))
    b = t(s, torch.Generator().manual_seed(11))
    c = t(s, torch.Generator().manual_seed(12))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["semseg"], b["semseg"])
    assert torch.equal(a["depth"].isnan(), b["depth"].isnan())
    assert not torch.equal(a["rgb"], c["rgb"])
    torch.manual_seed(3)
    d = t(s)
    torch.manual_seed(3)
    assert torch.equal(d["rgb"], t(s)["rgb"])


def test_color_jitter_changes_colour_within_range():
    s = _sample(8, 8)
    out = color_jitter(s, 0.4, torch.Generator().manual_seed(1))
    rgb = out["rgb"]
    assert rgb.dtype == torch.float32 and rgb.min() >= 0 and rgb.max() <= 1
    assert not torch.allclose(rgb, s["rgb"].float() / 255)
    assert torch.equal(out["semseg"], s["semseg"])
    torch.testing.assert_close(color_jitter(s, 0.0)["rgb"], s["rgb"].float() / 255)


def test_eval_transform_crops_top_left_to_multiples_of_32_and_normalises():
    s = _sample(70, 100)
    out = eval_transform()(s)
    assert out["rgb"].shape == (3, 64, 96) and out["semseg"].shape == (64, 96) and out["depth"].shape == (1, 64, 96)
    expected = (s["rgb"][:, :64, :96].float() / 255 - MEAN) / STD
    torch.testing.assert_close(out["rgb"], expected)
    assert torch.equal(out["semseg"], s["semseg"][:64, :96])
    assert torch.equal(out["depth"].isnan(), s["depth"][:, :64, :96].isnan())
    assert torch.equal(eval_transform(32)(s)["rgb"], out["rgb"])
    with pytest.raises(ValueError, match="smaller"):
        eval_transform(128)(s)


@pytest.mark.parametrize("mode", ["linear", "log"])
def test_depth_normalizer_round_trip_and_nan(mode):
    stats = {"mean": 27.0, "std": 29.0, "log_mean": 2.9, "log_std": 0.8}
    norm = DepthNormalizer.from_stats(mode, stats)
    assert (norm.mean, norm.std) == ((2.9, 0.8) if mode == "log" else (27.0, 29.0))
    depth = torch.tensor([[1.0, 4.0, math.nan], [27.0, 150.0, 300.0]])
    z = norm.normalize(depth)
    expected = (depth.log() - 2.9) / 0.8 if mode == "log" else (depth - 27.0) / 29.0
    torch.testing.assert_close(z, expected, equal_nan=True)
    torch.testing.assert_close(norm.denormalize(z), depth, equal_nan=True, rtol=1e-5, atol=0)
    assert DepthNormalizer.from_dict(norm.to_dict()) == norm
    assert norm.to_dict() == {"mode": mode, "mean": norm.mean, "std": norm.std}


def test_depth_normalizer_rejects_bad_settings():
    with pytest.raises(ValueError, match="linear, log"):
        DepthNormalizer("sqrt", 1.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        DepthNormalizer("linear", 1.0, 0.0)
