"""The statistics of comparisons and reproductions, each branch against numbers computed by hand or by exact
enumeration (the Wilcoxon null distribution with ties, Holm's step-down procedure).

Quantiles from printed tables: t(0.975; 2) = 4.3027, t(0.975; 3) = 3.1824. For 2 degrees of freedom the
two-sided p-value has a closed form, p = 1 - t / sqrt(t^2 + 2).
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from metarun.report.stats import accuracy_ci_bounds, format_p, holm, on_grid, p_is, paired, t_interval, two_sample_z
from metarun.report.verdict import OURS, P_T, P_Z, PM, VERDICT_T, VERDICT_Z, seed_row, task_row


def test_t_interval_across_seeds():
    mean, half, n = t_interval([0.5, 0.6, 0.7])  # sd 0.1
    assert (mean, n) == (pytest.approx(0.6), 3)
    assert half == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    mean, half, n = t_interval([0.42])
    assert mean == 0.42 and math.isnan(half) and n == 1  # one seed: no CI, not a zero-width one


def test_paired_t_and_wilcoxon_by_hand():
    p = paired([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])  # differences 1, 2, 3, 4
    se = math.sqrt(5 / 3) / 2  # sd = sqrt(5/3), n = 4
    assert p.n == 4 and p.diff == pytest.approx(2.5) and (p.mean_a, p.mean_b) == (5.0, 2.5)
    assert p.half == pytest.approx(3.1824 * se, rel=1e-4)
    assert p.t == pytest.approx(2.5 / se)
    assert p.p_t == pytest.approx(0.0305, abs=5e-4)  # t = 3.873 on 3 degrees of freedom
    # Wilcoxon: all four ranks positive, W- = 0; exactly 1 of the 2^4 sign patterns is as extreme each way.
    assert p.p_wilcoxon == pytest.approx(2 / 16)
    assert p.nonzero == 4


def test_paired_identical_scores_and_bad_shapes():
    same = paired([1.0, 0.8, 1.0], [1.0, 0.8, 1.0])
    assert same.diff == 0 and same.half == 0 and same.p_t == 1 and same.p_wilcoxon == 1 and same.nonzero == 0
    shifted = paired([1.0, 0.75, 0.5], [0.5, 0.25, 0.0])  # the same difference everywhere: sd 0
    assert shifted.p_t == 0 and shifted.half == 0
    with pytest.raises(ValueError, match="in pairs"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired([1.0], [1.0])


def test_two_sample_z_with_a_published_ci():
    # se_ours = 0.01, se_published = 0.02: the bound is 1.96 * sqrt(0.0005) = 0.04383.
    v = two_sample_z(0.60, 0.0196, 0.63, 0.0392)
    assert v.agrees is True and v.text == "consistent"
    assert v.bound == pytest.approx(0.043827, abs=1e-6)
    assert v.statistic == pytest.approx(-0.03 / math.sqrt(0.0005))
    assert v.p == pytest.approx(0.1797, abs=1e-4)
    far = two_sample_z(0.50, 0.0196, 0.63, 0.0392)
    assert far.agrees is False and far.text == "differs" and far.p < 1e-8
    # The old rule (|difference| <= our half-width) said "no" here; the published CI widens the bound.
    assert two_sample_z(97.0, 0.5, 97.6, 0.4).agrees is True


def test_two_sample_z_when_every_task_scores_100_percent():
    # Ours 100.00 +- 0.00: our se is 0, so only the published CI is left (se_published = half / 1.96).
    assert two_sample_z(100.0, 0.0, 99.8, 0.1).agrees is False  # |0.2| > 0.1
    assert two_sample_z(100.0, 0.0, 99.8, 0.1).statistic == pytest.approx(0.2 / (0.1 / 1.96))
    assert two_sample_z(100.0, 0.0, 99.9, 0.2).agrees is True  # |0.1| <= 0.2
    both_zero = two_sample_z(100.0, 0.0, 100.0, 0.0)
    assert both_zero.agrees is True and both_zero.p == 1
    assert two_sample_z(100.0, 0.0, 99.9, 0.0).agrees is False  # no uncertainty anywhere: only equality agrees


def test_no_published_ci_no_verdict():
    v = two_sample_z(0.12, 0.01, 0.13, None)
    assert v.agrees is None and v.text == "no published CI" and math.isnan(v.p)


def test_format_p():
    assert [format_p(p) for p in (0.5, 0.031, 0.00012, 1e-12)] == ["0.500", "0.031", "0.00012", "< 1e-10"]
    assert (p_is(0.031), p_is(1e-12)) == ("p = 0.031", "p < 1e-10")  # never "p = < 1e-10"


def run(mean, ci95, seed=0, n=600, status="finished"):
    return {"mean": mean, "ci95": ci95, "seed": seed, "n_tasks": n, "status": status}  # a 1.96-based CI (no method)


def test_reproduction_rows_name_their_test():
    row = task_row("maml_5w5s", "accuracy", run(1.0, 0.0), 99.9, 0.2)  # every task at 100%
    assert row[OURS] == "100.00 ± 0.00" and row["difference"] == "+0.10"
    assert row[VERDICT_Z] == "yes" and row[P_Z] == format_p(two_sample_z(100.0, 0.0, 99.9, 0.2).p)
    assert row[PM] == "a 95% CI over test tasks"
    assert task_row("maml_5w5s", "accuracy", run(1.0, 0.0), 99.8, 0.1)[VERDICT_Z] == "no"
    assert task_row("x", "mse", None, 0.13, None)[OURS] == "missing"
    rows = seed_row("reptile", "mse", [run(0.5, 0.02, 0), run(0.6, 0.02, 1), run(0.7, 0.02, 2, status="failed")],
                    [0, 1, 2, 3], 0.3)
    assert rows["seeds"] == "2 of 4 (seed 2 failed, seed 3 missing)"
    # Two finished seeds, 0.5 and 0.6: se across seeds 0.05, over test tasks 0.02 / 1.96; z = 0.25 / 0.051 > 1.96.
    assert rows[VERDICT_T] == "no" and rows["per seed (mean ± 95% CI over test tasks)"] == (
        "seed 0: 0.5000 ± 0.020; seed 1: 0.6000 ± 0.020")


def test_a_published_pm_is_used_as_what_it_is():
    ours = run(0.9768, 0.0005, n=10000)  # 97.68 ± 0.05 (1.96-based): se 0.0255 points
    # As a CI over tasks, 97.5 ± 0.2 adds se 0.102: |0.18| <= 1.96 * 0.105 = 0.206.
    assert task_row("c", "accuracy", ours, 97.5, 0.2, "ci95_tasks")[VERDICT_Z] == "yes"
    # Of unknown kind, the published mean is a point: |0.18| > 1.96 * 0.0255.
    unknown = task_row("c", "accuracy", ours, 97.5, 0.2, "unknown")
    assert unknown[VERDICT_Z] == "no" and unknown[PM].startswith("of unknown kind (not used")
    # A std over runs: se 0.2 itself.
    assert task_row("c", "accuracy", ours, 97.5, 0.2, "std_runs")[P_Z] == format_p(
        2 * (1 - _phi(0.18 / math.hypot(0.0255, 0.2))))
    with pytest.raises(ValueError, match="ci95_tasks, std_runs, unknown"):
        task_row("c", "accuracy", ours, 97.5, 0.2, "sem")


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_seeds_verdict_adds_the_test_sets_error_and_the_published_ci():
    # Seeds 98.35 / 98.40 / 98.45 on the same 600 test tasks, each ± 0.45 (t-based), against 98.7 ± 0.4 (CI over
    # tasks): the seeds alone would call it outside (one-sample t = -10.4); with the shared test-set error and
    # the published CI, z = -0.30 / sqrt(0.0289^2 + 0.229^2 + 0.204^2) = -0.97: consistent.
    t599 = 1.963939
    runs = [{"mean": m, "ci95": 0.0045, "ci95_method": "t", "seed": s, "n_tasks": 600, "status": "finished"}
            for s, m in enumerate((0.9835, 0.9840, 0.9845))]
    row = seed_row("maml_5w1s", "accuracy", runs, [0, 1, 2], 98.7, 0.4, "ci95_tasks")
    se = math.sqrt((0.05 / math.sqrt(3)) ** 2 + (0.45 / t599) ** 2 + (0.4 / 1.96) ** 2)
    assert row[VERDICT_T] == "yes" and row[P_T] == format_p(2 * (1 - _phi(0.30 / se)))
    assert -0.30 / se == pytest.approx(-0.97, abs=0.01)
    one = seed_row("maml_5w1s", "accuracy", runs[:1], [0], 98.7, 0.4, "ci95_tasks")
    assert one[OURS_SEEDS_COL] == "98.35 (1 seed: no CI across seeds)"


OURS_SEEDS_COL = "ours (mean over seeds ± 95% t-CI)"


def test_one_test_task_has_no_interval():
    row = task_row("c", "accuracy", run(0.8, math.nan, n=1), 97.5, 0.2)
    assert row[OURS] == "80.00 (1 task: no CI)" and row[VERDICT_Z] == "no CI to test with"


# ---- Wilcoxon signed-rank with ties, against exact enumeration --------------------------------------------------

def _exact_wilcoxon_p(diffs: list[int]) -> float:
    """Two-sided p of the signed-rank statistic with midranks, by enumerating all 2^n sign patterns."""
    nonzero = [d for d in diffs if d != 0]
    magnitudes = sorted(abs(d) for d in nonzero)
    rank = {m: (magnitudes.index(m) + 1 + len(magnitudes) - magnitudes[::-1].index(m)) / 2 for m in magnitudes}
    ranks = [rank[abs(d)] for d in nonzero]
    total = sum(ranks)
    observed = sum(r for r, d in zip(ranks, nonzero, strict=True) if d > 0)
    far = abs(observed - total / 2)
    hits = sum(abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - total / 2) >= far - 1e-9
               for signs in itertools.product((0, 1), repeat=len(ranks)))
    return hits / 2 ** len(ranks)


def test_wilcoxon_sees_the_ties_of_accuracies_formed_in_floating_point():
    a = [.84, .64, .44, .28, .60, .92, .52, .76]
    b = [.80, .60, .40, .32, .56, .88, .56, .72]  # differences of +-0.04, which floats make all distinct
    p = paired(a, b, grid=25)
    assert p.p_wilcoxon == pytest.approx(74 / 256) == pytest.approx(_exact_wilcoxon_p([1, 1, 1, -1, 1, 1, -1, 1]))
    assert p.wilcoxon_method == "exact permutation (ties)"
    assert paired(a, b).p_wilcoxon == pytest.approx(0.3125)  # without the grid: wrong ranks, the old answer
    assert p.diff == pytest.approx(0.02) and p.nonzero == 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_with_ties_matches_exact_enumeration_up_to_13_tasks(seed):
    rng = random.Random(seed)
    a = [rng.randint(0, 5) / 5 for _ in range(12)]
    b = [rng.randint(0, 5) / 5 for _ in range(12)]
    counts = [round(x * 5) - round(y * 5) for x, y in zip(a, b, strict=True)]
    assert paired(a, b, grid=5).p_wilcoxon == pytest.approx(_exact_wilcoxon_p(counts), abs=1e-12)


def test_wilcoxon_above_13_tasks_is_the_tie_corrected_normal_approximation():
    # 600 tasks of 25 queries: the exact counts give a tie-corrected z; the float differences hid the ties.
    rng = random.Random(3)
    a = [rng.randint(15, 25) / 25 for _ in range(600)]
    b = [min(25, max(0, round(x * 25) + rng.choice((-2, -1, -1, 0, 0, 0, 1, 1)))) / 25 for x in a]
    counts = [round(x * 25) - round(y * 25) for x, y in zip(a, b, strict=True)]
    nonzero = [d for d in counts if d]
    n = len(nonzero)
    # Midranks of |d| and the tie-corrected variance n(n+1)(2n+1)/24 - sum(t^3 - t)/48 (Lehmann), by hand.
    magnitudes = sorted(abs(d) for d in nonzero)
    groups = {m: magnitudes.count(m) for m in set(magnitudes)}
    start, midrank = 0, {}
    for m in sorted(groups):
        midrank[m] = start + (groups[m] + 1) / 2
        start += groups[m]
    w_plus = sum(midrank[abs(d)] for d in nonzero if d > 0)
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t ** 3 - t for t in groups.values()) / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var)
    p = paired(a, b, grid=25)
    assert p.wilcoxon_method == "normal approximation, tie-corrected"
    assert p.p_wilcoxon == pytest.approx(2 * (1 - _phi(abs(z))), rel=1e-9)


def test_scores_off_the_grid_are_refused():
    assert on_grid([0.2, 0.8000000119], 5) == [1, 4]  # float32 round-off is on the grid
    with pytest.raises(ValueError, match="not multiples of 1/5"):
        on_grid([0.25], 5)


# ---- Holm's correction, against the step-down procedure ---------------------------------------------------------

def test_holm_matches_the_step_down_procedure():
    rng = random.Random(0)
    for _ in range(50):
        ps = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        adjusted = holm(ps)
        for alpha in (0.001, 0.01, 0.05, 0.1):
            # Step down: reject the i-th smallest while p_(j) <= alpha / (m - j + 1) for every j <= i.
            order = sorted(range(len(ps)), key=ps.__getitem__)
            rejected = set()
            for j, i in enumerate(order):
                if ps[i] > alpha / (len(ps) - j):
                    break
                rejected.add(i)
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == rejected
    assert holm([0.01, 0.04, 0.03, math.nan]) == [0.03, 0.06, 0.06, pytest.approx(math.nan, nan_ok=True)]


# ---- what a published CI over test tasks can be ------------------------------------------------------------------

def test_narrowest_and_widest_ci_of_an_accuracy_protocol():
    # Reptile, Omniglot 5-way, 1 query per class, 10,000 tasks: its ±0.04 (1-shot) and ±0.06 (5-shot) are below.
    assert 100 * accuracy_ci_bounds(0.9768, 5, 10000)[0] == pytest.approx(0.126, abs=5e-4)
    assert 100 * accuracy_ci_bounds(0.9948, 5, 10000)[0] == pytest.approx(0.0624, abs=5e-4)
    # Gradient agreement's 98.6 ± 0.63 under that protocol: the widest is 0.23.
    assert 100 * accuracy_ci_bounds(0.986, 5, 10000)[1] == pytest.approx(0.23, abs=5e-3)
    # 20-way 5-shot ±1.34 exceeds even the widest 600-task CI (one query per class: 20 answers per task).
    assert 100 * accuracy_ci_bounds(0.9899, 20, 600)[1] == pytest.approx(0.80, abs=5e-3)
    # On the grid, nothing forbids every task scoring the same: the narrowest is 0.
    assert accuracy_ci_bounds(0.8, 5, 600)[0] == 0
