"""Statistics of a sweep's cells: a confidence interval per cell, and paired comparisons of two methods.

Seeds are the replicates. Two methods evaluated with the same seed share their evaluation noise (the
sampling noise and the likelihood's data and probes are drawn from eval.seed, the same for every trial), and
their training seed too, so their difference per seed is the paired observation: the comparison is a paired
t-test on those differences (Student's t, n - 1 degrees of freedom), with its confidence interval for the mean
difference and Cohen's d_z (mean difference / standard deviation of the differences) as the effect size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95  # the confidence level of every interval fmx reports


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its Student-t confidence interval (NaN bounds with fewer than two values)."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The t-interval mean ± t_{(1+level)/2, n-1} · s / sqrt(n) (s the sample standard deviation)."""
    from scipy import stats

    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(clean)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(clean) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """A minus B over matched seeds: the mean difference with its interval, d_z, the p-value, the verdict."""

    seeds: tuple[int, ...]
    mean_a: float
    mean_b: float
    difference: Interval
    effect_size: float
    p_value: float
    verdict: str


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Comparison:
    """Compare two methods' values on the seeds both have. Verdict: "A lower" or "B lower" when the interval of
    the mean difference excludes 0, "tie" when it covers 0, and "no verdict (n seed)" below two matched seeds."""
    from scipy import stats

    seeds = tuple(sorted(s for s in a if s in b and _finite(a[s]) and _finite(b[s])))
    xs, ys = [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]
    diffs = [x - y for x, y in zip(xs, ys, strict=True)]
    interval = mean_interval(diffs, level)
    mean_a = sum(xs) / len(xs) if xs else math.nan
    mean_b = sum(ys) / len(ys) if ys else math.nan
    if len(seeds) < 2:
        return Comparison(seeds, mean_a, mean_b, interval, math.nan, math.nan, f"no verdict ({len(seeds)} seed)")
    if interval.std == 0:  # identical differences: the interval is the point itself
        effect = math.inf if interval.mean else 0.0
        p = 0.0 if interval.mean else 1.0
        verdict = "tie" if interval.mean == 0 else ("A lower" if interval.mean < 0 else "B lower")
        return Comparison(seeds, mean_a, mean_b, interval, math.copysign(effect, interval.mean), p, verdict)
    p = float(stats.ttest_rel(xs, ys).pvalue)
    effect = interval.mean / interval.std
    if interval.low <= 0 <= interval.high:
        verdict = "tie"
    else:
        verdict = "A lower" if interval.mean < 0 else "B lower"
    return Comparison(seeds, mean_a, mean_b, interval, effect, p, verdict)


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
