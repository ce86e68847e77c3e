"""Every execution mode gives the reference loop's meta-gradients, and the loop combines them as DESIGN.md says."""

from __future__ import annotations

import pytest
import torch

from metarun.algorithms import task_grads
from metarun.algorithms.fomaml import FOMAML
from metarun.algorithms.maml import MAML
from metarun.algorithms.reptile import Reptile
from metarun.data.sine import SineWaves
from metarun.functional import detached, loss_of, weighted_sum
from metarun.models import MLP

ALGOS = {
    "maml": lambda: MAML("maml", steps=3, lr=0.05),
    "fomaml": lambda: FOMAML("fomaml", steps=3, lr=0.05),
    "reptile": lambda: Reptile("reptile", steps=3, lr=0.05),
    "reptile-adam": lambda: Reptile("reptile", steps=3, lr=0.01, inner_optimizer="adam"),
}


def problem(dtype):
    torch.manual_seed(0)
    model = MLP(1, [16, 16], 1).to(dtype)
    source = SineWaves("sine", [0.1, 5.0], [0.0, 3.14], [-5.0, 5.0])
    episode = source.sample(6, 5, 7, torch.Generator().manual_seed(3))
    episode = type(episode)(*(t.to(dtype) for t in episode))
    return detached(model), loss_of(model, source.loss), episode


@pytest.mark.parametrize("name", ALGOS)
@pytest.mark.parametrize("chunk", [0, 4])
def test_vmap_equals_loop_float64(name, chunk):
    theta, loss, episode = problem(torch.float64)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, "loop")
    out = task_grads(algo, theta, loss, episode, "vmap", chunk)
    for field in ("meta_grads", "updates", "metrics"):
        for k, v in getattr(ref, field).items():
            torch.testing.assert_close(getattr(out, field)[k], v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ALGOS)
def test_vmap_equals_loop_float32(name):
    theta, loss, episode = problem(torch.float32)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, "loop")
    out = task_grads(algo, theta, loss, episode, "vmap")
    for k, v in ref.meta_grads.items():
        torch.testing.assert_close(out.meta_grads[k], v, rtol=1e-5, atol=1e-6)


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
