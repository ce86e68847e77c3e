"""The statistics behind metarun's comparisons: pure functions of plain numbers, no torch, no files.

- `t_interval`: mean and t-based 95% CI half-width over a few values (training seeds);
- `paired`: a paired comparison of two score vectors on the same test tasks (paired t with its CI and
  p-value, and the Wilcoxon signed-rank p-value beside it, tie-aware on the metric's grid);
- `holm`: Holm's step-down adjustment of a family of p-values;
- `z_verdict`, `two_sample_z`: whether our mean and a published one can be the same quantity, given their errors;
- `accuracy_ci_bounds`: the narrowest and widest CI over test tasks an accuracy protocol allows.

Every half-width is for a two-sided 95% interval; p-values are two-sided.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy

Z95 = 1.96  # the normal quantile behind every "± CI" metarun and the papers print


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (12.706 for 1, 4.303 for 2, ...)."""
    return float(_scipy.t.ppf(0.975, df))


def t_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half-width of the t-based 95% CI, n). With one value the half-width is nan: no CI exists."""
    n = len(values)
    if n == 0:
        raise ValueError("a mean needs at least one value")
    mean, sd = _mean_sd(values)
    if n == 1:
        return mean, math.nan, 1
    return mean, t_quantile(n - 1) * sd / math.sqrt(n), n


def _t_p_value(mean: float, sd: float, n: int) -> tuple[float, float]:
    """(t, two-sided p) of a one-sample t-test of `mean` against 0; sd = 0 is decided without dividing."""
    if sd == 0 or math.isnan(sd):
        if mean == 0:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    t = mean / (sd / math.sqrt(n))
    return t, float(2 * _scipy.t.sf(abs(t), n - 1))


@dataclass(frozen=True)
class Paired:
    """a − b on n paired values: mean difference, its t-based 95% CI, paired t and Wilcoxon signed-rank."""

    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean of a_i − b_i
    half: float  # 95% CI half-width of diff (t with n − 1 degrees of freedom)
    t: float
    p_t: float
    p_wilcoxon: float
    nonzero: int  # pairs with a_i != b_i: the Wilcoxon test ranks only these
    wilcoxon_method: str = ""  # how scipy computed p_wilcoxon (exact, permutation, normal approximation)

    @property
    def low(self) -> float:
        return self.diff - self.half

    @property
    def high(self) -> float:
        return self.diff + self.half


def on_grid(values: Sequence[float], grid: int) -> list[int]:
    """Scores that are multiples of 1/grid (an accuracy over `grid` query answers) as whole counts.

    Differences of fractions formed in floating point differ in their last bits (0.84 − 0.80 is not
    0.64 − 0.60), which hides ties from a rank test; differences of counts are exact.
    """
    counts = [round(v * grid) for v in values]
    # float32 scores are within ~1e-7 relative of k/grid; half a step away would be another grid.
    off = [v for v, k in zip(values, counts, strict=True) if abs(v * grid - k) > 1e-3]
    if off:
        raise ValueError(f"{len(off)} score(s) are not multiples of 1/{grid} (e.g. {off[0]!r}): not accuracies over "
                         f"{grid} answers")
    return counts


def wilcoxon_method(diffs: Sequence[float]) -> str:
    """Which null distribution scipy's `method='auto'` takes for these exact differences (zeros dropped)."""
    nonzero = [d for d in diffs if d != 0]
    ties = len({abs(d) for d in nonzero}) < len(nonzero)
    if len(nonzero) > 50 or (ties and len(nonzero) > 13):
        return "normal approximation" + (", tie-corrected" if ties else "")
    return "exact permutation (ties)" if ties else "exact"


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; zero differences are dropped (Wilcoxon's convention).

    `diffs` must be exact (counts on the metric's grid, see `on_grid`), so that equal differences tie.
    scipy's `method='auto'` then takes the exact distribution without ties (n ≤ 50), every sign
    permutation with ties (n ≤ 13), and the normal approximation with the tie correction above. No
    non-zero difference at all: p = 1 (nothing to rank).
    """
    nonzero = [d for d in diffs if d != 0]
    if not nonzero:
        return 1.0
    return float(_scipy.wilcoxon(nonzero, zero_method="wilcox", method="auto").pvalue)


def paired(a: Sequence[float], b: Sequence[float], grid: int | None = None) -> Paired:
    """Compare a and b pair by pair (the same test tasks, or the same seeds): statistics of a_i − b_i.

    `grid`: the values are multiples of 1/grid (accuracy over `grid` answers): differences are formed
    as whole counts, so ties are ties. Without it (MSE) the float differences are used as they are:
    rounding could merge distinct values, and distinct MSEs tie only by exact equality.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs: {len(a)} vs {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {len(a)}")
    if grid:
        exact = [x - y for x, y in zip(on_grid(a, grid), on_grid(b, grid), strict=True)]
        diffs = [d / grid for d in exact]
    else:
        exact = diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = _mean_sd(diffs)
    t, p = _t_p_value(mean, sd, len(diffs))
    return Paired(n=len(diffs), mean_a=math.fsum(a) / len(a), mean_b=math.fsum(b) / len(b), diff=mean,
                  half=t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs)), t=t, p_t=p,
                  p_wilcoxon=wilcoxon_p(exact), nonzero=sum(d != 0 for d in exact),
                  wilcoxon_method=wilcoxon_method(exact))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values for one family of tests, in the order given (nan stays nan).

    Sorted ascending, the i-th of m (from 1) is max over j ≤ i of min(1, (m − j + 1) · p_(j)); a test is
    rejected at level α exactly when its adjusted p ≤ α. It controls the family-wise error rate without
    assuming the tests independent.
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, out, running = len(order), [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing our number with a published one; `agrees` is None where nothing was tested."""

    agrees: bool | None
    statistic: float  # z or t; nan where nothing was tested
    p: float
    bound: float  # the largest |ours − published| that agrees (nan where nothing was tested)
    text: str


def z_verdict(diff: float, ses: Sequence[float], consistent: str = "consistent") -> Verdict:
    """Whether a difference is within what the independent errors `ses` (standard errors) allow: z = diff / √Σse².

    They agree at 95% when |diff| ≤ 1.96 · √Σse². Every se zero (every test task at 100%, printed as ± 0.00):
    only an exact match agrees.
    """
    se = math.sqrt(math.fsum(s * s for s in ses))
    bound = Z95 * se
    if se == 0:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * _scipy.norm.sf(abs(z)))
    agrees = abs(diff) <= bound
    return Verdict(agrees, z, p, bound, consistent if agrees else "differs")


def two_sample_z(ours: float, ours_half: float, published: float, published_half: float | None) -> Verdict:
    """Two-sample z-test of ours against a published mean ± 95% CI (se = half-width / 1.96 on each side).

    They agree at 95% when |ours − published| ≤ 1.96 · √(se_ours² + se_published²). Without a
    published CI nothing is tested.
    """
    if published_half is None or math.isnan(published_half):
        return Verdict(None, math.nan, math.nan, math.nan, "no published CI")
    return z_verdict(ours - published, (ours_half / Z95, published_half / Z95))


def accuracy_ci_bounds(mean: float, answers: int, tasks: int) -> tuple[float, float]:
    """The narrowest and widest 95% CI half-widths over `tasks` test tasks that a mean accuracy allows when each
    task's accuracy is a multiple of 1/answers (ways × queries answers per task). Fractions, not percent.

    Narrowest: every task on the two grid points around the mean (the least spread a mean off the grid
    allows); widest: every task at 0 or 1 (spread p(1 − p)). Both with the normal quantile below and Student's
    t above, so that neither convention is ruled out by the other.
    """
    low = math.floor(mean * answers + 1e-9) / answers
    high = min(1.0, low + 1 / answers)
    narrow = Z95 * math.sqrt(max(0.0, (mean - low) * (high - mean)) / tasks)
    wide = t_quantile(max(1, tasks - 1)) * math.sqrt(mean * (1 - mean) / (tasks - 1 if tasks > 1 else 1))
    return narrow, wide


def format_p(p: float) -> str:
    """p-values as people print them: 0.031, 0.0012, < 1e-10."""
    if math.isnan(p):
        return ""
    if p < 1e-10:
        return "< 1e-10"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """`p = 0.031`, or `p < 1e-10` where the value is below what is printed."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
