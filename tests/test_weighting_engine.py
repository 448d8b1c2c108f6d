"""The engine that turns task losses into .grad: both gradient modes against independent
autograd computations, the fp16 GradScaler path, torch.compile without recompiles."""
import pytest
import torch

from fastmtl.weighting import NAMES, build
from fastmtl.weighting.engine import WeightedBackward, representation, split_parameters
from fastmtl.weighting.training import WeightedTrainStep

from weighting_toys import NoScaler, ToyModel, toy_data, toy_loss

GRADIENT = [n for n in NAMES if build(n, 2).kind == "gradient"]


def losses_of(model, x, ya, yb, rep=False):
    if rep:
        _, tensors, leaves, for_heads = representation(model.encoder(x))
        out = model.predict_from_features(for_heads, None)
    else:
        out, tensors, leaves = model(x), None, None
    _, parts = toy_loss(out, ya, yb)
    return torch.stack([parts["a"], parts["b"]]), tensors, leaves


@pytest.mark.parametrize("name", GRADIENT)
def test_params_mode_writes_the_methods_combination(name):
    model, (x, ya, yb) = ToyModel(), toy_data()
    shared, heads = split_parameters(model)
    method, twin = build(name, 2), build(name, 2)
    losses, _, _ = losses_of(model, x, ya, yb)
    WeightedBackward(method, shared, heads, "params").params_backward(losses, NoScaler())
    # independent: per-task gradients by autograd, the standalone method on them
    losses, _, _ = losses_of(model, x, ya, yb)
    g = torch.stack([torch.cat([p.reshape(-1) for p in torch.autograd.grad(l, shared, retain_graph=True)])
                     for l in losses])
    result = twin(losses.detach(), g)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in shared]), result.grad, atol=1e-6), name
    h = twin.head_weights(result.weights.double()).float() if name != "graddrop" else torch.ones(2)
    expected = torch.autograd.grad((h * losses).sum(), heads)
    for p, e in zip(heads, expected):
        assert torch.allclose(p.grad, e, atol=1e-6), name


@pytest.mark.parametrize("name", GRADIENT)
def test_rep_mode_is_one_encoder_backward_of_the_combined_representation_gradient(name):
    model, (x, ya, yb) = ToyModel(), toy_data()
    shared, heads = split_parameters(model)
    method, twin = build(name, 2), build(name, 2)
    losses, tensors, leaves = losses_of(model, x, ya, yb, rep=True)
    WeightedBackward(method, shared, heads, "rep").rep_backward(losses, tensors, leaves, NoScaler())
    losses, tensors, leaves = losses_of(model, x, ya, yb, rep=True)
    r = torch.stack([torch.autograd.grad(l, leaves, retain_graph=True)[0].reshape(-1) for l in losses])
    if name == "graddrop":  # one mask per feature element, shared by the batch: s = sum_n g * sign(input)
        n = x.shape[0]
        signed = (r.view(2, n, -1) * leaves[0].detach().sign().view(1, n, -1)).sum(1)
        combined = (twin.multipliers(signed)[:, None, :] * r.view(2, n, -1)).sum(0).reshape(-1)
    else:
        combined = twin(losses.detach(), r).grad
    expected = torch.autograd.grad(tensors, shared, [combined.view_as(tensors[0])], retain_graph=True)
    for p, e in zip(shared, expected):
        assert torch.allclose(p.grad, e, atol=1e-6), name


def test_loss_method_network_and_own_gradients():
    model, (x, ya, yb) = ToyModel(), toy_data()
    method = build("uw", 2)
    losses, _, _ = losses_of(model, x, ya, yb)
    WeightedBackward(method, [], [], "params").losses_backward(losses, NoScaler())
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    s = torch.tensor([-0.5, -0.5], requires_grad=True)
    losses, _, _ = losses_of(model, x, ya, yb)
    (losses / (2 * s.exp()) + s / 2).sum().backward()
    for a, b in zip(got, model.parameters()):
        assert torch.allclose(a, b.grad, atol=1e-6)
    assert torch.allclose(method.log_var.grad, s.grad, atol=1e-6)


@pytest.mark.parametrize("name,mode", [("pcgrad", "params"), ("mgda_ub", "rep"), ("uw", "params")])
def test_grad_scaler_scales_per_task_backward_and_unscales_before_combining(name, mode):
    x, ya, yb = toy_data()
    results = []
    for scaler in (torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        torch.manual_seed(0)
        model = ToyModel()
        method = build(name, 2)
        opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1, fused=True)
        step = WeightedTrainStep(method, model, model, toy_loss, ["a", "b"], mode)
        step(x, ya, yb, torch.enable_grad, opt, scaler, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_overflowing_scaled_gradients_skip_the_step_and_keep_the_method_state():
    x, ya, yb = toy_data()
    model = ToyModel()
    method = build("nash_mtl", 2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # scale * loss overflows float32
    step = WeightedTrainStep(method, model, model, toy_loss, ["a", "b"], "params")
    loss, _, skipped = step(x, ya, yb, torch.enable_grad, opt, scaler, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    assert loss == loss and not skipped  # not reported as a non-finite loss: the scaler handles it
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert scaler.get_scale() < 2.0 ** 127 and method.steps == 0


@pytest.mark.parametrize("mode", ["params", "rep"])
def test_compiled_model_matches_eager_without_recompiling(mode):
    import torch._dynamo

    x, ya, yb = toy_data()
    finals = []
    for compiled in (False, True):
        torch.manual_seed(0)
        torch._dynamo.reset()
        model = ToyModel()
        method = build("pcgrad", 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        forward = torch.compile(model, backend="aot_eager") if compiled and mode == "params" else model
        step = WeightedTrainStep(method, model, forward, toy_loss, ["a", "b"], mode, compile=compiled,
                                 compile_backend="aot_eager")
        step(x, ya, yb, torch.enable_grad, opt, torch.amp.GradScaler("cpu", enabled=False), sched)
        with torch._dynamo.config.patch(error_on_recompile=True):
            for i in range(3):
                step(x + 0.1 * i, ya, yb, torch.enable_grad, opt, torch.amp.GradScaler("cpu", enabled=False), sched)
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        assert torch.allclose(a, b, atol=1e-5)
