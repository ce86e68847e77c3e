"""Every config combination composes and builds; bad settings fail early with a clear message."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from metarun.config.checks import ALGORITHMS, WEIGHTINGS, check
from metarun.config.resume import continuing_differences, run_differences
from metarun.config.schema import ConfigError
from metarun.config.store import config_dir, register

register()


def make(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(("algo", "weighting"), list(itertools.product(ALGORITHMS, WEIGHTINGS)))
def test_every_combination_composes_and_builds(algo, weighting):
    cfg = make(f"algo={algo}", f"weighting={weighting}", "data=sine")
    check(cfg)
    assert cfg.algo.name == algo and cfg.weighting.name == weighting
    built = instantiate(cfg.algo, steps=cfg.inner.steps, lr=cfg.inner.lr)
    assert built.name == algo
    model = instantiate(cfg.model)
    optimizer = instantiate(cfg.outer.optimizer)(model.parameters(), lr=cfg.outer.lr)
    expected = torch.optim.SGD if algo == "reptile" else torch.optim.Adam
    assert type(optimizer) is expected
    assert instantiate(cfg.data).name == "sine"


def test_reptile_preset_uses_outer_sgd_with_annealing_and_can_be_overridden():
    cfg = make("algo=reptile")
    assert cfg.outer.anneal is True and cfg.outer.lr == 1.0
    cfg = make("algo=reptile", "outer.lr=0.5", "algo.inner_optimizer=adam")
    assert cfg.outer.lr == 0.5 and cfg.algo.inner_optimizer == "adam"


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(MissingConfigException) as err:
        make("algo=mamll")
    assert "algo/mamll" in str(err.value)
    assert set(ALGORITHMS) <= set(err.value.options)


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as err:
        make("train.iteratons=5")
    assert "Key 'iteratons' not in 'TrainConfig'" in str(err.value.__cause__)
    with pytest.raises(ConfigCompositionException) as err:
        make("algo=reptile", "algo.inner_optimiser=adam")
    assert "Key 'inner_optimiser' not in 'ReptileAlgo'" in str(err.value.__cause__)


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as err:
        make("inner.steps=five")
    assert isinstance(err.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException):
        make("outer.anneal=maybe")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("shots=0", "shots=0"),
        ("queries=-1", "queries=-1"),
        ("inner.steps=-2", "inner.steps=-2"),
        ("eval.steps=0", "eval.steps=0"),
        ("inner.lr=0", "inner.lr=0.0"),
        ("outer.lr=-0.1", "outer.lr=-0.1"),
        ("train.meta_batch=0", "train.meta_batch=0"),
        ("eval.tasks=0", "eval.tasks=0"),
        ("eval.val_tasks=1", "eval.val_tasks=1"),
        ("eval.select=first", "eval.select=first"),
        ("eval.select=best eval.val_tasks=0", "eval.select=best"),
        ("exec.mode=threads", "exec.mode=threads"),
        ("device=tpu", "device=tpu"),
        ("algo=reptile algo.inner_optimizer=rmsprop", "algo.inner_optimizer=rmsprop"),
        ("algo=imaml algo.lam=0", "algo.lam=0.0"),
        ("algo=imaml algo.cg_steps=0", "algo.cg_steps=0"),
        ("algo=convex_imaml algo.lam=-1", "algo.lam=-1.0"),
        ("algo=cavia algo.context_size=0", "algo.context_size=0"),
        ("train.shots=0", "train.shots=0"),
        ("data=omniglot train.queries=0", "train.queries=0"),
        ("data=omniglot model=conv4 model.downsample=avgpool", "model.downsample=avgpool"),
        ("data=omniglot model=mlp", "model=conv4"),
        ("model=conv4_pool64", "model=mlp"),
    ],
)
def test_meaningless_values_are_rejected_with_the_setting_named(override, named):
    cfg = make(*override.split())
    with pytest.raises(ConfigError) as err:
        check(cfg)
    message = str(err.value)
    assert f"`{named}`" in message and "\n" not in message


def test_a_checkpoint_from_before_eval_select_continues_only_as_last():
    now = OmegaConf.to_container(make(), resolve=True)
    older = {**now, "eval": {k: v for k, v in now["eval"].items() if k != "select"}}
    assert continuing_differences(older, now) == []  # it tested the last iteration's parameters
    best = OmegaConf.to_container(make("eval.select=best"), resolve=True)
    assert continuing_differences(older, best) == ["eval.select"]  # it tracked no best to continue from


@pytest.mark.parametrize(
    ("override", "named"),
    [("weighting=agreement weighting.vectors=grads", "weighting.vectors=grads"),
     ("weighting=loss_softmax weighting.temperature=0", "weighting.temperature=0.0"),
     ("weighting=loss_softmax weighting.temperature=-1.5", "weighting.temperature=-1.5")],
)
def test_a_weighting_checks_its_own_settings(override, named):
    cfg = make(*override.split())
    check(cfg)  # the run-wide checks pass: a weighting's settings are its own to check, where it is built
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.weighting)
    assert isinstance(err.value.__cause__, ConfigError) and f"`{named}`" in str(err.value.__cause__)


def agreement(cfg, algo):
    built = instantiate(cfg.weighting)
    built.bind(algo)
    return built.field


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_agreement_compares_updates_except_where_the_inner_loop_leaves_theta(algo):
    cfg = make(f"algo={algo}", "weighting=agreement")
    built = instantiate(cfg.algo, steps=1, lr=0.1)
    assert agreement(cfg, built) == ("meta_grads" if algo == "cavia" else "updates")
    cfg = make(f"algo={algo}", "weighting=agreement", "weighting.vectors=meta_grads")
    assert agreement(cfg, built) == "meta_grads"


def test_agreement_on_cavia_updates_is_refused_as_degenerate():
    cfg = make("algo=cavia", "weighting=agreement", "weighting.vectors=updates")
    with pytest.raises(ConfigError, match="weighting.vectors=meta_grads"):
        agreement(cfg, instantiate(cfg.algo, steps=1, lr=0.1))


def test_cavia_widens_the_model_input_by_its_context():
    cfg = make("algo=cavia", "algo.context_size=6")
    assert cfg.model.context == 6 and cfg.inner.lr == 1.0 and cfg.eval.lr == 1.0
    assert instantiate(cfg.model).body[0].in_features == 7


@pytest.mark.parametrize(("data", "filters", "downsample"),
                         [("omniglot", 64, "stride"), ("miniimagenet", 32, "maxpool"), ("folder", 32, "maxpool")])
def test_image_datasets_bring_their_papers_network(data, filters, downsample):
    cfg = make(f"data={data}", "ways=20")
    check(cfg)
    assert (cfg.model.filters, cfg.model.downsample) == (filters, downsample)
    net = instantiate(cfg.model)
    assert net.head.out_features == 20 and net.body.convs[0].in_channels == cfg.data.channels
    assert cfg.eval.tasks == 600 and cfg.train.shots == cfg.shots == 1 and cfg.queries == 15
    # The dataset's network is a default: a model named on the command line wins.
    assert make(f"data={data}", "model=conv4_pool64").model.filters == 64
    assert make(f"data={data}", "shots=5", "train.shots=10").train.shots == 10


def test_a_presets_description_is_not_part_of_what_a_run_computes():
    # A run made before a preset's text changed (published numbers renamed, notes added) is the same run; a
    # setting the preset pins is not text.
    now = OmegaConf.to_container(make("+paper=ga_sine"), resolve=True)
    older = {**now, "paper": {**now["paper"], "notes": ["an older note"], "pm": None}}
    assert run_differences(older, now) == [] and continuing_differences(older, now) == []
    assert run_differences({k: v for k, v in now.items() if k != "paper"}, now) == []
    assert run_differences(now, OmegaConf.to_container(make("+paper=ga_sine", "inner.lr=0.05"),
                                                       resolve=True)) == ["inner.lr"]  # the preset pins eval.lr
