"""Device placement of the CUDA path, checked on the CPU with fake CUDA tensors.

PyTorch's FakeTensorMode runs each operation's device and shape logic without data or a GPU: a tensor
made on the CPU where the other operands live on `cuda` fails exactly as on a GPU ("Expected all tensors
to be on the same device"). Its limit: a backward pass cannot run on fake CUDA tensors without a GPU (the
autograd engine asks the driver for a context: "hasPrimaryContext expects a valid device index"). So the
per-task gradients are computed for real on the CPU, then moved to fake `cuda`; everything after them in a
meta-step (the weights, their weighted sum, the finiteness flag, the optimiser step, restoring a
checkpoint) and the forward-only parts (episode sampling from an on-device image tensor, the
before-adaptation query losses, evaluation with zero test-time steps and its scoring) run on fake `cuda`,
and every result must be there. Host syncs cannot be read on fake tensors either (a `bool()` of one raises
DataDependentOutputException): tests/test_host_syncs.py counts them on the CPU.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from metarun.algorithms import TaskGrads
from metarun.core.functional import Objective, detached
from metarun.core.tasks import ClassEpisodes
from metarun.data.classification import ImageClasses
from metarun.data.sine import SineWaves
from metarun.models import MLP, Conv4
from metarun.run.evaluate import scores
from metarun.run.execution import task_grads
from metarun.run.train import combine, outer_step, restore
from metarun.weighting.agreement import Agreement
from metarun.weighting.loss_softmax import LossSoftmax
from metarun.weighting.uniform import Uniform
from test_execution import ALGOS, executor, problem

WEIGHTINGS = {"uniform": Uniform, "agreement": Agreement, "loss_softmax": LossSoftmax}

CUDA = torch.device("cuda", 0)
MODES = ("loop", "vmap")


def fake_cuda() -> FakeTensorMode:
    """Inside: tensors made on `cuda` are fake; real CPU tensors may enter, and `.to("cuda")` fakes them."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def on_cuda(tree: dict) -> None:
    for k, v in tree.items():
        assert v.device == CUDA, f"{k} is on {v.device}"


def cuda_model(name: str) -> torch.nn.Module:
    """The test problem's MLP with its parameters on (fake) CUDA, as `model.to(device)` leaves them."""
    with torch.device("cuda"):
        return MLP(1, [16, 16], 1, context=3 if name == "cavia" else 0)


def optimizer_for(name: str, params: dict) -> torch.optim.Optimizer:
    # The outer optimisers the configs use: Adam (MAML and most), plain SGD (Reptile).
    return (torch.optim.SGD if name.startswith("reptile") else torch.optim.Adam)(params.values(), lr=0.1)


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            # Adam keeps its step counts on the CPU unless `capturable`, so its bias correction reads them
            # without a device sync.
            assert value.device == (torch.device("cpu") if key == "step" else CUDA), key


@functools.cache
def cpu_task_grads(name: str, mode: str) -> TaskGrads:
    theta, loss, episode = problem(torch.float32, name)
    return task_grads(ALGOS[name](), theta, loss, episode, mode, diagnose=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("name", ALGOS)
def test_meta_step_after_the_task_gradients_stays_on_cuda(name, weighting, mode):
    real = cpu_task_grads(name, mode)
    with fake_cuda():
        grads = type(real)(*({k: v.to("cuda") for k, v in tree.items()} for tree in real))
        chosen = WEIGHTINGS[weighting]()
        chosen.bind(ALGOS[name]())
        w, combined, finite = combine(chosen, grads)
        assert w.device == CUDA and finite.device == CUDA and finite.shape == ()
        on_cuda(combined)
        model = cuda_model(name)
        # The algorithm's own meta-parameters (Meta-SGD's, MAML++'s rates) are made where the model's are.
        own = ALGOS[name]().meta_parameters(detached(model), Objective(model, SineWaves.loss))
        on_cuda(own)
        params = {**dict(model.named_parameters()), **{k: torch.nn.Parameter(v) for k, v in own.items()}}
        optimizer = optimizer_for(name, params)
        outer_step(optimizer, params, combined)
        on_cuda(params)
        check_optimizer_state(optimizer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALGOS)
def test_forward_parts_and_evaluation_stay_on_cuda(name, mode):
    theta_cpu, loss, episode = problem(torch.float32, name)
    algo = ALGOS[name]()
    with fake_cuda():
        theta = {k: v.to("cuda") for k, v in theta_cpu.items()}
        sx, sy, qx, qy = episode.to(CUDA)
        assert sx.device == CUDA and qy.device == CUDA
        assert algo.loss_before(theta, loss, qx[0], qy[0]).device == CUDA
        # Zero test-time steps: the adaptation is forward-only (no backward can run here); every
        # algorithm still builds its own tensors (CAVIA's context, Convex iMAML's identity) on the device.
        after, before = scores(algo, theta, loss, SineWaves.score, [episode], 0, 0.05, executor(mode, "cuda"))
    for scored in (after, before):
        assert scored.device == torch.device("cpu") and scored.dtype == torch.float64
        assert scored.shape == (len(episode),)


def test_episodes_are_drawn_on_the_device_and_scored_there():
    generator = torch.Generator().manual_seed(0)
    with fake_cuda():
        source = ImageClasses("fake")
        source.splits = {"train": ClassEpisodes(torch.zeros(12, 20, 1, 28, 28, dtype=torch.uint8, device="cuda"))}
        episode = source.sample("train", 4, 5, 1, 15, generator)
        for t in episode:
            assert t.device == CUDA
        with torch.device("cuda"):
            model = Conv4(1, 28, 5, filters=8, downsample="maxpool", features="flatten")
        theta = detached(model)
        for transductive in (True, False):  # BatchNorm with the query batch's statistics, or the support set's
            objective = Objective(model, source.loss, transductive)
            logits = objective.predict_query(theta, episode.support_x[0], episode.query_x[0])
            assert logits.device == CUDA
        score = source.score(logits[None], episode.query_y[:1])
        assert score.device == CUDA and score.dtype == torch.float64
        sine = SineWaves("sine", [0.1, 5.0], [0.0, 3.14], [-5.0, 5.0]).sample("train", 3, 1, 5, 5, generator)
        for t in sine.to(CUDA):
            assert t.device == CUDA


OPTIMIZERS = {"adam": lambda params: torch.optim.Adam(params, lr=0.1),
              "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_a_checkpoint_resumes_on_cuda(kind):
    # Checkpoints are read onto the CPU (map_location="cpu", so that one written on a GPU opens anywhere);
    # restoring must put the parameters and the optimiser's state on the run's device.
    model = MLP(1, [16, 16], 1)
    optimizer = OPTIMIZERS[kind](model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    generator = torch.Generator().manual_seed(3)
    saved = {"params": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "task_rng": generator.get_state(), "torch_rng": torch.get_rng_state(), "cuda_rng": None}
    with fake_cuda():
        cuda = cuda_model("maml")
        params = dict(cuda.named_parameters())
        cuda_optimizer = OPTIMIZERS[kind](params.values())
        cuda.load_state_dict(saved["params"])
        restore(saved, cuda_optimizer, torch.optim.lr_scheduler.LambdaLR(cuda_optimizer, lambda it: 1.0),
                torch.Generator())
        on_cuda(params)
        check_optimizer_state(cuda_optimizer)
        assert len(cuda_optimizer.state) == len(params)
        # The next step. (Adam's cannot run here: it reads its restored step count, a CPU tensor that the fake
        # mode holds without a value; on a GPU that read costs no sync, see check_optimizer_state.)
        if kind != "adam":
            outer_step(cuda_optimizer, params, {k: torch.ones_like(v) for k, v in params.items()})
            on_cuda(params)
            check_optimizer_state(cuda_optimizer)
