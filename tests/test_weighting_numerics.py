"""Weighting numerics: non-finite options are refused, a non-finite loss, weight or gradient never
reaches the parameters, and the methods give their papers' results at tiny gradient scales
(1e-3 and 1e-6: the ``--weighting-grads rep`` regime), checked against float64 closed forms."""
import math

import pytest
import torch

from fastmtl.config import Config, ConfigError
from fastmtl.step import TrainStep
from fastmtl.weighting import METHODS, NAMES, build, parse_options
from fastmtl.weighting.training import WeightedTrainStep

from weighting_toys import ToyModel, toy_data, toy_loss

SCALES = (1e-3, 1e-6)
NUMERIC = [(name, key) for name in NAMES for key, value in METHODS[name].defaults.items()
           if isinstance(value, (int, float)) and not isinstance(value, bool)]


def two_task_grads(scale, d=64, seed=0, conflict=True):
    """``(2, d)`` float64 gradients with norms ~``scale``; the two conflict (negative dot) if asked."""
    g = torch.randn(2, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if conflict:
        g[1] -= 1.5 * g[0]
    return g / g.norm(dim=1).max() * scale


# -- options -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,key", NUMERIC)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_option_values_are_refused_naming_the_option(name, key, value):
    with pytest.raises(ValueError, match=rf"weighting {name}: option {key} must be a finite number, got"):
        build(name, 2, **{key: value})


def test_non_finite_option_from_the_flag_is_a_config_error_naming_the_flag(tmp_path):
    opts = parse_options("dwa", ["temperature=nan"])
    with pytest.raises(ConfigError, match=r"^--weighting-opt: weighting dwa: option temperature must be a finite"):
        Config(weighting="dwa", weighting_opts=opts, out=str(tmp_path)).validate()


def test_fixed_weights_must_be_finite():
    with pytest.raises(ValueError, match="weighting fixed: weights must be"):
        build("fixed", 2, weights="nan,1")


# -- non-finite weights and gradients never reach the parameters ----------------------------------

def _nan_uw():
    method = build("uw", 2)
    with torch.no_grad():
        method.log_var[0] = math.nan  # NaN task weight from finite losses
    return method


def _nan_cagrad():
    method = build("cagrad", 2)
    method.options["calpha"] = math.nan  # what a NaN temperature did to DWA: NaN coefficients
    return method


def _run(step_fn, model, method_params=()):
    x, ya, yb = toy_data()
    opt = torch.optim.SGD([*model.parameters(), *method_params], lr=0.1, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return step_fn(x, ya, yb, opt, sched)


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
@pytest.mark.parametrize("make,mode", [(_nan_uw, "params"), (_nan_cagrad, "params"), (_nan_cagrad, "rep")])
@pytest.mark.parametrize("amp", [False, True])
def test_non_finite_task_weights_skip_the_step_and_leave_the_parameters(make, mode, amp):
    model, method = ToyModel(), make()
    before = [p.detach().clone() for p in model.parameters()]
    step = WeightedTrainStep(method, model, model, toy_loss, ["a", "b"], mode)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, enabled=amp)
    result = _run(lambda x, ya, yb, opt, sched: step(x, ya, yb, torch.enable_grad, opt, scaler, sched), model)
    assert bool(result[2])  # reported as skipped (the trainer logs it and counts it)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _poison(param):
    """Make the backward write an inf into ``param.grad`` (a finite loss, a non-finite gradient)."""
    param.register_hook(lambda g: torch.full_like(g, math.inf))


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
@pytest.mark.parametrize("name,mode", [("uw", "params"), ("pcgrad", "rep"), ("graddrop", "rep")])
def test_a_non_finite_gradient_behind_a_finite_loss_skips_the_weighted_step(name, mode):
    model, method = ToyModel(), build(name, 2)
    _poison(model.encoder.lin.weight)
    before = [p.detach().clone() for p in model.parameters()]
    step = WeightedTrainStep(method, model, model, toy_loss, ["a", "b"], mode)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    result = _run(lambda x, ya, yb, opt, sched: step(x, ya, yb, torch.enable_grad, opt, scaler, sched), model,
                  list(method.parameters()))
    assert bool(result[2])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


class _Runtime:
    device = torch.device("cpu")

    def autocast(self):
        return torch.enable_grad()


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_a_non_finite_gradient_behind_a_finite_loss_skips_the_fixed_weights_step():
    model = ToyModel()
    _poison(model.a.weight)
    before = [p.detach().clone() for p in model.parameters()]

    def step_fn(x, ya, yb, opt, sched):
        step = TrainStep(model, lambda out, t: toy_loss(out, t["a"], t["b"]), opt,
                         torch.amp.GradScaler("cpu", enabled=False), sched, _Runtime())
        return step.run(x, {"a": ya, "b": yb})

    assert bool(_run(step_fn, model).skipped)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# -- PCGrad, CAGrad, GradDrop, Nash-MTL at tiny gradient scales ----------------------------------

@pytest.mark.parametrize("scale", SCALES)
def test_pcgrad_projection_is_exact_at_tiny_scales(scale):
    g = two_task_grads(scale)
    assert g[0] @ g[1] < 0
    p1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    p2 = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    got = build("pcgrad", 2)(None, g.float()).grad.double()
    assert torch.allclose(got, p1 + p2, rtol=0, atol=1e-5 * (p1 + p2).norm().item())


def _cagrad_closed_form(g, calpha=0.5):
    """CAGrad (rescale 1) for two tasks in float64 without epsilons: the simplex problem
    ``min_w g_w . g0 + c |g_w|`` is convex in ``w_1`` on [0, 1], solved by golden-section search."""
    g0 = g.mean(0)
    c = calpha * g0.norm()

    def objective(w1):
        gw = w1 * g[0] + (1 - w1) * g[1]
        return gw @ g0 + c * gw.norm()

    lo, hi, ratio = 0.0, 1.0, (math.sqrt(5) - 1) / 2
    for _ in range(200):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        lo, hi = (lo, b) if objective(a) < objective(b) else (a, hi)
    w1 = (lo + hi) / 2
    gw = w1 * g[0] + (1 - w1) * g[1]
    return (g0 + c / gw.norm() * gw) / (1 + calpha ** 2)


@pytest.mark.parametrize("scale", SCALES)
def test_cagrad_matches_its_closed_form_at_tiny_scales(scale):
    g = two_task_grads(scale)
    expected = _cagrad_closed_form(g)
    got = build("cagrad", 2)(None, g.float()).grad.double()
    assert torch.allclose(got, expected, rtol=0, atol=1e-4 * expected.norm().item())


@pytest.mark.parametrize("scale", SCALES)
def test_graddrop_always_keeps_elements_whose_tasks_agree_in_sign(scale):
    g = torch.rand(3, 50000, generator=torch.Generator().manual_seed(1)) * scale + scale * 0.01
    g[:, ::2] *= -1  # every element: all three tasks agree (positive or negative)
    mult = build("graddrop", 3).multipliers(g)
    assert bool((mult == 1).all())


@pytest.mark.parametrize("scale", SCALES)
def test_graddrop_purity_and_draws_match_a_float64_computation(scale):
    g = (torch.randn(2, 20000, generator=torch.Generator().manual_seed(2)) * scale)
    method = build("graddrop", 2, seed=5)
    mult = method.multipliers(g)
    gd = g.double()
    p = 0.5 * (1 + gd.sum(0) / gd.abs().sum(0))
    u = torch.rand(p.shape, generator=torch.Generator().manual_seed(5)).double()
    keep = (p > u)[None] & (gd > 0) | (p < u)[None] & (gd < 0)
    near_tie = ((p - u).abs() < 1e-6)[None].expand_as(keep)  # float32 vs float64 purity on a tie
    assert bool((mult.bool() == keep)[~near_tie].all())


def test_nash_mtl_alpha_stays_bounded_when_a_task_gradient_is_exactly_zero():
    g = torch.randn(3, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1e-3
    g[1] = 0.0
    method = build("nash_mtl", 3, max_norm=0.0)
    for _ in range(8):
        result = method(None, g.float())
        assert bool(torch.isfinite(result.weights).all())
    alpha = method.alpha
    # the zero-gradient task keeps its previous (here: initial) normalised alpha, as bounded as the others
    assert method.alpha_normalized[1].item() == pytest.approx(1.0)
    assert alpha[1].item() <= alpha[[0, 2]].max().item() * 10
    # the others are the bargaining solution of the game without it: a_i (G G^T a)_i = 1
    rest = g[[0, 2]]
    a = alpha[[0, 2]]
    assert torch.allclose(a * (rest @ rest.T @ a), torch.ones(2, dtype=torch.float64), rtol=1e-4)
    assert method.head_weights(result.weights.double())[1].item() == pytest.approx(alpha[1].item())


@pytest.mark.parametrize("scale", SCALES)
def test_nash_mtl_is_scale_free(scale):
    g = two_task_grads(1.0)
    unit = build("nash_mtl", 2, max_norm=0.0)(None, g.float()).grad.double()
    tiny = build("nash_mtl", 2, max_norm=0.0)(None, (g * scale).float()).grad.double()
    assert torch.allclose(tiny, unit, rtol=0, atol=1e-4 * unit.norm().item())


@pytest.mark.parametrize("scale", SCALES)
def test_gradvac_is_scale_free(scale):
    g = two_task_grads(1.0, conflict=True)
    unit = build("gradvac", 2)(None, g.float()).grad.double()
    tiny = build("gradvac", 2)(None, (g * scale).float()).grad.double() / scale
    assert torch.allclose(tiny, unit, rtol=0, atol=1e-4 * unit.norm().item())
