"""Cell statistics and paired comparisons: the intervals and tests match scipy on data with a known answer,
and constructed seeds give the verdicts they should (A lower, B lower, no difference detected with what the
seeds could detect, equivalent within a margin, lower in every seed by a constant, no verdict with one seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fm_core.solvers import SolverSetting
from orchestrator.compare import CompareError, compare_methods
from orchestrator.rows import EvalRow
from orchestrator.stats import A_LOWER, EQUIVALENT, NOT_DETECTED, POWER, mean_interval, paired_comparison, power
from orchestrator.tables import display_table, rows_frame, summarize, to_markdown


def test_the_interval_is_scipys_student_t_interval():
    values = [3.1, 2.7, 3.5, 2.9, 3.3]
    got = mean_interval(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (got.n, got.mean, got.std) == (5, pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    one = mean_interval([2.0])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.low) and math.isnan(one.std)


def test_the_paired_test_is_scipys_and_its_verdicts_follow_the_interval():
    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(rng.normal(50, 5, 8))}
    lower = {s: v - 10 + float(rng.normal(0, 0.5)) for s, v in base.items()}  # clearly lower, seed by seed
    noisy = {s: v + float(rng.normal(0, 3)) for s, v in base.items()}  # no real difference
    a_lower = paired_comparison(lower, base)
    assert a_lower.verdict == "A lower" and a_lower.difference.high < 0
    assert a_lower.p_value == pytest.approx(scipy_stats.ttest_rel(list(lower.values()), list(base.values())).pvalue)
    diffs = np.array(list(lower.values())) - np.array(list(base.values()))
    assert a_lower.effect_size == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    assert paired_comparison(base, lower).verdict == "B lower"
    unsettled = paired_comparison(noisy, base)
    assert unsettled.outcome == NOT_DETECTED and unsettled.difference.low <= 0 <= unsettled.difference.high
    assert unsettled.verdict.startswith(f"no difference detected (8 seeds detect |A - B| above {unsettled.detectable:.3g}; ~")
    assert paired_comparison({0: 1.0}, {0: 2.0}).verdict == "no verdict (1 seed)"
    # Only matched seeds pair: seed 9 of A has no partner.
    assert paired_comparison({**lower, 9: 0.0}, base).seeds == tuple(range(8))


def test_identical_differences_are_said_as_they_are_without_infinite_effect_sizes():
    constant = paired_comparison({0: 100.0, 1: 130.0, 2: 90.0}, {0: 112.0, 1: 142.0, 2: 102.0})
    assert constant.verdict == "A lower in every seed, by 12" and constant.outcome == A_LOWER and constant.constant
    assert math.isnan(constant.effect_size) and math.isnan(constant.p_value)  # not -inf and 0
    assert (constant.difference.low, constant.difference.high) == (-12, -12)
    assert paired_comparison({0: 3.0, 1: 4.0}, {0: 1.0, 1: 2.0}).verdict == "B lower in every seed, by 2"
    assert paired_comparison({0: 3.0, 1: 4.0}, {0: 3.0, 1: 4.0}).verdict == "the same in every seed"
    # A constant ratio of a positive value, judged on the log scale: lower in every seed by a factor.
    assert paired_comparison({0: 10.0, 1: 20.0}, {0: 20.0, 1: 40.0}, positive=True).verdict == "A lower in every seed, by a factor 2"
    assert paired_comparison({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5}, margin=1.0).verdict == "A lower in every seed, by 0.5, within ±1"


def test_no_difference_detected_says_what_the_seeds_could_detect_with_the_stated_power():
    a, b = {0: 10.0, 1: 12.5, 2: 9.0, 3: 11.0}, {0: 10.5, 1: 11.0, 2: 10.0, 3: 10.8}
    got = paired_comparison(a, b)
    diffs = np.array([a[s] - b[s] for s in a])
    assert got.outcome == NOT_DETECTED and got.p_value == pytest.approx(scipy_stats.ttest_rel(list(a.values()), list(b.values())).pvalue)
    # The detectable difference: a true mean difference that large, at the observed spread, is detected by a paired
    # t-test of 4 seeds in POWER of repeated experiments (scipy's test on simulated seeds).
    rng = np.random.default_rng(1)
    simulated = rng.normal(got.detectable, diffs.std(ddof=1), size=(20000, 4))
    detected = (scipy_stats.ttest_1samp(simulated, 0.0, axis=1).pvalue < 0.05).mean()
    assert detected == pytest.approx(POWER, abs=0.015)
    # The seeds needed for the observed difference: the fewest whose test reaches POWER.
    effect = abs(diffs.mean()) / diffs.std(ddof=1)
    assert power(effect, got.seeds_needed - 1) < POWER <= power(effect, got.seeds_needed)
    assert f"; ~{got.seeds_needed} seeds would detect this one)" in got.verdict


def test_equivalence_within_a_margin_is_scipys_two_one_sided_tests():
    a, b = {0: 1.00, 1: 2.00, 2: 3.00, 3: 4.02}, {0: 1.01, 1: 1.98, 2: 3.00, 3: 4.00}
    diffs = [a[s] - b[s] for s in a]
    got = paired_comparison(a, b, margin=0.1)
    above = scipy_stats.ttest_1samp(diffs, -0.1, alternative="greater").pvalue
    below = scipy_stats.ttest_1samp(diffs, 0.1, alternative="less").pvalue
    assert got.equivalence_p == pytest.approx(max(above, below)) and got.equivalence_p < 0.05
    assert got.outcome == EQUIVALENT and got.verdict == "equivalent within ±0.1"
    # TOST at 5 % is the 90 % interval inside the margin: a margin just beyond that interval passes, one just inside fails.
    low, high = scipy_stats.t.interval(0.90, 3, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
    edge = max(abs(low), abs(high))
    assert paired_comparison(a, b, margin=edge * 1.01).outcome == EQUIVALENT
    assert paired_comparison(a, b, margin=edge * 0.99).outcome == NOT_DETECTED
    # A difference that is detected and small: both are said.
    lower = paired_comparison({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.02, 1: 2.03, 2: 3.02}, margin=0.1)
    assert lower.verdict == "A lower, within ±0.1" and lower.outcome == A_LOWER


def test_a_positive_values_interval_stays_positive_on_the_log_scale():
    # Two seeds far apart: the linear t-interval of each mean, and of their difference, reaches far below 0.
    a, b = {0: 40.0, 1: 260.0}, {0: 52.0, 1: 270.0}
    linear = mean_interval(list(a.values()))
    assert linear.low < 0
    cell = mean_interval(list(a.values()), positive=True)
    logs = np.log(list(a.values()))
    low, high = scipy_stats.t.interval(0.95, 1, loc=logs.mean(), scale=scipy_stats.sem(logs))
    assert (cell.low, cell.high) == (pytest.approx(math.exp(low)), pytest.approx(math.exp(high))) and cell.low > 0
    assert cell.mean == 150.0  # the mean and std shown stay those of the values
    got = paired_comparison(a, b, positive=True)
    log_diffs = np.log(list(a.values())) - np.log(list(b.values()))
    low, high = scipy_stats.t.interval(0.95, 1, loc=log_diffs.mean(), scale=scipy_stats.sem(log_diffs))
    assert (got.ratio.low, got.ratio.high) == (pytest.approx(math.exp(low)), pytest.approx(math.exp(high)))
    assert 0 < got.ratio.low < 1 < got.ratio.high and got.outcome == NOT_DETECTED
    assert got.p_value == pytest.approx(scipy_stats.ttest_rel(np.log(list(a.values())), np.log(list(b.values()))).pvalue)
    assert f" seeds detect A / B above {got.detectable:.3g} or below {1 / got.detectable:.3g}" in got.verdict  # a ratio


def _rows(values: dict[tuple[str, int], float]) -> list[EvalRow]:
    setting = SolverSetting.adaptive("dopri5", 1e-5)
    return [
        EvalRow.of(setting, 100, trial_id=f"{path}-fm-independent-s{seed}", path=path, objective="fm", coupling="independent",
                   seed=seed, dataset="moons", model="mlp", nfe=int(v), nll=v / 10, nll_unit="nats")  # fmt: skip
        for (path, seed), v in values.items()
    ]


def test_compare_pairs_methods_by_seed_in_each_cell_and_names_what_is_missing():
    runs = rows_frame(_rows({("ot", s): 20 + s for s in range(4)} | {("vp", s): 30 + s + (s % 2) for s in range(4)}))
    (cell,) = compare_methods(runs, "FM-OT", "vp-fm", "nfe")
    assert cell.setting == "dopri5_tol1e-05" and cell.step == 100 and cell.comparison.verdict == "A lower"
    assert cell.comparison.seeds == (0, 1, 2, 3) and cell.comparison.mean_a == 21.5
    with pytest.raises(CompareError, match="no method 'FM-VE'.*FM-OT, FM-VP"):
        compare_methods(runs, "FM-OT", "FM-VE", "nfe")
    with pytest.raises(CompareError, match="--metric: 'speed'"):
        compare_methods(runs, "FM-OT", "FM-VP", "speed")


def test_training_option_variants_are_methods_of_their_own():
    uniform = [r.replace(train_axes="time_sampling=uniform") for r in _rows({("ot", s): 20 + s for s in range(3)})]
    logit = [r.replace(train_axes="time_sampling=logit_normal", nfe=r.nfe + 5) for r in _rows({("ot", s): 20 + s for s in range(3)})]
    runs = rows_frame(uniform + logit)
    (cell,) = compare_methods(runs, "FM-OT [time_sampling=uniform]", "FM-OT [time_sampling=logit_normal]", "nfe")
    assert cell.comparison.verdict == "A lower in every seed, by 5" and cell.comparison.mean_a == 21 and cell.comparison.mean_b == 26
    with pytest.raises(CompareError, match=r"no method 'FM-OT'.*FM-OT \[time_sampling=logit_normal\], FM-OT \[time_sampling=uniform\]"):
        compare_methods(runs, "FM-OT", "FM-OT [time_sampling=uniform]", "nfe")  # the short name is ambiguous here
    assert summarize(runs)["train_axes"].tolist() == ["time_sampling=logit_normal", "time_sampling=uniform"]


def test_the_table_carries_n_and_the_interval_per_cell():
    runs = rows_frame(_rows({("ot", s): v for s, v in enumerate([20.0, 22.0, 24.0])}))
    (row,) = summarize(runs).to_dict("records")
    low, high = scipy_stats.t.interval(0.95, 2, loc=2.2, scale=scipy_stats.sem([2.0, 2.2, 2.4]))  # the NLL: linear
    assert row["nll_n"] == 3 and row["nll_mean"] == pytest.approx(2.2)
    assert (row["nll_ci_low"], row["nll_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert f"2.2 ± 0.2 [{low:.4g}, {high:.4g}]" in to_markdown(summarize(runs))
    logs = np.log([20.0, 22.0, 24.0])  # NFE is positive: the interval of its log values, exponentiated
    low, high = np.exp(scipy_stats.t.interval(0.95, 2, loc=logs.mean(), scale=scipy_stats.sem(logs)))
    assert row["nfe_n"] == 3 and row["nfe_mean"] == 22.0
    assert (row["nfe_ci_low"], row["nfe_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert f"22 ± 2 [{low:.4g}, {high:.4g}]" in to_markdown(summarize(runs))


def test_compare_takes_a_value_by_its_child_metric_name_too():
    rows = [EvalRow.of(SolverSetting("euler", nfe_budget=8), 10, trial_id=f"{p}-fm-independent-s{s}", path=p, objective="fm",
                       coupling="independent", seed=s, nfe=8, nll=1.0 + s + (p == "vp"), nll_unit="bits/dim",
                       sample_metric=0.1, sample_metric_name="sliced_w2")
            for p in ("ot", "vp") for s in (0, 1)]  # fmt: skip
    runs = rows_frame(rows)
    (by_field,) = compare_methods(runs, "FM-OT", "FM-VP", "nll")
    (by_metric,) = compare_methods(runs, "FM-OT", "FM-VP", "bits_per_dim")
    assert (by_field.comparison.mean_a, by_field.comparison.mean_b) == (by_metric.comparison.mean_a, by_metric.comparison.mean_b)
    assert by_field.comparison.difference.mean == pytest.approx(-1.0)
    (sample,) = compare_methods(runs, "FM-OT", "FM-VP", "sliced_w2")
    assert sample.comparison.mean_a == pytest.approx(0.1)
    with pytest.raises(CompareError, match="is not one of nfe, nll, sample_metric, fid") as refused:
        compare_methods(runs, "FM-OT", "FM-VP", "classifier_fd")  # no row measured it
    assert "classifier_fd" in str(refused.value) and "bits_per_dim, sliced_w2" in str(refused.value)




def _two_settings(nfe_a: list[int], nfe_b: list[int], nll_a: list[float], nll_b: list[float]) -> list[EvalRow]:
    """FM-OT (A) and FM-VP (B), each seed evaluated under euler at 8 NFE and dopri5: the NLL is the checkpoint's, the
    same in both rows of a seed (the shared likelihood protocol); the NFE is each setting's own."""
    rows = []
    for path, nfes, nlls in (("ot", nfe_a, nll_a), ("vp", nfe_b, nll_b)):
        for seed, (nfe, nll) in enumerate(zip(nfes, nlls, strict=True)):
            common = {"trial_id": f"{path}-fm-independent-s{seed}", "path": path, "objective": "fm", "coupling": "independent",
                      "seed": seed, "nll": nll, "nll_unit": "nats", "nll_protocol": "shared", "nll_solver": "dopri5_tol1e-05"}  # fmt: skip
            rows.append(EvalRow.of(SolverSetting("euler", nfe_budget=8), 100, nfe=8, **common))
            rows.append(EvalRow.of(SolverSetting.adaptive("dopri5", 1e-5), 100, nfe=nfe, **common))
    return rows


def test_compare_gives_each_verdict_on_constructed_rows():
    def verdicts(nfe_a, nfe_b, nll_a, nll_b, metric, margin=None):
        runs = rows_frame(_two_settings(nfe_a, nfe_b, nll_a, nll_b))
        return {c.setting: c.comparison for c in compare_methods(runs, "FM-OT", "FM-VP", metric, margin=margin)}

    same = [1.0, 2.0, 3.0, 4.0]
    settled = verdicts([80, 95, 70, 88], [120, 150, 101, 140], same, same, "nfe")
    assert settled["dopri5_tol1e-05"].verdict == "A lower" and settled["dopri5_tol1e-05"].ratio.high < 1
    assert settled["euler_nfe8"].verdict == "the same in every seed"  # both spend the budget
    assert verdicts([120, 150, 101, 140], [80, 95, 70, 88], same, same, "nfe")["dopri5_tol1e-05"].verdict == "B lower"
    unsettled = verdicts([80, 160, 70, 130], [120, 100, 101, 90], same, same, "nfe")["dopri5_tol1e-05"]
    assert unsettled.outcome == NOT_DETECTED and "4 seeds detect A / B above" in unsettled.verdict
    assert 0 < unsettled.ratio.low < 1 < unsettled.ratio.high  # NFE's interval stays positive
    constant = verdicts([80, 95, 70, 88], [92, 107, 82, 100], same, same, "nfe")["dopri5_tol1e-05"]
    assert constant.verdict == "A lower in every seed, by 12" and math.isnan(constant.effect_size)
    equivalent = verdicts([80] * 4, [80] * 4, [1.00, 2.00, 3.00, 4.02], [1.01, 1.98, 3.00, 4.00], "nll", margin=0.1)
    # The NLL is the checkpoint's: one comparison for both solver settings, not one per setting.
    assert list(equivalent) == ["every setting (one value per checkpoint)"]
    assert equivalent["every setting (one value per checkpoint)"].verdict == "equivalent within ±0.1"
    assert equivalent["every setting (one value per checkpoint)"].seeds == (0, 1, 2, 3)


def test_every_value_column_the_tables_show_is_a_metric_compare_accepts():
    rows = [r.replace(sample_metric=0.1 + 0.01 * r.seed, sample_metric_name="sliced_w2", ode_error=0.01 * (1 + r.seed))
            for r in _two_settings([80, 95], [90, 99], [1.0, 2.0], [1.5, 2.5])]  # fmt: skip
    runs = rows_frame(rows)
    headers = [h for h in display_table(summarize(runs)).columns if h not in ("method", "solver", "step", "K", "seeds", "failed")]
    assert headers == ["NLL (nats, dopri5_tol1e-05)", "sliced_w2", "NFE", "ODE error"]
    for header in headers + ["NLL", "nll_nats", "ode_error", "nfe", "ode error"]:
        assert compare_methods(runs, "FM-OT", "FM-VP", header), header
