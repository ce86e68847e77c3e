"""`metarun-compare` (paired over the same test tasks, seed paired with seed) and `metarun-table --seeds`.

The run folders are written here as metarun writes them (results.json, scores.csv, .hydra/config.yaml) with
scores chosen so that every number can be checked by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from metarun.commands.compare import main
from metarun.commands.table import main as table_main
from metarun.report.compare import compare, load_side
from metarun.report.results import load_runs, write_results, write_scores
from metarun.report.seeds import ACROSS, PER_SEED, seed_table


def make_run(folder: Path, scores: list[float], seed: int = 0, weighting: str = "uniform", inner_lr: float = 0.01,
             eval_seed: int = 1234, metric: str = "accuracy", scores_file: bool = True) -> Path:
    folder.mkdir(parents=True)
    n = len(scores)
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    # 5 ways x 20 queries: every per-task accuracy is a multiple of 0.01, as a real run's would be.
    record = {"data": "omniglot", "task_kind": "classification", "ways": 5, "shots": 1, "queries": 20,
              "algo": "fomaml", "weighting": weighting, "metric": metric, "higher_is_better": metric == "accuracy",
              "mean": mean, "ci95": 1.96 * sd / math.sqrt(n), "n_tasks": n, "scores_file": "scores.csv",
              "seed": seed, "eval_seed": eval_seed, "rotate_test": True, "image_size": 28, "test_classes": 1692}
    config = {"seed": seed, "ways": 5, "shots": 1, "queries": 20, "device": "cpu",
              "algo": {"name": "fomaml"}, "weighting": {"name": weighting, "vectors": "auto"},
              "inner": {"steps": 1, "lr": inner_lr}, "eval": {"seed": eval_seed, "chunk": 100, "tasks": n},
              "data": {"name": "omniglot", "root": f"/somewhere/{seed}"}, "train": {"log_every": 10}}
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if scores_file:
        write_scores(folder, scores, [0.2] * n)
    write_results(folder, record)
    return folder


A = [0.8, 0.6, 1.0, 0.6]
B = [0.6, 0.6, 0.8, 0.4]  # A - B = 0.2, 0, 0.2, 0.2


def error(capsys) -> str:
    """The one-paragraph error: the only line on stderr."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("metarun-compare: error: ") or lines[0].startswith(
        "metarun-table: error: "), lines
    return lines[0]


def test_two_runs_paired_over_their_test_tasks(tmp_path, capsys):
    a = make_run(tmp_path / "a", A, weighting="agreement")
    b = make_run(tmp_path / "b", B)
    c = compare(load_side(a, [], "A")[0], load_side(b, [], "B")[0])
    p = c.overall
    assert c.across is None and p.n == 4 and p.diff == pytest.approx(0.15)
    assert p.half == pytest.approx(3.1824 * 0.1 / 2, rel=1e-4)  # sd of (0.2, 0, 0.2, 0.2) is 0.1
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "A and B differ in: weighting (agreement, uniform)" in out
    assert "test tasks: omniglot 5-way 1-shot, 20 queries, eval.seed 1234, 4 tasks, the same for every pair" in out
    assert "seed 0: A 75.00, B 60.00, A − B = +15.00 (95% CI -0.91 to +30.91" in out
    assert "verdict (over 4 test tasks, one seed): no significant difference" in out


def test_seed_paired_with_seed_across_a_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shift = {0: 0.0, 1: 0.05, 2: 0.1}
    for seed in (0, 1, 2):
        make_run(sweep / f"seed={seed},weighting=agreement", [s - shift[seed] for s in A], seed, "agreement")
        make_run(sweep / f"seed={seed},weighting=uniform", B, seed)
    # Seed differences 0.15, 0.10, 0.05: mean 0.10, sd 0.05, 2 degrees of freedom.
    assert main([str(sweep), str(sweep), "--a", "weighting=agreement", "--b", "weighting=uniform"]) == 0
    out = capsys.readouterr().out
    assert "A: fomaml + agreement, seeds 0, 1, 2 (3 runs under" in out
    assert "across 3 seeds (each seed's mean, seed paired with seed): A − B = +10.00 (95% CI -2.42 to +22.42" in out
    c = compare(load_side(sweep, ["weighting=agreement"], "A")[0], load_side(sweep, ["weighting=uniform"], "B")[0])
    assert c.across.half == pytest.approx(4.3027 * 0.05 / math.sqrt(3), rel=1e-4)
    assert sorted(c.per_seed) == [0, 1, 2]


def test_two_single_runs_of_different_seeds_are_paired_over_their_test_tasks(tmp_path, capsys):
    a = make_run(tmp_path / "a", A, seed=3, weighting="agreement")
    b = make_run(tmp_path / "b", B, seed=5)
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "seeds 3 (A) and 5 (B): A 75.00, B 60.00, A − B = +15.00" in out
    assert "note: A was trained with seed 3, B with seed 5: paired over their shared test tasks, the difference " \
           "holds seed-to-seed variation as well as the methods'" in out
    # Folders of several seeds still pair seed with seed, and refuse when no seed is shared.
    make_run(tmp_path / "c" / "s1", A, 1)
    make_run(tmp_path / "c" / "s2", A, 2)
    assert main([str(tmp_path / "c"), str(b)]) == 2
    assert "no seed in common to pair" in error(capsys)


def test_accuracies_off_the_ways_times_queries_grid_are_refused(tmp_path, capsys):
    a = make_run(tmp_path / "a", [0.805, 0.6, 1.0, 0.6])
    b = make_run(tmp_path / "b", B)
    assert main([str(a), str(b)]) == 2
    assert "score(s) are not multiples of 1/100" in error(capsys)


def test_a_seed_on_one_side_only_is_named(tmp_path, capsys):
    make_run(tmp_path / "a" / "s0", A, 0, "agreement")
    make_run(tmp_path / "a" / "s1", A, 1, "agreement")
    make_run(tmp_path / "b", B, 0)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "left out: seed 1 only in A" in capsys.readouterr().out


# ---- bad input: one paragraph each, exit code 2 ------------------------------------------------------------------

def test_a_run_without_scores(tmp_path, capsys):
    a = make_run(tmp_path / "a", A, scores_file=False)
    b = make_run(tmp_path / "b", B)
    assert main([str(a), str(b)]) == 2
    message = error(capsys)
    assert f"{a} has results.json but no scores.csv" in message
    assert "delete" in message and "run the same command again in that folder" in message


def test_runs_on_different_test_streams(tmp_path, capsys):
    a = make_run(tmp_path / "a", A)
    b = make_run(tmp_path / "b", B, eval_seed=99)
    assert main([str(a), str(b)]) == 2
    message = error(capsys)
    assert "were tested on different test tasks: they differ in eval.seed (1234 vs 99)." in message
    assert "run both with the same data, ways, shots, queries, eval.seed" in message


def test_a_multirun_folder_of_different_methods(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "weighting=agreement", A, weighting="agreement")
    make_run(tmp_path / "sweep" / "weighting=uniform", B)
    assert main([str(tmp_path / "sweep"), str(tmp_path / "sweep")]) == 2
    message = error(capsys)
    assert "is a multirun folder of 2 runs that differ in weighting (agreement, uniform), not only in seed" \
        in message
    assert "--a weighting=agreement" in message


def test_table_seeds_on_runs_that_differ_in_more_than_seed(tmp_path, capsys):
    for seed in (0, 1):
        make_run(tmp_path / f"lr1-{seed}", A, seed, inner_lr=0.01)
        make_run(tmp_path / f"lr2-{seed}", B, seed, inner_lr=0.02)
    assert table_main([str(tmp_path), "--seeds"]) == 2
    message = error(capsys)
    assert "`--seeds` averages runs that differ only in `seed`, but the 4 runs of fomaml + uniform on omniglot " \
           "5-way 1-shot (accuracy %) also differ in inner.lr (0.01, 0.02)" in message
    assert "Leave out --seeds" in message and not list(tmp_path.glob("table.*"))


# ---- metarun-table --seeds ----------------------------------------------------------------------------------------

def test_seed_table_mean_and_t_interval_across_seeds(tmp_path):
    for seed, shift in ((0, 0.0), (1, 0.05), (2, 0.1)):
        make_run(tmp_path / f"s{seed}", [s - shift for s in A], seed)
    make_run(tmp_path / "other" / "s0", B, 0, "agreement")
    table = seed_table(load_runs([tmp_path]))
    row = table.loc["fomaml + uniform"]
    # Seed means 0.75, 0.70, 0.65: 70.00 +- 4.3027 * 5 / sqrt 3 percent.
    assert row["seeds"] == "3" and row[ACROSS] == f"70.00 ± {4.3027 * 5 / math.sqrt(3):.2f}"
    assert row[PER_SEED].startswith("seed 0: 75.00 ± ")
    assert table.loc["fomaml + agreement", ACROSS] == "60.00 (1 seed: no across-seed CI)"
    assert table_main([str(tmp_path), "--seeds"]) == 0
    assert (tmp_path / "table_seeds.md").read_text().count("fomaml") == 2
    assert not (tmp_path / "table.md").exists()  # the per-run table's files are not --seeds'
    assert table_main([str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text().count("fomaml") == 4  # each run its row: both tables kept
    assert (tmp_path / "table_seeds.md").read_text().count("fomaml") == 2


# ---- the paired study over a sweep (scripts/ga_study.py) ---------------------------------------------------------

def test_paired_study_pairs_seeds_within_each_setting_and_names_failures(tmp_path):
    from metarun.report.results import write_failure
    from metarun.report.study import paired_study, summary

    sweep = tmp_path / "sweep"
    for lr, shift in (("0.01", 0.1), ("0.02", -0.1)):  # agreement higher (better) at 0.01, lower at 0.02
        for seed in (0, 1, 2):
            for weighting in ("agreement", "uniform"):
                overrides = [f"inner.lr={lr}", f"seed={seed}", f"weighting={weighting}", "+study=x"]
                job = sweep / ",".join(overrides[:3])
                if (lr, seed, weighting) == ("0.02", 2, "agreement"):  # diverged: failed.json, no results
                    (job / ".hydra").mkdir(parents=True)
                    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
                    write_failure(job, "training diverged at iteration 7: ...", 1)
                else:
                    scores = [s + (shift + 0.01 * seed if weighting == "agreement" else 0) for s in B]
                    make_run(job, scores, seed, weighting, inner_lr=float(lr))
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    table = paired_study(sweep, "weighting", "agreement", "uniform").set_index("inner.lr")
    diff = "agreement − uniform (mean ± 95% CI across seeds)"
    # Seed differences 0.10, 0.11, 0.12 (percent: 10, 11, 12): 11 +- 4.3027 * 1 / sqrt 3.
    assert table.loc["0.01", diff] == f"+11.00 ± {4.3027 / math.sqrt(3):.2f}"
    assert table.loc["0.01", "verdict"] == "agreement better" and table.loc["0.01", "paired seeds"] == 3
    assert table.loc["0.02", "paired seeds"] == 2 and table.loc["0.02", "verdict"] == "agreement worse"
    assert table.loc["0.02", "left out"] == ("seed 2 agreement: failed: training diverged at iteration 7; "
                                             "seed 2 only in uniform")
    assert summary(table.reset_index(), "agreement").startswith("2 settings: agreement better in 1, worse in 1")


def test_study_verdicts_come_from_holm_adjusted_p_values(tmp_path):
    from metarun.report.study import P_HOLM, P_RAW, paired_study, summary

    sweep = tmp_path / "sweep"
    for lr in ("0.01", "0.02", "0.03", "0.04"):
        for seed, shift in ((0, 0.10), (1, 0.11)):  # A − B = 0.10, 0.11: paired t = 21 on 1 df, p = 0.030
            for weighting in ("agreement", "uniform"):
                overrides = [f"inner.lr={lr}", f"seed={seed}", f"weighting={weighting}"]
                scores = [s + (shift if weighting == "agreement" else 0) for s in B]
                job = make_run(sweep / ",".join(overrides), scores, seed, weighting, inner_lr=float(lr))
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    table = paired_study(sweep, "weighting", "agreement", "uniform")
    # Each setting alone is significant at 5%; as a family of 4 (Holm: 4 x 0.030 = 0.12) none is.
    assert set(table[P_RAW]) == {"0.030"} and set(table[P_HOLM]) == {"0.121 (of 4)"}
    assert set(table["verdict"]) == {"no clear difference"}
    assert summary(table, "agreement").startswith("4 settings: agreement better in 0, worse in 0, no clear "
                                                  "difference in 4 (Holm-adjusted p ≤ 0.05")
