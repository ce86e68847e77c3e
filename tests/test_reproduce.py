"""reproduce: a quick-budget run of the sine preset end to end, reruns that run only what is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from metarun.commands.reproduce import cell_file, compose
from metarun.config.keys import differences
from metarun.run.rundir import saved_config

SHRINK = ["--", "device=cpu", "train.iterations=20", "eval.tasks=20", "train.meta_batch=4"]


def reproduce(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/reproduce.py", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=str(__import__("conftest").ROOT))


@pytest.mark.slow
def test_quick_sine_reproduction_then_only_missing_cells_rerun(tmp_path, cli_env):
    out = tmp_path / "rep"
    first = reproduce("ga-sine", "--budget", "quick", "--out", str(out), *SHRINK, env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "running 2 cell(s)" in first.stdout and "NOT the paper's budgets; expect a higher mse." in first.stdout
    table = (out / "reproduce.csv").read_text().splitlines()
    assert table[0] == ("cell,ours (mean ± 95% CI over test tasks),test tasks,published,published ± is,difference,"
                        "p (z),consistent at 95%? (z)") and len(table) == 3
    assert table[1].startswith("reptile,") and table[2].startswith("ga_reptile,")
    assert [row.split(",")[2:5] for row in table[1:]] == [  # 20 test tasks each; the paper prints no ±
        ["20", "0.130", "not printed (the published mean is taken as a point)"],
        ["20", "0.080", "not printed (the published mean is taken as a point)"]]
    assert all(row.rsplit(",", 1)[1] in ("yes", "no") for row in table[1:])
    assert "Note: The Reptile row (0.13) is the paper's own run" in first.stdout
    cell = yaml.safe_load((out / ".cells" / "cell" / "reptile.yaml").read_text())
    assert cell["train"]["iterations"] == 300  # 30,000 / 100 (the command line shrank it further here)

    # Another command's results are never this one's: without the shrinking overrides (or another budget), the
    # cells ask for another config, so the command is refused and changes nothing, --table-only included.
    kept = (out / "reptile" / "results.json").stat().st_mtime_ns
    for other, differs in ((["--budget", "quick"], "train.iterations: 20 there, 300 now"),
                           (["--budget", "quick", "--table-only"], "eval.tasks: 20 there, 200 now"),
                           (SHRINK, "eval.val_tasks: 0 there, 100 now")):
        refused = reproduce("ga_sine", "--out", str(out), *other, env=cli_env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"2 cell folder(s) hold a run of another config than this command asks for: {out / 'reptile'} (" \
            in refused.stderr and differs in refused.stderr, refused.stderr
        assert "Repeat the overrides (after `--`) and --budget of the command that made them" in refused.stderr
    assert (out / "reptile" / "results.json").stat().st_mtime_ns == kept
    assert (out / "reproduce.csv").read_text().splitlines() == table

    # --commands prints each cell as the plain metarun command that composes the very config its job ran.
    shown = reproduce("ga_sine", "--budget", "quick", "--commands", *SHRINK, env=cli_env)
    commands = [line.split()[1:] for line in shown.stdout.splitlines() if line.startswith("metarun ")]
    assert len(commands) == 2 and commands[0][0] == "+paper=ga_sine"
    assert differences(saved_config(out / "reptile"), OmegaConf.to_container(compose(*commands[0]),
                                                                            resolve=True)) == []

    (out / "ga_reptile" / "results.json").unlink()
    second = reproduce("ga_sine", "--budget", "quick", "--out", str(out), *SHRINK, env=cli_env)
    assert second.returncode == 0, second.stderr
    assert "running 1 cell(s)" in second.stdout
    assert (out / "reptile" / "results.json").stat().st_mtime_ns == kept
    assert (out / "ga_reptile" / "results.json").is_file()


def test_missing_cells_are_marked_and_unknown_presets_refused(tmp_path, cli_env):
    shown = reproduce("ga_omniglot", "--table-only", "--out", str(tmp_path), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    rows = (tmp_path / "reproduce.csv").read_text().splitlines()[1:]
    assert len(rows) == 12 and all(row.split(",")[1] == "missing" for row in rows)
    assert "98.70 ± 0.40" in shown.stdout
    bad = reproduce("no_such_table", env=cli_env)
    assert bad.returncode == 2 and "Available: " in bad.stderr and "ga_omniglot" in bad.stderr


def test_an_old_results_file_is_named_not_a_traceback(tmp_path, cli_env):
    (tmp_path / "maml_5w1s").mkdir()
    (tmp_path / "maml_5w1s" / "results.json").write_text('{"mean": 0.9}')  # no format number
    shown = reproduce("ga_omniglot", "--table-only", "--out", str(tmp_path), env=cli_env)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert "maml_5w1s/results.json has no format number" in shown.stderr
    assert not (tmp_path / "reproduce.csv").exists()


def test_cell_file_turns_group_choices_into_defaults_and_values_into_the_body():
    text = cell_file(["algo=reptile", "model=conv4_pool64", "ways=20", "data.rotate_test=false", "inner.lr=5e-4"],
                     {"train.iterations": 7})
    assert text.startswith("# @package _global_\ndefaults:\n  - override /algo: reptile\n"
                           "  - override /model: conv4_pool64\n")
    body = yaml.safe_load(text)
    assert body["ways"] == 20 and body["data"]["rotate_test"] is False and body["inner"]["lr"] == 5e-4
    assert body["train"]["iterations"] == 7


def test_seeds_are_judged_by_their_across_seed_ci(tmp_path, cli_env):
    """`--seeds`: each cell's seeds in CELL/seed=S; a missing seed is named, the single-run folder is not used."""
    from metarun.report.results import write_results

    def run(folder, mean, seed):
        folder.mkdir(parents=True)
        write_results(folder, {"data": "sine", "task_kind": "regression", "ways": 1, "shots": 10, "algo": "reptile",
                               "weighting": "uniform", "metric": "mse", "mean": mean, "ci95": 0.01, "seed": seed,
                               "n_tasks": 1000})

    run(tmp_path / "reptile", 0.9, 0)  # a single-seed run of the cell: not part of the seeds table
    for seed, mean in ((0, 0.12), (1, 0.14), (2, 0.13)):
        run(tmp_path / "reptile" / f"seed={seed}", mean, seed)
    run(tmp_path / "ga_reptile" / "seed=0", 0.2, 0)
    shown = reproduce("ga_sine", "--table-only", "--seeds", "0,1,2", "--out", str(tmp_path), env=cli_env)
    assert shown.returncode == 0, shown.stderr
    rows = (tmp_path / "reproduce.csv").read_text().splitlines()
    assert rows[0].endswith(',published ± is,difference,"p (z: seeds, test tasks, published)",'
                            "consistent at 95%? (seeds + test-set + published error)")
    # 0.13 +- 4.303 * 0.01 / sqrt 3 = 0.13 +- 0.025, exactly the published 0.13 (z = 0).
    assert rows[1].startswith("reptile,0.130 ± 0.025,3,") and rows[1].endswith(",+0.000,1.000,yes")
    # One seed: 0.2 against 0.08 with the test set's error alone (0.01 / 1.96): far outside.
    assert rows[2].startswith('ga_reptile,0.200 (1 seed: no CI across seeds),"1 of 3 (seed 1 missing, seed 2 '
                              'missing)",seed 0: 0.2000 ± 0.010,')
    assert rows[2].endswith(",no")


def test_absent_data_is_said_once_and_nothing_is_launched(tmp_path, monkeypatch, capsys):
    """Without Omniglot, one paragraph before any job starts (not one error per job of the sweep)."""
    from metarun.commands.reproduce import run_cli

    monkeypatch.setenv("METARUN_DATA", str(tmp_path / "nodata"))
    out = tmp_path / "rep"
    code = run_cli(["ga-omniglot", "--budget", "quick", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("metarun-reproduce: error:") == 1
    assert f"Omniglot is not under {tmp_path / 'nodata' / 'omniglot'}" in err and "`metarun-data omniglot`" in err
    assert "None of the 12 cell(s) was launched." in err and not out.exists()
