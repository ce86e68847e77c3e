"""A run records the commit of the code it ran, whether that checkout had uncommitted changes, and every commit
it was trained on when it was continued on other code, saying so when it continues."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import metarun
from conftest import ROOT
from metarun.config.store import config_dir, register
from metarun.run import checkpoint, provenance
from metarun.run.train import Training, run

register()


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout holding a package `pkg` (committed) and an ignored virtual environment with a copy of it."""
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    (repo / ".venv" / "pkg").mkdir(parents=True)
    (repo / ".venv" / "pkg" / "__init__.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "pkg", ".gitignore")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_a_package_in_a_checkout_names_its_commit_and_whether_it_was_changed(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    assert provenance.running_code(checkout / "pkg") == (head, False)
    (checkout / "pkg" / "notes.txt").write_text("untracked files are not the code")
    assert provenance.running_code(checkout / "pkg") == (head, False)
    (checkout / "pkg" / "__init__.py").write_text("x = 2\n")
    assert provenance.running_code(checkout / "pkg") == (head, True)


def test_an_installed_copy_has_no_commit_even_inside_a_checkout(checkout, tmp_path):
    # A virtual environment in a clone holds an installed copy, which may not be the checkout's code.
    assert provenance.running_code(checkout / ".venv" / "pkg") == (None, None)
    outside = tmp_path / "elsewhere" / "pkg"
    outside.mkdir(parents=True)
    assert provenance.running_code(outside) == (None, None)


def test_the_commits_a_run_was_trained_on():
    a, b = "a" * 40, "b" * 40
    assert provenance.continued([], a) == [a]
    assert provenance.continued([a], a) == [a]
    assert provenance.continued([a], b) == [a, b]
    assert provenance.continued([a], None) == [a]  # continued outside a checkout: nothing to add
    assert provenance.switch_note([a], a) is None and provenance.switch_note([], a) is None
    assert provenance.switch_note([a], None) is None
    note = provenance.switch_note([a], b)
    assert a[:12] in note and b[:12] in note and "not those of an uninterrupted run" in note
    assert "`trained_commits`" in note  # the field results.json lists them in


def metarun_commit() -> str | None:
    """The commit of this checkout, when metarun is imported from it (an editable install); else none."""
    package = Path(metarun.__file__).resolve().parent
    if package != ROOT / "src" / "metarun" or not (ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None  # git refusing the folder: no commit either


def test_a_run_continued_on_other_code_lists_both_commits_and_says_so(tmp_path, caplog):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["train.iterations=4", "train.meta_batch=2", "train.eval_every=0",
                                           "eval.val_tasks=0", "eval.tasks=4", "device=cpu"])
    earlier = "f" * 40
    # A checkpoint at iteration 2 written by other code, as a stopped run's would be.
    checkpoint.save(tmp_path, {**Training(cfg, tmp_path).state(2), "commits": [earlier]})
    record, _ = run(cfg, tmp_path)
    head = metarun_commit()
    assert record["resumed_from"] == 2
    assert record["commit"] == head
    assert record["trained_commits"] == [earlier] + ([head] if head else [])
    assert json.loads((tmp_path / "results.json").read_text())["trained_commits"] == record["trained_commits"]
    if head is not None:
        # A warning in the run's log (the terminal, and the run folder's metarun.log under Hydra).
        assert f"trained up to now on commit {earlier[:12]} and continues on {head[:12]}" in caplog.text
        assert isinstance(record["uncommitted_changes"], bool)
