"""Two conflicting quadratic objectives in the plane: the methods' documented behaviour.

``f1(x) = |x - a|^2`` and ``f2(x) = k |x - b|^2``; the Pareto set is the segment [a, b]."""
import pytest
import torch

from fastmtl.weighting import build

A, B = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
START = torch.tensor([2.0, -1.5])


def distance_to_segment(x):
    t = ((x - A) @ (B - A) / ((B - A) @ (B - A))).clamp(0, 1)
    return (x - (A + t * (B - A))).norm().item()


def run(name, k=1.0, steps=400, lr=0.02, **options):
    method = build(name, 2, **options)
    x = START.clone().requires_grad_(True)
    own = torch.optim.SGD(method.parameters(), lr=lr) if list(method.parameters()) else None
    path = [x.detach().clone()]
    for _ in range(steps):
        losses = torch.stack([(x - A).pow(2).sum(), k * (x - B).pow(2).sum()])
        if method.kind == "loss":
            x.grad = None
            if own:
                own.zero_grad()
            method(losses).loss.backward()
            if own:
                own.step()
            step = x.grad.clone()
        else:
            grads = torch.stack([torch.autograd.grad(l, x, retain_graph=True)[0] for l in losses])
            result = method(losses.detach(), grads)
            if own:
                own.zero_grad()
                result.loss.backward()
                own.step()
            step = result.grad
        with torch.no_grad():
            x -= lr * step
        path.append(x.detach().clone())
    return torch.stack(path)


@pytest.mark.parametrize("name", ["mgda_ub", "pcgrad", "cagrad", "imtl_g", "nash_mtl", "aligned_mtl", "gradvac",
                                  "gradnorm", "uw", "dwa", "famo", "imtl_l", "rlw"])
def test_every_method_reaches_the_pareto_set(name):
    path = run(name, k=10.0, steps=500, lr=0.04, **({"period": 10} if name == "dwa" else {}))
    assert distance_to_segment(path[-1]) < 2e-2, (name, path[-1])


def test_fixed_weights_converge_to_the_weighted_mean():
    final = run("fixed", k=10.0, steps=2000, lr=0.01)[-1]
    assert torch.allclose(final, (A + 10 * B) / 11, atol=1e-4)


def test_mgda_decreases_every_objective_at_every_step():
    path = run("mgda_ub", k=10.0, lr=0.01, steps=800)
    f1 = (path - A).pow(2).sum(1)
    f2 = (path - B).pow(2).sum(1)
    assert bool((f1[1:] <= f1[:-1] + 1e-6).all()) and bool((f2[1:] <= f2[:-1] + 1e-6).all())
    # and stops on the Pareto set: a Pareto-stationary point, where the min-norm direction is 0
    assert distance_to_segment(path[-1]) < 1e-3 and (path[-1] - path[-2]).norm() < 1e-4


def test_pcgrad_update_never_conflicts_with_either_task():
    method = build("pcgrad", 2)
    x = START.clone()
    for _ in range(100):
        g = torch.stack([2 * (x - A), 20 * (x - B)])
        d = method(None, g).grad
        assert (d @ g[0]) >= -1e-5 and (d @ g[1]) >= -1e-5
        x = x - 0.01 * d


def test_nash_mtl_and_gls_are_invariant_to_a_loss_scale():
    # Nash-MTL: alpha_2 scales by 1/k, so the update is the same
    assert torch.allclose(run("nash_mtl", k=1.0, steps=200), run("nash_mtl", k=10.0, steps=200), atol=1e-4)
    # GLS: the objective (and its gradient) is scaled by k^(1/T): the same path at a rescaled step
    assert torch.allclose(run("gls", k=1.0, steps=200, lr=0.02), run("gls", k=10.0, steps=200, lr=0.02 / 10 ** 0.5),
                          atol=1e-4)
    # equal weights are not: the scaled task wins
    fixed_one, fixed_ten = run("fixed", k=1.0)[-1], run("fixed", k=10.0)[-1]
    assert (fixed_ten - B).norm() < (fixed_one - B).norm() - 0.3
