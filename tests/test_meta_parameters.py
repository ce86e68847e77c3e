"""Algorithms that own meta-parameters (Meta-SGD, MAML++) and ANIL, against references computed another way
(float64): central finite differences of a hand-written inner loop on plain torch.autograd, and a
hand-unrolled first-order loop. The references use torch.func.functional_call on the model and nothing of
metarun's inner loop or gradients."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from metarun.algorithms.anil import ANIL
from metarun.algorithms.convex_maml import ConvexMAML
from metarun.algorithms.maml import BNWB, LSLR, MAML
from metarun.algorithms.meta_sgd import LR, MetaSGD
from metarun.core.functional import Objective, detached
from metarun.core.tasks import Episode
from metarun.models import Conv4
from metarun.run.execution import task_grads
from test_gradients import central_differences, head_only_query_loss, leaves, mlp, relative_error

STEP = 0.3


def perturbed(meta: dict, seed: int = 2) -> dict:
    """Meta-parameters moved off their (uniform) start, so that each entry's own gradient shows."""
    g = torch.Generator().manual_seed(seed)
    return {k: v * (0.5 + torch.rand(v.shape, generator=g, dtype=v.dtype)) for k, v in meta.items()}


def meta_sgd_query_loss(theta: dict, task, steps: int) -> float:
    """phi <- phi - alpha * grad L_support(phi), alpha = theta's `algo.lr.*` entries."""
    sx, sy, qx, qy = task
    p = leaves({k: v for k, v in theta.items() if not k.startswith("algo.")})
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(mlp(p, sx), sy), list(p.values()))
        p = {k: (p[k] - theta[LR + k] * g).detach().requires_grad_() for k, g in zip(p, grads, strict=True)}
    return F.mse_loss(mlp(p, qx), qy).item()


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_sgd_meta_gradient_matches_finite_differences(tiny, steps):
    model, loss, task = tiny
    algo = MetaSGD("meta_sgd", steps=steps, lr=STEP)
    theta = detached(model)
    theta = {**theta, **perturbed(algo.meta_parameters(theta, loss))}
    meta_grad, update, metrics = algo.task(theta, loss, *task)
    assert meta_grad.keys() == theta.keys() and update.keys() == detached(model).keys()
    reference = central_differences(lambda t: meta_sgd_query_loss(t, task, steps), theta)
    assert relative_error(meta_grad, reference) < 1e-6
    # The learned rates get gradients of their own, and they are not small beside the network's.
    assert all(meta_grad[k].abs().max() > 1e-4 for k in theta if k.startswith(LR))
    assert metrics["loss_after"].item() == pytest.approx(meta_sgd_query_loss(theta, task, steps), rel=1e-12)


def test_meta_sgd_starts_every_rate_at_the_inner_lr_on_the_parameters_device_and_dtype(tiny):
    model, loss, _ = tiny
    meta = MetaSGD("meta_sgd", steps=1, lr=0.07).meta_parameters(detached(model), loss)
    for k, v in detached(model).items():
        assert meta[LR + k].shape == v.shape and meta[LR + k].dtype == v.dtype
        assert torch.all(meta[LR + k] == 0.07)


def test_anil_is_convex_maml_and_matches_finite_differences(tiny):
    model, loss, task = tiny
    theta = detached(model)
    anil = ANIL("anil", steps=3, lr=STEP).task(theta, loss, *task)
    convex = ConvexMAML("convex_maml", steps=3, lr=STEP).task(theta, loss, *task)
    for a, b in zip(anil[:2], convex[:2], strict=True):
        for k in a:
            assert torch.equal(a[k], b[k])
    reference = central_differences(lambda t: head_only_query_loss(t, task, steps=3), theta)
    assert relative_error(anil[0], reference) < 1e-6


def test_msl_importance_follows_the_papers_schedule():
    algo = MAML("maml_pp", steps=5, lr=0.1, msl_epochs=10, epoch_iterations=100)
    algo.progress(1)  # epoch 0: uniform
    assert algo.step_importance() == pytest.approx([0.2] * 5)
    algo.progress(501)  # epoch 5: the early steps lost 5 * 1/(5*10) each, the last gained what they lost
    assert algo.step_importance() == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.6])
    algo.progress(901)  # epoch 9: 0.2 - 9/50 each; the last 0.2 + 9 * 4/50 (neither bound, 0.03/5 or 0.976, binds)
    assert algo.step_importance() == pytest.approx([0.02] * 4 + [0.92])
    assert sum(algo.step_importance()) == pytest.approx(1.0)
    algo.progress(1001)  # epoch 10: only the last step's loss
    assert algo.step_importance() is None


def test_derivative_order_annealing_is_first_order_for_its_epochs_only():
    algo = MAML("maml_pp", steps=2, lr=0.1, first_order_epochs=2, epoch_iterations=10)
    orders = []
    for it in (1, 10, 11, 20, 21, 30):
        algo.progress(it)
        orders.append(algo.first_order)
    assert orders == [True, True, True, True, False, False]


def mamlpp_total(theta: dict, model, task, importance, steps: int, first_order: bool = False):
    """The MAML++ meta-objective by hand: per-step BatchNorm rows (BNWB), per-step learned rates (LSLR), the
    importance-weighted query losses after each step (MSL); first-order = inner gradients held constant."""
    sx, sy, qx, qy = task
    norms = {k[len(BNWB):] for k in theta if k.startswith(BNWB)}
    phi = {k: v for k, v in theta.items() if not k.startswith("algo.") and k not in norms}

    def forward(p, row, x):
        return functional_call(model, {**p, **{k: theta[BNWB + k][row] for k in norms}}, (x,))

    total, after = 0.0, None
    for j in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(forward(phi, j, sx), sy), list(phi.values()),
                                    create_graph=not first_order)
        phi = {k: phi[k] - theta[LSLR + k][j] * g for k, g in zip(phi, grads, strict=True)}
        after = F.cross_entropy(forward(phi, j, qx), qy)
        if importance:
            total = total + importance[j] * after
    return (total if importance else after), after


def tiny_conv():
    torch.manual_seed(0)
    model = Conv4(1, 16, 3, filters=2, downsample="maxpool", features="flatten").double()
    g = torch.Generator().manual_seed(4)
    sx, qx = (torch.rand(n, 1, 16, 16, generator=g, dtype=torch.float64) for n in (6, 6))
    sy, qy = torch.arange(3).repeat(2), torch.arange(3).repeat_interleave(2)
    return model, Objective(model, F.cross_entropy), (sx, sy, qx, qy)


def mamlpp(iteration: int, **options):
    algo = MAML("maml_pp", steps=2, lr=0.2, lslr=True, bnwb=True, msl_epochs=3, epoch_iterations=10, **options)
    algo.progress(iteration)
    return algo


def test_mamlpp_meta_gradient_matches_finite_differences_on_conv4():
    model, loss, task = tiny_conv()
    algo = mamlpp(iteration=11)  # epoch 1: every step's query loss counts, not uniformly
    importance = algo.step_importance()
    assert importance is not None and importance[0] != importance[1]
    theta = detached(model)
    theta = {**theta, **perturbed(algo.meta_parameters(theta, loss))}
    assert {k for k in theta if k.startswith(BNWB)} == {BNWB + k for k in loss.norm_names}
    meta_grad, update, metrics = algo.task(theta, loss, *task)
    assert not any(k in update for k in loss.norm_names)  # BatchNorm does not adapt in the inner loop

    def value(t):
        with torch.enable_grad():
            return mamlpp_total(leaves(t), model, task, importance, 2)[0].item()

    reference = central_differences(value, theta)
    assert relative_error(meta_grad, reference) < 1e-6
    for k in loss.norm_names:  # the network's own BatchNorm parameters are unused: the per-step rows stand in
        assert meta_grad[k].abs().max() == 0
    assert all(meta_grad[k].abs().max() > 0 for k in theta if k.startswith(("algo.", "head.")))
    total, after = mamlpp_total(leaves(theta), model, task, importance, 2)
    assert metrics["loss_after"].item() == pytest.approx(after.item(), rel=1e-10)


def test_mamlpp_first_order_epochs_match_a_hand_unrolled_first_order_loop():
    model, loss, task = tiny_conv()
    algo = mamlpp(iteration=5, first_order_epochs=1)
    assert algo.first_order
    theta = detached(model)
    theta = {**theta, **perturbed(algo.meta_parameters(theta, loss))}
    meta_grad, _, _ = algo.task(theta, loss, *task)
    p = leaves(theta)
    total, _ = mamlpp_total(p, model, task, algo.step_importance(), 2, first_order=True)
    reference = dict(zip(p, torch.autograd.grad(total, list(p.values()), allow_unused=True, materialize_grads=True),
                         strict=True))
    assert relative_error(meta_grad, reference) < 1e-10
    # ... and it is not the second-order gradient.
    second = mamlpp(iteration=5).task(theta, loss, *task)[0]
    assert relative_error(second, reference) > 1e-3


@pytest.mark.parametrize("name", ["meta_sgd", "maml_pp"])
def test_vmap_equals_loop_on_conv4_with_meta_parameters(name):
    model, loss, (sx, sy, qx, qy) = tiny_conv()
    algo = mamlpp(iteration=11) if name == "maml_pp" else MetaSGD("meta_sgd", steps=2, lr=0.2)
    theta = detached(model)
    theta = {**theta, **perturbed(algo.meta_parameters(theta, loss))}
    episode = Episode(*(torch.stack([t, t.flip(0)]) for t in (sx, sy, qx, qy)))
    ref = task_grads(algo, theta, loss, episode, "loop", diagnose=True)
    out = task_grads(algo, theta, loss, episode, "vmap", diagnose=True)
    for field in ("meta_grads", "updates", "metrics"):
        for k, v in getattr(ref, field).items():
            torch.testing.assert_close(getattr(out, field)[k], v, rtol=1e-10, atol=1e-12)


def test_mamlpp_adapts_at_test_time_with_its_learned_rates_and_last_batchnorm_row():
    model, loss, (sx, sy, qx, _) = tiny_conv()
    algo = mamlpp(iteration=100)
    theta = detached(model)
    theta = {**theta, **perturbed(algo.meta_parameters(theta, loss))}
    with torch.enable_grad():
        p = leaves(theta)
        norms = set(loss.norm_names)
        phi = {k: v for k, v in p.items() if not k.startswith("algo.") and k not in norms}
        for j in range(3):  # one step more than trained: the last rate and row serve it
            row = min(j, 1)
            fp = {**phi, **{k: p[BNWB + k][row] for k in norms}}
            grads = torch.autograd.grad(F.cross_entropy(functional_call(model, fp, (sx,)), sy), list(phi.values()))
            phi = {k: (phi[k] - p[LSLR + k][row] * g).detach().requires_grad_() for k, g in zip(phi, grads,
                                                                                               strict=True)}
        expected = functional_call(model, {**phi, **{k: p[BNWB + k][1] for k in norms}}, (qx,))
    got = algo.predict(theta, loss, sx, sy, qx, 3, lr=123.0)  # eval.lr is not used: the rates are learned
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


@pytest.mark.parametrize("algo", ["meta_sgd", "maml_pp"])
def test_meta_parameters_are_checkpointed_and_restored_on_resume(tmp_path, monkeypatch, algo):
    import json

    from hydra import compose, initialize_config_dir

    from metarun.config.store import config_dir, register
    from metarun.run import checkpoint
    from metarun.run.train import run

    register()
    overrides = [f"algo={algo}", "train.iterations=6", "train.meta_batch=3", "train.eval_every=0",
                 "train.checkpoint_every=3", "eval.tasks=20", "eval.val_tasks=0", "device=cpu", "inner.steps=2",
                 "algo.epoch_iterations=2" if algo == "maml_pp" else "inner.lr=0.02"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    for folder in ("whole", "stopped"):
        (tmp_path / folder).mkdir()
    reference, _ = run(cfg, tmp_path / "whole")
    saved = checkpoint.load(tmp_path / "whole")
    assert saved["meta_params"] and all(k.startswith("algo.") for k in saved["meta_params"])
    start = 0.02 if algo == "meta_sgd" else cfg.inner.lr
    assert any((v != start).any() for k, v in saved["meta_params"].items() if "lr" in k)  # they were trained

    real = checkpoint.save

    def dies_after_the_first(out_dir, state):
        real(out_dir, state)
        if state["iteration"] == 3:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", dies_after_the_first)
    with pytest.raises(Killed):
        run(cfg, tmp_path / "stopped")
    monkeypatch.setattr(checkpoint, "save", real)
    resumed, _ = run(cfg, tmp_path / "stopped")
    assert resumed["resumed_from"] == 3
    timings = {"seconds", "train_seconds", "resumed_from"}
    assert {k: v for k, v in resumed.items() if k not in timings} == \
        {k: v for k, v in reference.items() if k not in timings}
    assert json.loads((tmp_path / "stopped" / "results.json").read_text())["mean"] == reference["mean"]


def test_meta_sgd_equals_learn2learns_metasgd(tiny):
    """learn2learn's MetaSGD on the same weights and task: its meta-gradient of the weights and of the learning
    rates (`bash scripts/install_learn2learn.sh` installs it; skipped without it)."""
    l2l = pytest.importorskip("learn2learn", reason="no learn2learn here (bash scripts/install_learn2learn.sh)")
    model, loss, (sx, sy, qx, qy) = tiny
    algo = MetaSGD("meta_sgd", steps=1, lr=STEP)
    theta = detached(model)
    theta = {**theta, **algo.meta_parameters(theta, loss)}
    meta_grad, _, _ = algo.task(theta, loss, sx, sy, qx, qy)

    theirs = l2l.algorithms.MetaSGD(model, lr=STEP, first_order=False)
    learner = theirs.clone()
    learner.adapt(F.mse_loss(learner(sx), sy))
    F.mse_loss(learner(qx), qy).backward()
    names = [k for k, _ in model.named_parameters()]
    for name, p, rate in zip(names, model.parameters(), theirs.lrs, strict=True):
        torch.testing.assert_close(meta_grad[name], p.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(meta_grad[LR + name], rate.grad, rtol=1e-10, atol=1e-12)
