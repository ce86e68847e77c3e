"""Every execution mode gives the reference loop's meta-gradients, and the loop combines them as DESIGN.md says."""

from __future__ import annotations

import pytest
import torch

from metarun.algorithms.anil import ANIL
from metarun.algorithms.cavia import CAVIA
from metarun.algorithms.convex_imaml import ConvexIMAML
from metarun.algorithms.convex_maml import ConvexMAML
from metarun.algorithms.fomaml import FOMAML
from metarun.algorithms.imaml import IMAML
from metarun.algorithms.maml import MAML
from metarun.algorithms.meta_sgd import MetaSGD
from metarun.algorithms.reptile import Reptile
from metarun.core.functional import Objective, detached, weighted_sum
from metarun.data.sine import SineWaves
from metarun.models import MLP
from metarun.run.execution import Executor, task_grads

ALGOS = {
    "maml": lambda: MAML("maml", steps=3, lr=0.05),
    "maml-sub-batches": lambda: MAML("maml", steps=3, lr=0.05, sub_batches=2),
    "fomaml": lambda: FOMAML("fomaml", steps=3, lr=0.05),
    "reptile": lambda: Reptile("reptile", steps=3, lr=0.05),
    "reptile-adam": lambda: Reptile("reptile", steps=3, lr=0.01, inner_optimizer="adam"),
    "imaml": lambda: IMAML("imaml", steps=3, lr=0.05, lam=2.0, cg_steps=4, cg_damping=0.1),
    "imaml-adam": lambda: IMAML("imaml", steps=3, lr=0.01, inner_optimizer="adam"),
    "convex_maml": lambda: ConvexMAML("convex_maml", steps=3, lr=0.05),
    "convex_imaml": lambda: ConvexIMAML("convex_imaml", steps=2, lr=1.0, lam=0.5),
    "cavia": lambda: CAVIA("cavia", steps=3, lr=0.5, context_size=3),
    "anil": lambda: ANIL("anil", steps=3, lr=0.05),
    "meta_sgd": lambda: MetaSGD("meta_sgd", steps=2, lr=0.05),
    # MAML++ on the MLP (no BatchNorm: BNWB's part is tested on Conv4, test_conv4.py), in its multi-step-loss
    # epochs (MSL) with learned step sizes (LSLR), and in its first-order epochs (DA).
    "maml_pp": lambda: progressed(MAML("maml_pp", steps=3, lr=0.05, msl_epochs=4, lslr=True, bnwb=True,
                                       first_order_epochs=0, epoch_iterations=10), 25),
    "maml_pp-first-order": lambda: progressed(MAML("maml_pp", steps=3, lr=0.05, msl_epochs=4, lslr=True,
                                                   first_order_epochs=2, epoch_iterations=10), 5),
}


def progressed(algo, iteration):
    algo.progress(iteration)
    return algo


def executor(mode, device="cpu"):
    return Executor(mode, torch.device(device), 0, "none")


# Measured, not chosen: Adam divides by sqrt(v), so on coordinates whose gradient is near
# zero float32 round-off becomes an O(1) relative change (measured 1.4e-5 absolute, 6e-3
# relative, on 10 of 96 entries). The float64 test above proves the two modes equal.
FLOAT32_TOLERANCE = {"imaml-adam": {"rtol": 1e-2, "atol": 5e-5}}


def problem(dtype, name="maml"):
    """theta (with the algorithm's own meta-parameters, moved off their start so that they matter), the
    objective and a batch of sine tasks."""
    torch.manual_seed(0)
    model = MLP(1, [16, 16], 1, context=3 if name == "cavia" else 0).to(dtype)
    source = SineWaves("sine", [0.1, 5.0], [0.0, 3.14], [-5.0, 5.0])
    episode = source.sample("train", 6, 1, 5, 7, torch.Generator().manual_seed(3))
    episode = type(episode)(*(t.to(dtype) for t in episode))
    objective = Objective(model, source.loss)
    theta = detached(model)
    meta = ALGOS[name]().meta_parameters(theta, objective) if name in ALGOS else {}
    generator = torch.Generator().manual_seed(1)
    meta = {k: v * (0.5 + torch.rand(v.shape, generator=generator, dtype=dtype)) for k, v in meta.items()}
    return {**theta, **meta}, objective, episode


@pytest.mark.parametrize("name", ALGOS)
@pytest.mark.parametrize("chunk", [0, 4])
def test_vmap_equals_loop_float64(name, chunk):
    theta, loss, episode = problem(torch.float64, name)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, "loop")
    out = task_grads(algo, theta, loss, episode, "vmap", chunk)
    for field in ("meta_grads", "updates", "metrics"):
        for k, v in getattr(ref, field).items():
            torch.testing.assert_close(getattr(out, field)[k], v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ALGOS)
def test_vmap_equals_loop_float32(name):
    theta, loss, episode = problem(torch.float32, name)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, "loop")
    out = task_grads(algo, theta, loss, episode, "vmap")
    for k, v in ref.meta_grads.items():
        torch.testing.assert_close(out.meta_grads[k], v, **FLOAT32_TOLERANCE.get(name, {"rtol": 1e-5, "atol": 1e-6}))


def test_batched_tasks_match_one_task_at_a_time():
    theta, loss, episode = problem(torch.float64)
    algo = ALGOS["maml"]()
    out = task_grads(algo, theta, loss, episode, "vmap")
    for i in range(len(episode)):
        single, _, _ = algo.task(theta, loss, *(t[i] for t in episode))
        for k in theta:
            torch.testing.assert_close(out.meta_grads[k][i], single[k], rtol=1e-10, atol=1e-12)


def test_weighted_sum_is_the_per_task_combination():
    theta, loss, episode = problem(torch.float64)
    grads = task_grads(ALGOS["fomaml"](), theta, loss, episode, "loop")
    w = torch.tensor([0.5, -0.1, 0.2, 0.1, 0.05, 0.05], dtype=torch.float64)
    combined = weighted_sum(w, grads.meta_grads)
    for k, v in grads.meta_grads.items():
        torch.testing.assert_close(combined[k], sum(w[i] * v[i] for i in range(len(w))))


@pytest.mark.parametrize("name", ALGOS)
def test_evaluation_predictions_are_the_same_batched_or_not(name):
    from metarun.run.evaluate import scores

    theta, loss, episode = problem(torch.float64, name)
    algo = ALGOS[name]()
    args = (algo, theta, loss, lambda p, y: ((p - y) ** 2).mean(dim=(1, 2)), [episode], 3, 0.05)
    torch.testing.assert_close(scores(*args, executor("vmap")), scores(*args, executor("loop")), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("mode", ["loop", "vmap"])
@pytest.mark.parametrize("name", ALGOS)
def test_skipping_diagnostics_changes_no_gradient(name, mode):
    # Training skips the pre-adaptation query pass on iterations that do not log.
    theta, loss, episode = problem(torch.float64, name)
    algo = ALGOS[name]()
    full = task_grads(algo, theta, loss, episode, mode, diagnose=True)
    lean = task_grads(algo, theta, loss, episode, mode, diagnose=False)
    for field in ("meta_grads", "updates"):
        for k, v in getattr(full, field).items():
            assert torch.equal(getattr(lean, field)[k], v)
    assert "loss_before" not in lean.metrics
    assert {k: v for k, v in full.metrics.items() if k in lean.metrics}.keys() == lean.metrics.keys()
    for i in range(len(episode)):
        sx, sy, qx, qy = (t[i] for t in episode)
        before = algo.loss_before(theta, loss, qx, qy)
        torch.testing.assert_close(full.metrics["loss_before"][i], before, rtol=1e-12, atol=0)
        adapted = {**theta, **{k: theta[k] - full.updates[k][i] for k in full.updates}}
        if name != "cavia":  # CAVIA adapts its context, not theta
            torch.testing.assert_close(full.metrics["loss_after"][i], loss(adapted, qx, qy), rtol=1e-10, atol=1e-12)


def test_cavia_loss_before_is_the_zero_context_loss():
    theta, loss, episode = problem(torch.float64, "cavia")
    _, _, qx, qy = (t[0] for t in episode)
    zero = torch.zeros(3, dtype=torch.float64)
    assert ALGOS["cavia"]().loss_before(theta, loss, qx, qy) == loss(theta, qx, qy, context=zero)


def test_auto_mode_is_vmap_on_a_gpu_and_for_the_mlp_and_the_loop_for_convnets_on_a_cpu():
    from metarun.models import Conv4
    from metarun.run.execution import execution_mode

    mlp, conv = MLP(1, [8], 1), Conv4(1, 28, 5, filters=4, downsample="maxpool", features="flatten")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert execution_mode("auto", cpu, mlp) == "vmap" and execution_mode("auto", cpu, conv) == "loop"
    assert execution_mode("auto", cuda, conv) == "vmap" and execution_mode("auto", cuda, mlp) == "vmap"
    assert execution_mode("vmap", cpu, conv) == "vmap" and execution_mode("loop", cuda, mlp) == "loop"
