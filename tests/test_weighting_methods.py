"""Every weighting method against an independent computation on fixed inputs (closed forms,
brute-force searches over the simplex, the methods' defining properties), plus options and state."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from fastmtl.weighting import METHODS, NAMES, build, parse_options
from fastmtl.weighting.solvers import min_norm_point, nash_bargaining, project_to_simplex


def simplex_grid(t, steps):
    """All points of the simplex with coordinates in multiples of 1/steps."""
    pts = [c for c in itertools.product(range(steps + 1), repeat=t - 1) if sum(c) <= steps]
    return torch.tensor([[*c, steps - sum(c)] for c in pts], dtype=torch.float64) / steps


def random_grads(t, d=40, conflict=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(t, d, generator=g, dtype=torch.float64)
    if conflict:
        grads[1] = -0.6 * grads[0] + 0.5 * grads[1]
    return grads


# -- loss weighting ----------------------------------------------------------------------------


def test_uw_objective_weights_and_log_variance_gradient_are_kendalls():
    m = build("uw", 2)
    losses = torch.tensor([2.0, 0.5], requires_grad=True)
    result = m(losses)
    s = torch.tensor([-0.5, -0.5])
    expected = (torch.tensor([2.0, 0.5]) / (2 * s.exp()) + s / 2).sum()
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(result.weights, 1 / (2 * s.exp()))
    result.loss.backward()
    # d/ds [L e^-s / 2 + s / 2] = -L e^-s / 2 + 1/2
    assert torch.allclose(m.log_var.grad, -torch.tensor([2.0, 0.5]) * (-s).exp() / 2 + 0.5)
    assert torch.allclose(losses.grad, 1 / (2 * s.exp()))


def test_imtl_l_weights_are_exp_scales_and_scaled_losses_go_to_one():
    m = build("imtl_l", 2)
    with torch.no_grad():
        m.log_scale.copy_(torch.tensor([0.3, -1.0]))
    weights, own = m.weights_and_own_grads(torch.tensor([2.0, 4.0]))
    assert torch.allclose(weights, torch.tensor([0.3, -1.0]).exp())
    assert torch.allclose(own[0], torch.tensor([0.3, -1.0]).exp() * torch.tensor([2.0, 4.0]) - 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(300):  # minimising over s alone: exp(s_t) L_t -> 1
        opt.zero_grad()
        m(torch.tensor([2.0, 4.0])).loss.backward()
        opt.step()
    assert torch.allclose(m.log_scale.exp() * torch.tensor([2.0, 4.0]), torch.ones(2), atol=1e-3)


def test_dwa_weights_from_a_loss_history():
    m = build("dwa", 2, period=2)
    history = [[1.0, 2.0], [3.0, 2.0], [1.0, 1.0], [1.0, 1.0], [5.0, 5.0]]  # periods: [2, 2], [1, 1], ...
    seen = [m(torch.tensor(l, requires_grad=True)).weights for l in history]
    for w in seen[:4]:  # the first two periods: weights 1
        assert torch.equal(w, torch.ones(2))
    r = torch.tensor([1.0 / 2.0, 1.0 / 2.0])  # period 1 mean over period 0 mean, per task
    assert torch.allclose(seen[4], 2 * F.softmax(r / 2.0, 0))
    m2 = build("dwa", 2, period=1, temperature=1.0)
    for l in ([1.0, 1.0], [2.0, 0.5]):
        m2(torch.tensor(l))
    w = m2(torch.tensor([1.0, 1.0])).weights
    assert torch.allclose(w, 2 * F.softmax(torch.tensor([2.0, 0.5]), 0))


def test_gls_gradient_is_the_geometric_mean_gradient_and_scale_free():
    losses = torch.tensor([0.3, 2.0, 5.0], requires_grad=True)
    m = build("gls", 3)
    result = m(losses)
    reference = losses.prod() ** (1 / 3)
    assert result.loss.item() == pytest.approx(reference.item(), rel=1e-6)
    (expected,) = torch.autograd.grad(reference, losses)
    assert torch.allclose(result.weights, expected, rtol=1e-5)
    scaled = m(torch.tensor([0.3, 2.0, 500.0])).weights * torch.tensor([0.3, 2.0, 500.0])
    unscaled = result.weights * losses.detach()
    assert torch.allclose(scaled / scaled.sum(), unscaled / unscaled.sum(), rtol=1e-5)


def test_rlw_draws_softmax_of_a_normal_from_its_seed():
    m = build("rlw", 3, seed=7)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        w = m(torch.ones(3)).weights
        assert torch.allclose(w, F.softmax(torch.randn(3, generator=g), 0))


def test_famo_weights_and_one_logit_update_match_the_paper():
    m = build("famo", 2)
    l0, l1 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.9])
    w0 = m(l0).weights
    assert torch.allclose(w0, (0.5 / (l0 + 1e-8)) / (0.5 / (l0 + 1e-8)).sum(), rtol=1e-5)  # z = 1/2: sum w L = 1
    m(l1)  # first: the logits update from l0 to l1
    xi = torch.zeros(2, requires_grad=True)
    delta = (l0 + 1e-8).log() - (l1 + 1e-8).log()
    (d,) = torch.autograd.grad(F.softmax(xi, 0), xi, grad_outputs=delta)
    opt = torch.optim.Adam([xi], lr=0.025, weight_decay=1e-3)
    xi.grad = d
    opt.step()
    assert torch.allclose(m.logits.float(), xi.detach(), atol=1e-6)
    assert m.logits[1] > m.logits[0]  # task 2's loss fell less: it gains weight


def test_fixed_weights_and_bad_weights():
    assert torch.equal(build("fixed", 2, weights="0.25,2").weights, torch.tensor([0.25, 2.0]))
    with pytest.raises(ValueError, match="weights must be 2 finite numbers"):
        build("fixed", 2, weights=[1.0])


# -- gradient balancing --------------------------------------------------------------------------


def test_mgda_two_task_min_norm_point_matches_a_line_search():
    for seed in range(5):
        g = random_grads(2, seed=seed)
        result = build("mgda_ub", 2)(None, g.float())
        gammas = torch.linspace(0, 1, 20001, dtype=torch.float64)
        norms = (gammas[:, None] * g[0] + (1 - gammas[:, None]) * g[1]).norm(dim=1)
        best = gammas[norms.argmin()]
        assert result.weights[0].item() == pytest.approx(best.item(), abs=1e-3)
        closed = ((g[1] - g[0]) @ g[1] / (g[0] - g[1]).pow(2).sum()).clamp(0, 1)
        assert result.weights[0].item() == pytest.approx(closed.item(), abs=1e-6)
    dominated = torch.tensor([[1.0, 0.0], [3.0, 0.5]])  # g1 . g2 >= |g1|^2: the min-norm point is g1
    assert torch.allclose(build("mgda_ub", 2)(None, dominated).grad, dominated[0])


def test_mgda_three_tasks_is_the_min_norm_point_of_the_hull():
    g = random_grads(3, d=6, seed=3)
    a = min_norm_point(g @ g.T)
    grid = simplex_grid(3, 200)
    assert (a @ g).norm() <= (grid @ g).norm(dim=1).min() + 1e-6
    d = a @ g  # optimality: every task gradient has g_t . d >= |d|^2
    assert bool(((g @ d) >= d @ d - 1e-6).all())


def test_mgda_normalizations_rescale_the_gradients():
    g = random_grads(2).float()
    losses = torch.tensor([2.0, 0.5])
    for kind, n in (("l2", g.norm(dim=1)), ("loss", losses), ("loss+", losses * g.norm(dim=1))):
        result = build("mgda_ub", 2, normalization=kind)(losses, g)
        gn = g / n[:, None]
        gamma = ((gn[1] - gn[0]) @ gn[1] / (gn[0] - gn[1]).pow(2).sum()).clamp(0, 1)
        assert torch.allclose(result.grad, gamma * gn[0] + (1 - gamma) * gn[1], atol=1e-5), kind


def test_pcgrad_two_task_projection():
    g1, g2 = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([-1.0, 1.0, 0.0])
    result = build("pcgrad", 2)(None, torch.stack([g1, g2]))
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert torch.allclose(result.grad, p1 + p2, atol=1e-6)
    assert (result.grad @ g1) >= 0 and (result.grad @ g2) >= 0
    agree = torch.stack([g1, g1 + g2 * 0.1])  # no conflict: the plain sum
    assert torch.allclose(build("pcgrad", 2)(None, agree).grad, agree.sum(0))


def test_cagrad_solves_its_subproblem():
    for t in (2, 3):
        g = random_grads(t, d=8, seed=t)
        result = build("cagrad", t)(None, g.float())
        gram, b = g @ g.T, torch.full((t,), 1.0 / t, dtype=torch.float64)
        c = 0.5 * (gram.mean() + 1e-8).sqrt() + 1e-8
        grid = simplex_grid(t, 400 if t == 2 else 120)
        obj = grid @ gram @ b + c * ((grid @ gram * grid).sum(1) + 1e-8).sqrt()
        w = grid[obj.argmin()]
        gw = w @ g
        expected = (g.mean(0) + c / gw.norm() * gw) / (1 + 0.5 ** 2)
        assert torch.allclose(result.grad.double(), expected, atol=3e-3 * expected.norm())


def test_imtl_g_update_has_equal_projections_on_every_unit_gradient():
    for t in (2, 3, 4):
        g = random_grads(t, seed=t).float()
        result = build("imtl_g", t)(None, g)
        proj = g / g.norm(dim=1, keepdim=True) @ result.grad
        assert torch.allclose(proj, proj.mean().expand(t), rtol=1e-4)
        assert result.weights.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_nash_mtl_bargaining_solution():
    g = random_grads(3, seed=1)
    alpha = nash_bargaining(g @ g.T, torch.ones(3), iters=50)
    assert torch.allclose(alpha * (g @ g.T @ alpha), torch.ones(3, dtype=torch.float64), atol=1e-8)
    ortho = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # orthogonal gradients: alpha_i = 1 / |g_i|
    m = build("nash_mtl", 2, max_norm=0.0)
    assert torch.allclose(m(None, ortho).weights, torch.tensor([1 / 3.0, 2.0]), rtol=1e-5)
    clipped = build("nash_mtl", 2, max_norm=0.1)(None, ortho)
    assert clipped.grad.norm().item() == pytest.approx(0.1, rel=1e-4)


def test_aligned_mtl_matches_the_svd_construction():
    for t in (2, 3):
        g = random_grads(t, seed=t).float()
        u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
        expected = s.min() * (u @ vh).sum(0)
        assert torch.allclose(build("aligned_mtl", t)(None, g).grad.double(), expected, atol=1e-4)


def test_gradvac_lifts_the_cosine_to_its_target():
    g = random_grads(2, seed=2).float()
    m = build("gradvac", 2, beta=0.5)
    first = m(None, g)  # target 0 at the start: a conflicting pair is projected (PCGrad)
    p1 = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    p2 = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    assert torch.allclose(first.grad, p1 + p2, atol=1e-4)
    rho = F.cosine_similarity(g[0], g[1], dim=0).double()
    assert torch.allclose(m.target[0, 1], 0.5 * rho, atol=1e-6)  # EMA with beta 0.5 from 0
    with torch.no_grad():
        m.target.fill_(0.3)
    second = m(None, g)

    def lift(gi, gj, phi=0.3):  # the multiple of gj that makes cos(gi + w gj, gj) = phi
        r = F.cosine_similarity(gi, gj, dim=0)
        return gi.norm() * (phi * (1 - r ** 2).sqrt() - r * (1 - phi ** 2) ** 0.5) / (gj.norm() * (1 - phi ** 2) ** 0.5)

    w01, w10 = lift(g[0], g[1]), lift(g[1], g[0])
    assert F.cosine_similarity(g[0] + w01 * g[1], g[1], dim=0).item() == pytest.approx(0.3, abs=1e-5)
    assert torch.allclose(second.weights, torch.stack([1 + w10, 1 + w01]), atol=1e-5)
    assert torch.allclose(second.grad, (1 + w10) * g[0] + (1 + w01) * g[1], atol=1e-4)


def test_graddrop_keeps_one_sign_per_element_at_the_rate_of_its_purity():
    g = torch.randn(2, 20000)
    result = build("graddrop", 2)(None, g)
    pos, neg = g.clamp(min=0).sum(0), g.clamp(max=0).sum(0)
    picked_pos = torch.isclose(result.grad, pos)
    assert bool((picked_pos | torch.isclose(result.grad, neg)).all())
    p = 0.5 * (1 + g.sum(0) / g.abs().sum(0))
    mixed = (g[0] * g[1] < 0)
    # kept positive with probability P: the mean of (picked positive - P) is ~0 (std ~ 0.5 / sqrt(n))
    assert abs((picked_pos[mixed].float() - p[mixed]).mean().item()) < 0.03
    leaky = build("graddrop", 2, leak=1.0)(None, g)
    assert torch.allclose(leaky.grad, g.sum(0))


def test_gradnorm_weight_gradient_matches_the_paper_loss():
    g = random_grads(2, seed=4).float()
    m = build("gradnorm", 2, alpha=1.5)
    l0 = torch.tensor([2.0, 1.0])
    m(l0, g)  # records L(0)
    with torch.no_grad():
        m.logits.copy_(torch.tensor([0.2, -0.1]))
    lt = torch.tensor([1.0, 0.8])
    result = m(lt, g)
    result.loss.backward()
    logits = torch.tensor([0.2, -0.1], requires_grad=True)
    w = 2 * F.softmax(logits, 0)
    norms = torch.stack([(w[i] * g[i]).norm() for i in range(2)])
    r = (lt / l0) / (lt / l0).mean()
    reference = (norms - (norms.mean() * r ** 1.5).detach()).abs().sum()
    (expected,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(m.logits.grad, expected, atol=1e-5)
    assert torch.allclose(result.weights, w.detach(), atol=1e-6)
    assert torch.allclose(result.grad, w.detach() @ g, atol=1e-5)


def test_simplex_projection():
    y = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    x = project_to_simplex(y)
    grid = simplex_grid(3, 300)
    assert (x - y).norm() <= (grid - y).norm(dim=1).min() + 1e-9
    assert x.sum().item() == pytest.approx(1.0)


# -- interface ----------------------------------------------------------------------------------


def _call(m, losses, grads):
    return m(losses.clone().requires_grad_(True), grads) if m.kind == "loss" else m(losses, grads)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_continues_exactly(name):
    opts = {"period": 2} if name == "dwa" else {}
    straight, first = build(name, 3, **opts), build(name, 3, **opts)
    data = [(torch.rand(3) + 0.5, torch.randn(3, 30)) for _ in range(6)]
    expected = [_call(straight, l, g) for l, g in data]
    for l, g in data[:3]:
        _call(first, l, g)
    state = first.state_dict()
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    resumed = build(name, 3, **opts)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for (l, g), want in zip(data[3:], expected[3:]):
        got = _call(resumed, l, g)
        assert torch.equal(got.weights, want.weights), name
        if want.grad is not None:
            assert torch.equal(got.grad, want.grad), name


def test_every_method_is_registered_with_a_kind_and_a_paper():
    assert set(NAMES) == {"fixed", "uw", "dwa", "rlw", "gls", "famo", "imtl_l", "gradnorm", "mgda_ub", "pcgrad",
                          "cagrad", "imtl_g", "nash_mtl", "aligned_mtl", "gradvac", "graddrop"}
    for name, cls in METHODS.items():
        assert cls.kind in ("loss", "gradient") and cls.paper, name


def test_options_are_typed_and_checked():
    assert parse_options("dwa", ["temperature=3"]) == {"temperature": 3.0}
    assert parse_options("nash_mtl", ["update-weights-every=2", "max_norm=0"]) == {"update_weights_every": 2,
                                                                                 "max_norm": 0.0}
    with pytest.raises(ValueError, match="valid options: period, temperature"):
        parse_options("dwa", ["temp=3"])
    with pytest.raises(ValueError, match="expects a float"):
        parse_options("dwa", ["temperature=hot"])
    with pytest.raises(ValueError, match="expected key=value"):
        parse_options("dwa", ["temperature"])
    with pytest.raises(ValueError, match="valid choices: fixed, uw"):
        build("nope", 2)
    with pytest.raises(ValueError, match="expected grads of shape"):
        build("pcgrad", 2)(None, torch.zeros(3, 4))
