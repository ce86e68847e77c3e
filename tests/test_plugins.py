"""A user's own algorithm, weighting and dataset fetching, without forking metarun: a package outside src/ with its
classes and a `metarun.plugins` entry point that registers their schemas, and a config folder on Hydra's search path
with `algo/mine.yaml` and `weighting/mine.yaml` (docs/architecture.md, "Your own algorithm or weighting")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = '''
from dataclasses import dataclass

from metarun.algorithms.fomaml import FOMAML
from metarun.config.schema import ConfigError
from metarun.data.fetching import Fetching, declare
from metarun.weighting.uniform import Uniform


class ScaledFOMAML(FOMAML):
    """First-order MAML whose meta-gradient is multiplied by `scale`: a new algorithm in a few lines."""

    def __init__(self, name, steps, lr, scale, sub_batches=1):
        if scale <= 0:
            raise ConfigError(f"`algo.scale={scale}` is invalid: the scale must be greater than 0. Set `algo.scale=1`.")
        super().__init__(name, steps, lr, sub_batches)
        self.scale = scale

    def task(self, theta, objective, sx, sy, qx, qy):
        meta_grad, update, metrics = super().task(theta, objective, sx, sy, qx, qy)
        return {k: self.scale * v for k, v in meta_grad.items()}, update, metrics

    def record(self):
        return {"algo_scale": self.scale}


class Flat(Uniform):
    """Uniform weights under another name, with a setting of its own."""

    def __init__(self, name, note):
        super().__init__(name)
        self.note = note

    def record(self):
        return {**super().record(), "weighting_note": self.note}


@dataclass
class ScaledSchema:
    _target_: str = "mine.ScaledFOMAML"
    name: str = "mine"
    scale: float = 1.0
    steps: int = "${inner.steps}"
    lr: float = "${inner.lr}"


@dataclass
class FlatSchema:
    _target_: str = "mine.Flat"
    name: str = "flat"
    note: str = "plain"


@declare
class MineFetching(Fetching):
    """How `metarun-data` gets this user's dataset: declared in their package, not in metarun's command."""

    name, target = "mine", "mine.MineData"
    summary = "make the user's dataset"
    root = "${oc.env:METARUN_DATA,/nowhere}/mine"

    def status(self, root):
        return "present" if (root / "ready").is_file() else "missing: `metarun-data mine` makes it"

    def missing(self, root):
        return None if (root / "ready").is_file() else f"nothing under {root}"

    def prepare(self, args, root):
        root.mkdir(parents=True, exist_ok=True)
        (root / "ready").write_text(args.word)
        yield f"made {root} with {args.word}"

    def arguments(self, parser):
        parser.add_argument("--word", default="yes")


def register():
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="schemas/algo", name="mine", node=ScaledSchema)
    ConfigStore.instance().store(group="schemas/weighting", name="flat", node=FlatSchema)
'''


@pytest.fixture
def user(tmp_path, cli_env):
    """The user's package (site/mine.py with its distribution's entry point) and config folder (conf/)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "mine.py").write_text(PACKAGE)
    dist = site / "mine-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mine\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[metarun.plugins]\nmine = mine:register\n")
    conf = tmp_path / "conf"
    (conf / "algo").mkdir(parents=True)
    (conf / "weighting").mkdir()
    (conf / "algo" / "mine.yaml").write_text("defaults:\n  - /schemas/algo/mine@_here_\n")
    (conf / "weighting" / "flat.yaml").write_text("defaults:\n  - /schemas/weighting/flat@_here_\n")
    env = cli_env | {"PYTHONPATH": str(site)}
    return conf, env


def metarun(env: dict, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metarun", *overrides], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.slow
def test_a_users_algorithm_and_weighting_run_with_their_schema_checks_and_fields(user, tmp_path):
    conf, env = user
    search = f"hydra.searchpath=[file://{conf}]"
    small = ("train.iterations=3", "train.meta_batch=2", "eval.tasks=4", "eval.val_tasks=0")
    run = metarun(env, tmp_path, search, "algo=mine", "algo.scale=0.5", "weighting=flat", "weighting.note=hi", *small,
                  "hydra.run.dir=run")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (record["algo"], record["algo_scale"], record["weighting"], record["weighting_note"]) == (
        "mine", 0.5, "flat", "hi")
    # The schema types the keys: a word where a number belongs fails as it composes, before a folder exists.
    wrong = metarun(env, tmp_path, search, "algo=mine", "algo.scale=big", *small, "hydra.run.dir=wrong")
    assert wrong.returncode == 2 and "`algo.scale=big` has the wrong type" in wrong.stderr
    assert not (tmp_path / "wrong").exists()
    # The algorithm's own check: one paragraph, exit 2.
    bad = metarun(env, tmp_path, search, "algo=mine", "algo.scale=-1", *small, "hydra.run.dir=bad")
    assert bad.returncode == 2 and "`algo.scale=-1.0` is invalid" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_plugin_that_fails_to_register_is_named(user, tmp_path):
    conf, env = user
    (Path(env["PYTHONPATH"]) / "mine.py").write_text("def register():\n    raise RuntimeError('broken on purpose')\n")
    result = metarun(env, tmp_path, "--cfg", "job")
    assert result.returncode == 2
    assert "the metarun plugin `mine` (mine:register, from mine) failed to register" in result.stderr
    assert "broken on purpose" in result.stderr and "Traceback" not in result.stderr


def metarun_data(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from metarun.commands.data import entry; entry()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_a_plugins_dataset_declares_how_metarun_data_gets_it(user, tmp_path):
    _, env = user
    env = env | {"METARUN_DATA": str(tmp_path / "data")}
    listed = metarun_data(env, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("mine "))
    assert row.split() == ["mine", str(tmp_path / "data" / "mine"), "missing:", "`metarun-data", "mine`", "makes",
                           "it"]
    assert "omniglot" in listed.stdout  # metarun's own still listed beside it
    made = metarun_data(env, tmp_path, "mine", "--word", "hello")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"made {tmp_path / 'data' / 'mine'} with hello"
    assert (tmp_path / "data" / "mine" / "ready").read_text() == "hello"
    listed = metarun_data(env, tmp_path, "list")
    assert any(line.split() == ["mine", str(tmp_path / "data" / "mine"), "present"]
               for line in listed.stdout.splitlines())
