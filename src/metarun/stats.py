"""The statistics behind metarun's comparisons: pure functions of plain numbers, no torch, no files.

- `t_interval`: mean and t-based 95% CI half-width over a few values (training seeds);
- `paired`: a paired comparison of two score vectors on the same test tasks (paired t with its CI and
  p-value, and the Wilcoxon signed-rank p-value beside it);
- `two_sample_z`: whether our mean ± CI and a published mean ± CI can be the same quantity;
- `one_sample_t`: whether a published number lies inside our across-seed CI.

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

    @property
    def low(self) -> float:
        return self.diff - self.half

    @property
    def high(self) -> float:
        return self.diff + self.half


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; zero differences are dropped (Wilcoxon's convention).

    scipy chooses the exact null distribution for small samples without ties, the normal
    approximation otherwise. No non-zero difference at all: p = 1 (nothing to rank).
    """
    nonzero = [d for d in diffs if d != 0]
    if not nonzero:
        return 1.0
    return float(_scipy.wilcoxon(nonzero, zero_method="wilcox").pvalue)


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare a and b pair by pair (the same test tasks, or the same seeds): statistics of a_i − b_i."""
    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs: {len(a)} vs {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {len(a)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = _mean_sd(diffs)
    t, p = _t_p_value(mean, sd, len(diffs))
    return Paired(n=len(diffs), mean_a=math.fsum(a) / len(a), mean_b=math.fsum(b) / len(b), diff=mean,
                  half=t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs)), t=t, p_t=p,
                  p_wilcoxon=wilcoxon_p(diffs), nonzero=sum(d != 0 for d in diffs))


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing our number with a published one; `agrees` is None where nothing was tested."""

    agrees: bool | None
    statistic: float  # z or t; nan where nothing was tested
    p: float
    bound: float  # the largest |ours − published| that agrees (nan where nothing was tested)
    text: str


def two_sample_z(ours: float, ours_half: float, published: float, published_half: float | None) -> Verdict:
    """Two-sample z-test of ours against a published mean ± 95% CI (se = half-width / 1.96 on each side).

    They agree at 95% when |ours − published| ≤ 1.96 · √(se_ours² + se_published²). Without a
    published CI nothing is tested. Both half-widths zero (every test task at 100%, printed as
    ± 0.00): only an exact match agrees.
    """
    if published_half is None or math.isnan(published_half):
        return Verdict(None, math.nan, math.nan, math.nan, "no published CI")
    se = math.hypot(ours_half / Z95, published_half / Z95)
    diff = ours - published
    bound = Z95 * se
    if se == 0:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2 * _scipy.norm.sf(abs(z)))
    agrees = abs(diff) <= bound
    return Verdict(agrees, z, p, bound, "consistent" if agrees else "differs")


def one_sample_t(seed_means: Sequence[float], published: float) -> Verdict:
    """Whether `published` lies inside the t-based 95% CI of our seed means (a one-sample t-test).

    With one seed there is no across-seed CI and nothing is tested.
    """
    n = len(seed_means)
    if n < 2:
        return Verdict(None, math.nan, math.nan, math.nan, f"{n} seed: no across-seed CI")
    mean, sd = _mean_sd(seed_means)
    t, p = _t_p_value(mean - published, sd, n)
    bound = t_quantile(n - 1) * sd / math.sqrt(n)
    agrees = abs(mean - published) <= bound
    return Verdict(agrees, t, p, bound, "inside" if agrees else "outside")


def format_p(p: float) -> str:
    """p-values as people print them: 0.031, 0.0012, < 1e-10."""
    if math.isnan(p):
        return ""
    if p < 1e-10:
        return "< 1e-10"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"
