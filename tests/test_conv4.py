"""Conv4: the architecture against a hand-written network, BatchNorm modes, and MAML's
meta-gradient through convolutions and BatchNorm against finite differences (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metarun.algorithms.cavia import CAVIA
from metarun.algorithms.convex_imaml import ConvexIMAML
from metarun.algorithms.imaml import IMAML
from metarun.algorithms.maml import MAML
from metarun.core.functional import Objective, detached
from metarun.core.tasks import Episode
from metarun.models import Conv4, conv4_feature_size
from metarun.run.execution import task_grads
from test_gradients import central_differences, leaves, relative_error

WAYS, SIZE = 3, 8


def reference(p: dict, x: torch.Tensor, downsample: str = "stride", features: str = "mean") -> torch.Tensor:
    """Conv4 written out with torch.nn.functional: conv, BatchNorm over the batch, ReLU, pool."""
    for i in range(4):
        x = F.conv2d(x, p[f"body.convs.{i}.weight"], p[f"body.convs.{i}.bias"],
                     stride=2 if downsample == "stride" else 1, padding=1)
        if downsample == "pool_norm":  # TensorFlow's 'same' max-pool: pad an odd last row and column with -inf
            x = F.max_pool2d(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), value=float("-inf")), 2)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5)
        x = x * p[f"body.norms.{i}.weight"].view(1, -1, 1, 1) + p[f"body.norms.{i}.bias"].view(1, -1, 1, 1)
        x = torch.relu(x)
        if downsample == "maxpool":
            x = F.max_pool2d(x, 2)
    x = x.mean(dim=(2, 3)) if features == "mean" else x.flatten(1)
    return x @ p["head.weight"].T + p["head.bias"]


def tiny(downsample="stride", features="mean", context=0, size=SIZE):
    torch.manual_seed(0)
    model = Conv4(1, size, WAYS, filters=3, downsample=downsample, features=features, context=context).double()
    with torch.no_grad():  # move BatchNorm off its identity initialisation so its parameters matter
        for name, p in model.named_parameters():
            if "norms" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def task(g: torch.Generator, shots=2, queries=2, size=SIZE):
    sx = torch.rand(WAYS * shots, 1, size, size, generator=g, dtype=torch.float64)
    qx = torch.rand(WAYS * queries, 1, size, size, generator=g, dtype=torch.float64)
    return sx, torch.arange(WAYS).repeat_interleave(shots), qx, torch.arange(WAYS).repeat_interleave(queries)


@pytest.mark.parametrize(("downsample", "features", "size"), [("stride", "mean", 8), ("maxpool", "flatten", 16),
                                                             ("pool_norm", "flatten", 21)])  # 21 -> 11 -> 6 -> 3 -> 2
def test_conv4_is_the_published_network(downsample, features, size):
    model = tiny(downsample, features, size=size)
    x = torch.rand(5, 1, size, size, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(detached(model), x, downsample, features), rtol=1e-12, atol=1e-12)


def test_reptiles_miniimagenet_network_flattens_a_6x6_map():
    # openai/supervised-reptile at 84x84: 84 -> 42 -> 21 -> 11 -> 6, 32 filters.
    assert conv4_feature_size(84, 32, "pool_norm", "flatten") == 6 * 6 * 32
    assert conv4_feature_size(84, 32, "maxpool", "flatten") == 5 * 5 * 32  # Finn et al.'s rounds down


def test_feature_sizes_of_the_variants():
    assert conv4_feature_size(28, 64, "stride", "mean") == 64  # Finn et al., Omniglot
    assert conv4_feature_size(84, 32, "maxpool", "flatten") == 800  # Finn et al., miniImageNet: 5x5x32
    assert conv4_feature_size(84, 64, "maxpool", "flatten") == 1600  # Reptile, miniImageNet
    assert conv4_feature_size(28, 64, "maxpool", "flatten") == 64  # Reptile, Omniglot: 1x1x64


def test_maml_through_conv_and_batchnorm_matches_finite_differences():
    model = tiny()
    theta = detached(model)
    sx, sy, qx, qy = task(torch.Generator().manual_seed(0))
    lr, steps = 0.5, 2

    def post_adaptation_query_loss(t: dict) -> float:
        p = leaves(t)
        for _ in range(steps):
            grads = torch.autograd.grad(F.cross_entropy(reference(p, sx), sy), list(p.values()))
            p = {k: v - lr * g for (k, v), g in zip(p.items(), grads, strict=True)}
        return F.cross_entropy(reference(p, qx), qy).item()

    meta_grad, _, _ = MAML("maml", steps=steps, lr=lr).task(theta, Objective(model, F.cross_entropy), sx, sy, qx, qy)
    assert relative_error(meta_grad, central_differences(post_adaptation_query_loss, theta)) < 1e-6


def test_support_statistics_normalise_each_query_example_alone():
    model = tiny()
    sx, _, qx, _ = task(torch.Generator().manual_seed(1))
    n = len(sx)
    together = model(torch.cat([sx, qx]), stats_from=n)[n:]
    alone = torch.stack([model(torch.cat([sx, qx[i:i + 1]]), stats_from=n)[n] for i in range(len(qx))])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)
    # The support's own outputs are those of the support batch on its own.
    torch.testing.assert_close(model(torch.cat([sx, qx]), stats_from=n)[:n], model(sx), rtol=1e-12, atol=1e-12)
    # Transductive BatchNorm lets the query batch change each example's output.
    batch = model(qx)
    assert not torch.allclose(batch[0], model(qx[:2])[0])
    loss = Objective(model, F.cross_entropy, transductive=False)
    torch.testing.assert_close(loss.predict_query(detached(model), sx, qx), together)


def test_zero_context_leaves_the_network_unchanged():
    plain, film = tiny(), tiny(context=4)
    film.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(4, 1, SIZE, SIZE, dtype=torch.float64)
    torch.testing.assert_close(film(x, context=torch.zeros(4, dtype=torch.float64)), plain(x))
    assert not torch.allclose(film(x, context=torch.ones(4, dtype=torch.float64)), plain(x))


@pytest.mark.parametrize("name", ["maml", "imaml", "convex_imaml", "cavia"])
def test_vmap_equals_loop_on_conv4_float64(name):
    algo = {"maml": lambda: MAML("maml", steps=2, lr=0.3),
            "imaml": lambda: IMAML("imaml", steps=2, lr=0.3, lam=2.0, cg_steps=3),
            "convex_imaml": lambda: ConvexIMAML("convex_imaml", steps=2, lr=1.0, lam=0.5),
            "cavia": lambda: CAVIA("cavia", steps=2, lr=0.5, context_size=4)}[name]()
    model = tiny(context=4 if name == "cavia" else 0)
    g = torch.Generator().manual_seed(2)
    episode = Episode(*(torch.stack(parts) for parts in zip(*(task(g) for _ in range(3)), strict=True)))
    loss = Objective(model, F.cross_entropy)
    ref = task_grads(algo, detached(model), loss, episode, "loop")
    out = task_grads(algo, detached(model), loss, episode, "vmap")
    for k, v in ref.meta_grads.items():
        torch.testing.assert_close(out.meta_grads[k], v, rtol=1e-10, atol=1e-12)
