"""Statistics of a sweep's cells: a confidence interval per cell, and paired comparisons of two methods.

Seeds are the replicates. Two methods evaluated with the same seed share their evaluation noise (the
sampling noise and the likelihood's data and probes are drawn from eval.seed, the same for every trial), and
their training seed too, so their difference per seed is the paired observation: the comparison is a paired
t-test on those differences (Student's t, n - 1 degrees of freedom), with its confidence interval for the mean
difference and Cohen's d_z (mean difference / standard deviation of the differences) as the effect size.

Positive quantities (NFE, sample distances, ODE errors: `positive` in orchestrator.rows) are compared on the
log scale: the paired differences are log A - log B, so the interval is one of the ratio A / B (of geometric
means) and stays positive, and a doubling counts the same at 10 NFE as at 1000. A cell's interval of such a
quantity is likewise the t-interval of its log values, exponentiated (the interval of the geometric mean),
where the linear t-interval of 2 seeds spans tens of times their spread and goes below 0.

The verdict says what the seeds settle, not more: "A lower" or "B lower" where the interval excludes no
difference; "no difference detected" where it does not, with the smallest difference those seeds would have
detected (80 % power at the observed spread) and about how many seeds would detect the observed one; and,
given a margin, "equivalent within ±m" where two one-sided tests (TOST, Schuirmann 1987) both reject a
difference beyond the margin. Seeds that all differ by the same amount have no spread to test against: that
is said as it is ("A lower in every seed, by 12"), with no effect size or p-value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95  # the confidence level of every interval fmx reports
POWER = 0.8  # the power at which "the smallest detectable difference" and "seeds needed" are computed
MAX_SEEDS = 10_000  # beyond this, "seeds needed" says "more than"
SPREAD_TOLERANCE = 1e-9  # differences whose spread is below this fraction of their mean count as identical

# The outcomes a comparison can have (Comparison.outcome); the verdict is their sentence.
A_LOWER, B_LOWER, NOT_DETECTED, EQUIVALENT, NO_VERDICT = "A lower", "B lower", "no difference detected", "equivalent", "no verdict"


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its Student-t confidence interval (NaN bounds with fewer than two values)."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def mean_interval(values: Sequence[float], level: float = LEVEL, positive: bool = False) -> Interval:
    """The t-interval mean ± t_{(1+level)/2, n-1} · s / sqrt(n) (s the sample standard deviation). `positive`:
    where every value is above 0, the bounds are those of the log values' interval, exponentiated (the
    geometric mean's interval, which stays positive); mean and std stay those of the values."""
    from scipy.special import stdtrit  # t's quantile, as scipy.stats.t.ppf computes it, without scipy.stats' ~0.6 s import

    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(clean)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(clean) / n
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = _std(clean)
    if positive and min(clean) > 0:
        logs = mean_interval([math.log(v) for v in clean], level)
        return Interval(n, mean, std, math.exp(logs.low), math.exp(logs.high))
    half = float(stdtrit(n - 1, (1 + level) / 2)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def _std(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Comparison:
    """A minus B over matched seeds: the mean difference with its interval, d_z, the p-value, the verdict.

    `difference` is A - B on the metric's scale; `ratio`, for a positive metric, is A / B with the interval
    the verdict was judged by (else None). `detectable`: the smallest |difference| (for a positive metric, the
    smallest ratio above 1, either way) these seeds would detect with POWER; `seeds_needed`: about how many
    seeds would detect the observed one (None: nothing to detect, or not estimable). `equivalence_p`: the TOST
    p-value against `margin` (NaN without one)."""

    seeds: tuple[int, ...]
    mean_a: float
    mean_b: float
    difference: Interval
    effect_size: float
    p_value: float
    verdict: str
    outcome: str = NO_VERDICT
    ratio: Interval | None = None
    detectable: float = math.nan
    seeds_needed: int | None = None
    margin: float | None = None
    equivalence_p: float = math.nan
    constant: bool = False  # every seed differs by the same amount (or ratio): no spread to test against


def paired_comparison(
    a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL, positive: bool = False, margin: float | None = None
) -> Comparison:
    """Compare two methods' values on the seeds both have (the module's docstring: scales and verdicts).
    `positive`: judge A / B on the log scale (where every value is above 0); `margin`: also test equivalence
    within ±margin (in the metric's units, on A - B) by TOST at 1 - level."""
    seeds = tuple(sorted(s for s in a if s in b and _finite(a[s]) and _finite(b[s])))
    xs, ys = [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]
    diffs = [x - y for x, y in zip(xs, ys, strict=True)]
    interval = mean_interval(diffs, level)
    mean_a = sum(xs) / len(xs) if xs else math.nan
    mean_b = sum(ys) / len(ys) if ys else math.nan
    base = {"seeds": seeds, "mean_a": mean_a, "mean_b": mean_b, "difference": interval, "margin": margin}
    if len(seeds) < 2:
        return Comparison(**base, effect_size=math.nan, p_value=math.nan, verdict=f"no verdict ({len(seeds)} seed)")
    log = positive and min(xs + ys) > 0
    tested = [math.log(x) - math.log(y) for x, y in zip(xs, ys, strict=True)] if log else diffs
    judged = mean_interval(tested, level)
    ratio = Interval(judged.n, math.exp(judged.mean), math.nan, math.exp(judged.low), math.exp(judged.high)) if log else None
    base["ratio"] = ratio
    if _no_spread(interval) or _no_spread(judged):  # the differences are the answer, as they are
        return _constant(base, diffs, tested)
    from scipy import stats

    p = float(stats.ttest_1samp(tested, 0.0).pvalue)
    effect = judged.mean / judged.std
    detectable = _detectable(judged.std, len(seeds), level)
    needed = _seeds_needed(abs(judged.mean) / judged.std, level)
    equivalence_p = _tost(diffs, margin, level) if margin is not None else math.nan
    base |= {"effect_size": effect, "p_value": p, "detectable": math.exp(detectable) if log else detectable,
             "seeds_needed": needed, "equivalence_p": equivalence_p}
    equivalent = margin is not None and equivalence_p < 1 - level
    within = f"within ±{margin:.4g}" if margin is not None else ""
    if not judged.low <= 0 <= judged.high:
        outcome = A_LOWER if judged.mean < 0 else B_LOWER
        return Comparison(**base, outcome=outcome, verdict=outcome + (f", {within}" if equivalent else ""))
    if equivalent:
        return Comparison(**base, outcome=EQUIVALENT, verdict=f"equivalent {within}")
    return Comparison(**base, outcome=NOT_DETECTED, verdict=_not_detected(detectable, needed, len(seeds), log))


def _constant(base: dict, diffs: list[float], tested: list[float]) -> Comparison:
    """Every seed differs by the same amount (or, on the log scale, ratio): said as such."""
    margin = base["margin"]
    linear, judged = mean_interval(diffs), mean_interval(tested)
    by = linear.mean if _no_spread(linear) else None
    if judged.mean == 0:
        outcome, verdict = (EQUIVALENT, "the same in every seed") if margin is not None else (NOT_DETECTED, "the same in every seed")
    else:
        outcome = A_LOWER if judged.mean < 0 else B_LOWER
        amount = f"by {abs(by):.4g}" if by is not None else f"by a factor {math.exp(abs(judged.mean)):.4g}"
        verdict = f"{outcome} in every seed, {amount}"
        if margin is not None and by is not None and abs(by) < margin:
            verdict += f", within ±{margin:.4g}"
    return Comparison(**base, effect_size=math.nan, p_value=math.nan, verdict=verdict, outcome=outcome, constant=True)


def _no_spread(interval: Interval) -> bool:
    """Every value the same, but for rounding (log 20 - log 10 and log 40 - log 20 differ in the last bit)."""
    return interval.std <= SPREAD_TOLERANCE * abs(interval.mean)


def _not_detected(detectable: float, needed: int | None, n: int, log: bool) -> str:
    can = f"A / B above {math.exp(detectable):.3g} or below {math.exp(-detectable):.3g}" if log else f"|A - B| above {detectable:.3g}"
    more = "" if needed is None else (f"; ~{needed} seeds would detect this one" if needed <= MAX_SEEDS else f"; >{MAX_SEEDS} seeds to detect this one")
    return f"no difference detected ({n} seeds detect {can}{more})"


def power(effect: float, n: int, level: float = LEVEL) -> float:
    """The two-sided paired t-test's power at standardized effect `effect` (mean / sd of differences) with n
    pairs: the noncentral t with n - 1 degrees of freedom and noncentrality effect · sqrt(n)."""
    from scipy import stats

    critical = float(stats.t.ppf((1 + level) / 2, n - 1))
    nc = effect * math.sqrt(n)
    wrong_side = float(stats.nct.cdf(-critical, n - 1, nc))  # NaN from scipy where it underflows far out
    return float(stats.nct.sf(critical, n - 1, nc)) + (0.0 if math.isnan(wrong_side) else wrong_side)


def _detectable(std: float, n: int, level: float) -> float:
    """The smallest |mean difference| the test detects with POWER, were the spread `std` the true one."""
    from scipy import optimize

    high = 1.0
    while power(high, n, level) < POWER:  # bracket the root: power grows with the effect
        high *= 2
    return optimize.brentq(lambda e: power(e, n, level) - POWER, 0.0, high) * std


def _seeds_needed(effect: float, level: float) -> int | None:
    """The fewest seeds whose test detects standardized `effect` with POWER (MAX_SEEDS + 1 where more)."""
    if effect == 0:
        return None
    if power(effect, MAX_SEEDS, level) < POWER:
        return MAX_SEEDS + 1
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches POWER
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if power(effect, mid, level) >= POWER else (mid + 1, high)
    return low


def _tost(diffs: list[float], margin: float, level: float) -> float:
    """Two one-sided t-tests of |mean difference| < margin: the larger of the two p-values."""
    from scipy import stats

    above = stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(diffs, margin, alternative="less").pvalue
    return float(max(above, below))


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
