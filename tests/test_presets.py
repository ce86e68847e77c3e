"""Every paper preset (conf/paper/*.yaml) composes with each of its cells and records its table as the format says.

Compose only: nothing is trained or instantiated. A cell is run as `metarun +paper=NAME <its overrides>`, so
each test composes exactly that and checks the result with `metarun.config.checks.check`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from metarun.config.checks import check
from metarun.config.store import config_dir, register
from metarun.report.stats import accuracy_ci_bounds
from metarun.report.verdict import PM_KINDS

register()

PAPER_DIR = Path(config_dir()) / "paper"
EXPECTED = {
    "convex_table2",
    "ga_miniimagenet",
    "ga_omniglot",
    "ga_sine",
    "imaml_omniglot",
    "maml_miniimagenet",
    "maml_omniglot",
    "maml_pp",
    "reptile_miniimagenet",
    "reptile_omniglot",
}
REQUIRED = {"name", "source", "metric", "pm", "assumed", "cells"}
GROUPS = ("algo", "weighting", "data", "model")  # group choices a cell may make; everything else is key=value
METRICS = ("accuracy", "mse")


def presets() -> list[str]:
    return sorted(p.stem for p in PAPER_DIR.glob("*.yaml"))


def raw(name: str):
    """The preset file as written (its `paper` block), without composing."""
    return OmegaConf.load(PAPER_DIR / f"{name}.yaml").paper


def cells() -> list[tuple[str, str]]:
    return [(name, cell) for name in presets() for cell in raw(name).cells]


@pytest.fixture(scope="module")
def hydra_conf():
    """One Hydra initialisation for the module: composing is then about 15% faster than initialising per cell."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield


def parsed(overrides: list[str]) -> dict[str, object]:
    """key_or_group -> value of each override string, parsed as Hydra parses the command line."""
    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}


def impossible_ci(published: float, half: float, answers: int, tasks: int) -> str | None:
    """Why a published accuracy ± (percent) cannot be a 95% CI over `tasks` test tasks of `answers` answers each,
    or None where it can."""
    narrow, wide = (100 * b for b in accuracy_ci_bounds(published / 100, answers, tasks))
    if narrow <= half <= wide:
        return None
    return (f"{published} ± {half} is said to be a 95% CI over {tasks} test tasks of {answers} answers each, but such "
            f"a CI lies between ± {narrow:.3f} and ± {wide:.3f}: set the cell's `pm` to what the ± is")


def test_an_impossible_ci_over_tasks_is_named_with_its_bounds():
    # Reptile's Omniglot 5-way 1-shot ± 0.04 as a CI over its 10,000 one-query tasks: below the narrowest.
    assert impossible_ci(97.68, 0.04, 5, 10000) == (
        "97.68 ± 0.04 is said to be a 95% CI over 10000 test tasks of 5 answers each, but such a CI lies between "
        "± 0.126 and ± 0.295: set the cell's `pm` to what the ± is")
    assert "between ± " in impossible_ci(98.99, 1.34, 20, 600)  # wider than the widest
    assert impossible_ci(98.7, 0.4, 5, 600) is None  # MAML's 5-way 1-shot fits 600 tasks


def test_the_expected_presets_exist():
    assert set(presets()) == EXPECTED


@pytest.mark.parametrize("name", presets())
def test_preset_records_its_table(name):
    paper = raw(name)
    assert REQUIRED <= set(paper) <= REQUIRED | {"notes"}
    notes = list(paper.get("notes") or [])
    assert all(isinstance(n, str) and n.strip() for n in notes)
    assert paper.cells, f"{name} has no cells"
    for cell, spec in paper.cells.items():
        assert {"overrides", "published", "published_pm"} <= set(spec) <= {"overrides", "published", "published_pm",
                                                                            "pm"}, f"{name}.{cell}"
        assert spec.get("pm", paper.pm) in PM_KINDS, f"{name}.{cell}: what is its published ±?"
        keys = parsed(list(spec.overrides))
        assert len(keys) == len(spec.overrides), f"{name}.{cell} sets a key twice"
        # reproduce.py labels rows by algorithm and weighting: every cell names both
        assert "algo" in keys and "weighting" in keys, f"{name}.{cell}"


@pytest.mark.parametrize(("name", "cell"), cells())
def test_cell_composes_and_checks(hydra_conf, name, cell):
    overrides = list(raw(name).cells[cell].overrides)
    cfg = compose("config", overrides=[f"+paper={name}", *overrides])
    check(cfg)

    paper = cfg.paper
    assert paper.name == name
    assert isinstance(paper.source, str) and paper.source.strip()
    assert paper.metric in METRICS
    assumed = OmegaConf.to_container(paper.assumed)
    assert isinstance(assumed, list) and all(isinstance(a, str) and a.strip() for a in assumed)

    spec = paper.cells[cell]
    published = float(spec.published)
    assert math.isfinite(published)
    if paper.metric == "accuracy":
        assert 0 < published <= 100, f"accuracy is published in percent, got {published}"
    else:
        assert published >= 0
    if spec.published_pm is not None:
        pm = float(spec.published_pm)
        assert math.isfinite(pm) and pm >= 0
    if paper.metric == "accuracy" and spec.published_pm is not None and spec.get("pm", paper.pm) == "ci95_tasks":
        problem = impossible_ci(published, float(spec.published_pm), cfg.ways * cfg.queries, cfg.eval.tasks)
        assert problem is None, f"{name}.{cell}: {problem}"

    # The composed config carries every override of the cell: ways and shots above all, and the rest too.
    values = parsed(overrides)
    for key in ("ways", "shots"):
        if key in values:
            assert cfg[key] == values[key], f"{name}.{cell}: {key}"
    for key, value in values.items():
        if key in GROUPS:
            if key != "model":  # a model option has no name to compare; check() validated the pairing
                assert cfg[key].name == value, f"{name}.{cell}: {key}"
        else:
            got = OmegaConf.select(cfg, key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == value, f"{name}.{cell}: {key}={got!r}, the cell says {value!r}"


def test_gradient_agreement_presets_say_their_baselines_are_copied():
    for name in ("ga_omniglot", "ga_miniimagenet"):
        notes = " ".join(raw(name).notes)
        assert "copied from Finn et al." in notes and "'+ Transduction' rows, the label dropped" in notes
        assert "does not state its own evaluation protocol" in notes


def test_reptile_cells_with_inner_adam_carry_its_state_as_the_official_code():
    for name, cell in cells():
        overrides = parsed(list(raw(name).cells[cell].overrides))
        if overrides.get("algo") == "reptile" and overrides.get("algo.inner_optimizer") == "adam":
            assert overrides.get("algo.inner_state") == "carry", f"{name}.{cell}"
            assert overrides.get("inner.sub_batches", 1) > 1, f"{name}.{cell}"  # the code's inner mini-batches
