"""The statistics of comparisons and reproductions, each branch against numbers computed by hand.

Quantiles from printed tables: t(0.975; 2) = 4.3027, t(0.975; 3) = 3.1824. For 2 degrees of freedom the
two-sided p-value has a closed form, p = 1 - t / sqrt(t^2 + 2).
"""

from __future__ import annotations

import math

import pytest

from metarun.stats import format_p, one_sample_t, paired, t_interval, two_sample_z
from metarun.verdict import OURS, P_Z, VERDICT_T, VERDICT_Z, seed_row, task_row


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


def test_one_sample_t_across_seeds():
    v = one_sample_t([0.5, 0.6, 0.7], 0.3)  # t = 0.3 / (0.1 / sqrt 3) = 5.196 on 2 degrees of freedom
    assert v.statistic == pytest.approx(0.3 / (0.1 / math.sqrt(3)))
    assert v.p == pytest.approx(1 - v.statistic / math.sqrt(v.statistic**2 + 2))
    assert v.bound == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert v.agrees is False and v.text == "outside"
    assert one_sample_t([0.5, 0.6, 0.7], 0.65).agrees is True
    one = one_sample_t([0.5], 0.3)
    assert one.agrees is None and one.text == "1 seed: no across-seed CI"


def test_format_p():
    assert [format_p(p) for p in (0.5, 0.031, 0.00012, 1e-12)] == ["0.500", "0.031", "0.00012", "< 1e-10"]


def run(mean, ci95, seed=0, n=600, status="finished"):
    return {"mean": mean, "ci95": ci95, "seed": seed, "n_tasks": n, "status": status}


def test_reproduction_rows_name_their_test():
    row = task_row("maml_5w5s", "accuracy", run(1.0, 0.0), 99.9, 0.2)  # every task at 100%
    assert row[OURS] == "100.00 ± 0.00" and row["difference"] == "+0.10"
    assert row[VERDICT_Z] == "yes" and row[P_Z] == format_p(two_sample_z(100.0, 0.0, 99.9, 0.2).p)
    assert task_row("maml_5w5s", "accuracy", run(1.0, 0.0), 99.8, 0.1)[VERDICT_Z] == "no"
    assert task_row("reptile", "mse", run(0.2, 0.01), 0.13, None)[VERDICT_Z] == "no published CI"
    assert task_row("x", "mse", None, 0.13, None)[OURS] == "missing"
    rows = seed_row("reptile", "mse", [run(0.5, 0.02, 0), run(0.6, 0.02, 1), run(0.7, 0.02, 2, status="failed")],
                    [0, 1, 2, 3], 0.3)
    assert rows["seeds"] == "2 of 4 (seed 2 failed, seed 3 missing)"
    # Two finished seeds, 0.5 and 0.6: 0.55 +- t(0.975; 1) * 0.05 = 0.55 +- 0.635, wide enough to hold 0.3.
    assert rows[VERDICT_T] == "yes" and rows["per seed (mean ± 95% CI over test tasks)"] == (
        "seed 0: 0.5 ± 0.02; seed 1: 0.6 ± 0.02")
