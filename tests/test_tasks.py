"""The task abstraction: registry, each task's loss / metrics / flip / resize / pad, LibMTL's metrics
against hand-computed cases and independent float64 computations, flags."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastmtl import tasks
from fastmtl.config import Config, ConfigError
from fastmtl.transforms import random_hflip, random_scale, pad_to, train_transform
from fastmtl.losses import MultiTaskLoss
from fastmtl.tasks.depth import DepthMeter, DepthNormalizer
from fastmtl.tasks.semseg import SemsegMeter, semseg_loss
from fastmtl.tasks.normals import NormalsMeter, NormalsTask, normals_cosine_loss, normals_l1_loss


def unit_field(n, h, w, gen=None):
    v = torch.randn(n, 3, h, w, generator=gen)
    return v / v.norm(dim=1, keepdim=True)


# -- registry and flags --------------------------------------------------------------------------


def test_registry_finds_one_module_per_task():
    assert set(tasks.names()) == {"semseg", "depth", "normals"}
    assert tasks.get("normals") is NormalsTask and tasks.get("normals").output_channels(19) == 3
    assert tasks.get("semseg").output_channels(13) == 13 and tasks.get("depth").output_channels(13) == 1
    with pytest.raises(ValueError, match="unknown task 'edges'; valid tasks: depth, normals, semseg"):
        tasks.get("edges")


@pytest.mark.parametrize("text,message", [("semseg,edges", "unknown task 'edges'"), ("depth,depth", "more than once"),
                                          (",", "at least one task")])
def test_bad_task_lists_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match=message):
        tasks.parse_tasks(text)
    with pytest.raises(ConfigError, match=message):
        Config(tasks=tuple(t for t in text.split(",") if t)).validate()


def test_task_weight_flag_sets_any_task_and_keeps_the_old_flags(capsys):
    from fastmtl.cli import COMMANDS, build_parser
    from fastmtl.cli.flags import config_from_args

    parser = build_parser(COMMANDS)
    cfg = config_from_args(parser.parse_args(["train", "--tasks", "semseg,depth,normals", "--task-weight", "normals=2",
                                              "--task-weight", "semseg=0.25", "--weight-depth", "0.75",
                                              "--normals-loss", "l1"]))
    assert cfg.tasks == ("semseg", "depth", "normals") and cfg.task_option("normals", "loss") == "l1"
    assert [cfg.task_weight(t) for t in cfg.tasks] == [0.25, 0.75, 2.0]
    assert Config(tasks=("semseg", "normals")).validate().task_weight("normals") == 0.5  # the default
    for argv, message in [(["--task-weight", "normals=1"], "not one of --tasks semseg,depth"),
                          (["--tasks", "normals", "--task-weight", "normals=x"], "must look like TASK=WEIGHT"),
                          (["--task-weight", "semseg=1", "--weight-semseg", "1"], "give one of them"),
                          (["--tasks", "normals", "--task-weight", "normals=0"], "cannot all be 0"),
                          (["--normals-loss", "l2"], "--normals-loss: unknown value 'l2'")]:
        with pytest.raises(ConfigError, match=message):
            config_from_args(parser.parse_args(["train", *argv]))


def test_generic_loss_is_the_weighted_sum_of_the_task_losses():
    from fastmtl.tasks.depth import DepthTask
    from fastmtl.tasks.semseg import SemsegTask

    norm = DepthNormalizer("log", 2.5, 0.8)
    loss = MultiTaskLoss(tasks=[SemsegTask(3), DepthTask(norm), NormalsTask("l1")],
                         weights={"semseg": 0.2, "depth": 0.3, "normals": 0.5})
    seg_t, depth_t, normals_t = torch.randint(0, 3, (2, 4, 4)), torch.rand(2, 1, 4, 4) * 50 + 1, unit_field(2, 4, 4)
    outs = {"semseg": torch.randn(2, 3, 4, 4), "depth": torch.randn(2, 1, 4, 4), "normals": [torch.randn(2, 3, 4, 4)] * 2}
    total, parts = loss(outs, {"semseg": seg_t, "depth": depth_t, "normals": normals_t})
    torch.testing.assert_close(parts["semseg"], semseg_loss(outs["semseg"], seg_t))
    torch.testing.assert_close(parts["normals"], normals_l1_loss(outs["normals"][0], normals_t))
    torch.testing.assert_close(total, 0.2 * parts["semseg"] + 0.3 * parts["depth"] + 0.5 * parts["normals"])
    with pytest.raises(ValueError, match="must name exactly the tasks"):
        MultiTaskLoss(tasks=[SemsegTask(3)], weights={"depth": 1.0})


# -- augmentation rules --------------------------------------------------------------------------


def sample_with_normals(h=6, w=8):
    g = torch.Generator().manual_seed(3)
    normals = unit_field(1, h, w, g)[0]
    normals[:, 0, 0] = 0  # invalid pixel
    return {"rgb": torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=g),
            "semseg": torch.randint(0, 5, (h, w), generator=g), "depth": torch.rand(1, h, w, generator=g) * 10 + 1,
            "normals": normals, "index": 7}


def test_flip_mirrors_every_target_and_negates_normals_x():
    s = sample_with_normals()
    flipped = next(f for f in (random_hflip(s, 0.5, torch.Generator().manual_seed(k)) for k in range(20))
                   if f is not s)
    assert torch.equal(flipped["rgb"], s["rgb"].flip(-1)) and torch.equal(flipped["semseg"], s["semseg"].flip(-1))
    assert torch.equal(flipped["depth"], s["depth"].flip(-1)) and flipped["index"] == 7
    n, m = s["normals"], flipped["normals"]
    assert torch.equal(m[0], -n[0].flip(-1)) and torch.equal(m[1:], n[1:].flip(-1))
    assert (m[:, 0, -1] == 0).all(), "the invalid zero vector stays zero (at its mirrored place)"
    assert torch.equal(NormalsTask.flip_target(m), n), "flipping twice is the identity"


def test_scale_and_pad_keep_normals_unit_and_invalid_zero():
    s = sample_with_normals()
    scaled = random_scale(s, (1.7, 1.7), torch.Generator().manual_seed(0))
    n = scaled["normals"]
    assert n.shape == (3, 10, 14) and scaled["semseg"].shape == (10, 14)
    length = n.norm(dim=0)
    assert torch.allclose(length[length > 0], torch.ones(()), atol=1e-6), "nearest: never blended"
    original = {tuple(v.tolist()) for v in s["normals"].reshape(3, -1).T}
    assert {tuple(v.tolist()) for v in n.reshape(3, -1).T} <= original, "values unchanged"
    padded = pad_to(s, (9, 8))
    assert (padded["normals"][:, 6:] == 0).all() and (padded["semseg"][6:] == 255).all()
    assert padded["depth"][:, 6:].isnan().all()
    out = train_transform((4, 4))(s, torch.Generator().manual_seed(1))
    assert out["normals"].shape == (3, 4, 4) and out["rgb"].shape == (3, 4, 4)


# -- semseg --------------------------------------------------------------------------------------


def test_pixel_accuracy_hand_computed_and_against_numpy():
    m = SemsegMeter(num_classes=3)
    m.update(torch.tensor([[[0, 1, 1, 1, 0, 0]]]), torch.tensor([[[0, 0, 1, 1, 255, 2]]]))
    assert m.compute()["pixel_acc"] == pytest.approx(100 * 3 / 5)  # 5 scored pixels, 3 right
    g = torch.Generator().manual_seed(5)
    t, p = torch.randint(0, 6, (3, 9, 11), generator=g), torch.randint(0, 6, (3, 9, 11), generator=g)
    t[0, :4] = 255
    m = SemsegMeter(6)
    m.update(p[:1], t[:1])
    m.update(p[1:], t[1:])
    tn, pn = t.numpy().astype(np.float64), p.numpy()
    keep = tn != 255
    assert m.compute()["pixel_acc"] == pytest.approx(100 * np.mean(pn[keep] == tn[keep]), rel=1e-12)


# -- depth: LibMTL's abs / rel error ------------------------------------------------------------------


def test_depth_abs_and_rel_err_hand_computed():
    m = DepthMeter((1.0, 100.0))
    pred = torch.tensor([[[[2.0, 3.0, 200.0, 5.0]]]])
    gt = torch.tensor([[[[1.0, 3.0, 100.0, float("nan")]]]])
    m.update(pred, gt)
    out = m.compute()
    assert out["abs_err"] == pytest.approx((1 + 0 + 100) / 3)  # the prediction is not clamped (LibMTL)
    assert out["rel_err"] == pytest.approx((1 + 0 + 1) / 3)


def test_depth_abs_and_rel_err_weight_batches_by_valid_pixels_as_libmtl():
    """LibMTL's DepthMetric appends ``bs = pred.size(0)`` after ``masked_select``: the number of valid
    pixels. Its batch-weighted mean is the pixel mean over the split, checked in float64 both ways."""
    g = torch.Generator().manual_seed(2)
    batches = []
    for n, invalid in ((2, 0.1), (3, 0.6)):
        gt = torch.rand(n, 1, 5, 7, generator=g) * 20 + 0.5
        gt[torch.rand(gt.shape, generator=g) < invalid] = float("nan")
        batches.append((gt * torch.exp(0.3 * torch.randn(gt.shape, generator=g)).nan_to_num(1.0), gt))
    m = DepthMeter((0.1, 1000.0))
    abs_records, rel_records, counts = [], [], []
    for pred, gt in batches:
        m.update(pred, gt)
        valid = np.isfinite(gt.numpy())
        p, t = pred.numpy().astype(np.float64)[valid], gt.numpy().astype(np.float64)[valid]
        abs_records.append(np.abs(p - t).mean())
        rel_records.append((np.abs(p - t) / t).mean())
        counts.append(valid.sum())
    counts = np.array(counts)
    out = m.compute()
    assert out["abs_err"] == pytest.approx((np.array(abs_records) * counts).sum() / counts.sum(), rel=1e-12)
    assert out["rel_err"] == pytest.approx((np.array(rel_records) * counts).sum() / counts.sum(), rel=1e-12)


# -- normals -------------------------------------------------------------------------------------------


def test_normals_losses_hand_computed():
    target = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).repeat(2, 1, 1, 3)
    target[1] = 0  # image 1: no valid pixel, left out of the average
    pred = torch.zeros(2, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([5.0, 0.0, 0.0])  # same direction (scale does not matter): cos 1
    pred[0, :, 0, 1] = torch.tensor([0.0, 2.0, 0.0])  # orthogonal: cos 0
    pred[0, :, 0, 2] = torch.tensor([-1.0, 0.0, 0.0])  # opposite: cos -1
    assert normals_cosine_loss(pred, target).item() == pytest.approx((0 + 1 + 2) / 3)
    assert normals_l1_loss(pred, target).item() == pytest.approx((0 + 2 + 2) / 3)  # sum_c |n - t|
    pred = pred.requires_grad_()
    normals_cosine_loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all()


def test_normals_meter_hand_computed():
    m = NormalsMeter()
    target = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 3, 1, 4)
    pred = torch.tensor([[1.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 3, 1, 4)
    m.update(pred, target)  # errors 0, 90, 180 degrees; the 4th pixel is invalid
    out = m.compute()
    assert out["angle_mean"] == pytest.approx(90.0)
    assert out["angle_median"] == pytest.approx(90.0, abs=1e-3)
    assert out["angle_within_11.25"] == pytest.approx(100 / 3)
    assert out["angle_within_22.5"] == pytest.approx(100 / 3) and out["angle_within_30"] == pytest.approx(100 / 3)


def test_normals_meter_against_numpy_float64_libmtl_formula():
    g = torch.Generator().manual_seed(4)
    target = unit_field(3, 9, 13, g)
    target[:, :, :2] = 0
    pred = F.normalize(target + 0.4 * torch.randn(target.shape, generator=g), dim=1)
    once, streamed = NormalsMeter(), NormalsMeter()
    once.update(pred, target)
    streamed.update(pred[:1], target[:1])
    streamed.update(pred[1:], target[1:])
    # LibMTL's NormalMetric in float64 (its mask is sum(gt) != 0; here the valid pixels are the same)
    p, t = pred.double().numpy(), target.double().numpy()
    mask = (t != 0).any(1)
    err = np.degrees(np.arccos(np.clip((p * t).sum(1)[mask], -1, 1)))
    for out in (once.compute(), streamed.compute()):
        assert out["angle_mean"] == pytest.approx(err.mean(), rel=1e-6)
        assert out["angle_median"] == pytest.approx(np.median(err), abs=1e-3)  # histogram of 0.001 degree bins
        for thr in (11.25, 22.5, 30):
            assert out[f"angle_within_{thr:g}"] == pytest.approx(100 * np.mean(err < thr), rel=1e-12)
    assert once.compute() == streamed.compute()


def test_normals_task_decodes_unit_vectors_and_counts_nan_as_180_degrees():
    task = NormalsTask()
    raw = torch.randn(2, 3, 4, 5) * 7
    assert torch.allclose(task.decode(raw).norm(dim=1), torch.ones(2, 4, 5), atol=1e-6)
    m = task.meter()
    target = unit_field(1, 1, 2)
    m.update(torch.full((1, 3, 1, 2), float("nan")), target)
    assert m.compute()["angle_mean"] == pytest.approx(180.0)


def test_trivial_baselines_predict_the_majority_class_and_the_mean_normal():
    from fastmtl.tasks.semseg import SemsegTask

    g = torch.Generator().manual_seed(6)
    batches = [{"semseg": torch.randint(0, 4, (2, 5, 6), generator=g), "normals": unit_field(2, 5, 6, g)}
               for _ in range(3)]
    batches[0]["semseg"][0, :3] = 255
    batches[1]["semseg"][1] = 2  # class 2 is the majority
    name, seg = SemsegTask(4).baseline(lambda: iter(batches))
    meter = SemsegMeter(4)
    for b in batches:
        meter.update(torch.full_like(b["semseg"], 2), b["semseg"])
    assert name == "majority_class" and seg == {"class": 2, **meter.compute()}
    name, nrm = NormalsTask().baseline(lambda: iter(batches))
    mean = F.normalize(torch.cat([b["normals"].permute(1, 0, 2, 3).reshape(3, -1) for b in batches], 1).sum(1), dim=0)
    assert name == "mean_normal" and nrm["normal"] == pytest.approx(mean.tolist(), abs=1e-6)
    meter = NormalsMeter()
    for b in batches:
        meter.update(mean.view(1, 3, 1, 1).expand_as(b["normals"]), b["normals"])
    assert nrm["angle_mean"] == pytest.approx(meter.compute()["angle_mean"], rel=1e-6)


def test_task_opt_flag_and_its_legacy_aliases():
    from fastmtl.cli import build_parser
    from fastmtl.cli.flags import config_from_args

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--task-opt", "depth.loss=silog", "--depth-norm", "linear"]))
    assert cfg.task_options == {"depth": {"loss": "silog", "norm": "linear"}}
    for argv, message in [(["--task-opt", "depth.loss=l1", "--depth-loss", "l2"], "give one of them"),
                          (["--task-opt", "depth.bogus=1"], "unknown option of task depth; its options: loss, norm"),
                          (["--task-opt", "edges.loss=l1"], "unknown task 'edges'"),
                          (["--task-opt", "depth.loss=l3"], "--task-opt depth.loss: unknown value 'l3'"),
                          (["--depth-norm", "sqrt"], "--depth-norm: unknown value 'sqrt'"),
                          (["--task-opt", "depth.loss"], "must look like TASK.OPTION=VALUE")]:
        with pytest.raises(ConfigError, match=message):
            config_from_args(parser.parse_args(["train", *argv]))


def test_legacy_config_fields_map_into_task_options_and_weights():
    old = {"weight_semseg": 0.25, "weight_depth": 0.75, "depth_loss": "l2", "depth_norm": "linear", "normals_loss": "l1"}
    cfg = Config.from_dict(old).validate()
    assert cfg.task_weights == {"semseg": 0.25, "depth": 0.75}
    assert cfg.task_options == {"depth": {"loss": "l2", "norm": "linear"}}  # normals is not one of the run's tasks
    assert Config.from_json(cfg.to_json()) == cfg and "depth_loss" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="depth_loss = 'l2' and task_options.*give one of them"):
        Config.from_dict({"depth_loss": "l2", "task_options": {"depth": {"loss": "l1"}}})
    with pytest.raises(ConfigError, match="--task-opt depth.loss: unknown value 'l9'"):
        Config.from_dict({"task_options": {"depth": {"loss": "l9"}}}).validate()
