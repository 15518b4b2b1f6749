"""The papers' claims as data, judged on a sweep's own rows with paired statistics (orchestrator.stats).

Each claim names two sets of values paired by seed (two methods in one cell, one method at two training steps
or two dequantization K), the verdict its paper reports and that paper (Lipman et al. 2023 for the paths and
objectives; the minibatch-OT papers for the couplings). On a sweep it "holds" (the paired interval
excludes 0 on the paper's side, or every seed differs on that side by the same amount), "fails" (on the other
side), is "not settled" (the interval covers 0: no difference detected, which is not equivalence), or is "not
measured" (the sweep lacks the cells, or has fewer than two matched seeds to judge them by). The differences
are judged as measured (A - B, not on the log scale that `fmx compare` uses for positive values), so that the
scorecard's intervals read in the claim's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from orchestrator.compare import METHOD_COLUMNS, CompareError, resolve_method
from orchestrator.tables import RUN_COLUMNS
from orchestrator.rows import parquet_dtypes
from orchestrator.stats import NO_VERDICT, NOT_DETECTED, Comparison, paired_comparison

Values = dict[int, float]


@dataclass(frozen=True)
class Claim:
    """`pick(runs)` gives (A's values, B's values, what was compared) or None where the sweep cannot say."""

    text: str
    pick: Callable[[pd.DataFrame], tuple[Values, Values, str] | None]
    source: str  # the paper (and where in it) that reports the finding
    expect: str = "A lower"


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    outcome: str  # holds | fails | not settled | not measured
    detail: str
    comparison: Comparison | None


def _method_rows(runs: pd.DataFrame, name: str) -> pd.DataFrame | None:
    try:
        method = resolve_method(runs, name)
    except CompareError:
        return None
    ok = runs[runs["status"] == "ok"]
    return ok[(ok[METHOD_COLUMNS] == pd.Series(method, index=METHOD_COLUMNS)).all(axis=1)]


def _by_seed(rows: pd.DataFrame, metric: str) -> Values:
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[metric], strict=True) if pd.notna(v)}


def _final(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["train_step"] == rows["train_step"].max()]


def _solver_rows(runs: pd.DataFrame, name: str, solver: str) -> pd.DataFrame | None:
    """A method's rows under `solver` with one dequantization (K = 1, or none for vectors); None if absent."""
    rows = _method_rows(runs, name)
    if rows is None:
        return None
    rows = rows[(rows["solver"] == solver) & (rows["dequant_draws"].isna() | (rows["dequant_draws"] == 1))]
    return None if rows.empty else rows


def between_methods(a: str, b: str, metric: str, solver: str, tol: float | None = None, nfe: int | None = None) -> Callable:
    """A vs B on `metric` at the last training step, under `solver` (at `tol`, or at an NFE budget `nfe` of a
    fixed-step solver, if given; K = 1 or none)."""

    def pick(runs: pd.DataFrame) -> tuple[Values, Values, str] | None:
        found = []
        for name in (a, b):
            rows = _solver_rows(runs, name, solver)
            if rows is not None and tol is not None:
                rows = rows[(rows["tol"] - tol).abs() <= 1e-12 * max(1.0, tol)]
            if rows is not None and nfe is not None:
                rows = rows[rows["nfe_budget"] == nfe]
            if rows is None or rows.empty:
                return None
            found.append(_by_seed(_final(rows).drop_duplicates("seed"), metric))
        where = solver + (f" at tol {tol:g}" if tol is not None else "") + (f" at {nfe} NFE" if nfe is not None else "")
        return found[0], found[1], f"{a} vs {b}, {metric}, {where}"

    return pick


def rise_over_training(a: str, b: str, metric: str, solver: str) -> Callable:
    """How much `metric` grows from the first to the last evaluated step, A's rise vs B's."""

    def pick(runs: pd.DataFrame) -> tuple[Values, Values, str] | None:
        rises = []
        for name in (a, b):
            rows = _solver_rows(runs, name, solver)
            steps = [] if rows is None else sorted(rows["train_step"].dropna().unique())
            if len(steps) < 2:
                return None
            first, last = (_by_seed(rows[rows["train_step"] == s].drop_duplicates("seed"), metric) for s in (steps[0], steps[-1]))
            rises.append({s: last[s] - first[s] for s in first if s in last})
        return rises[0], rises[1], f"rise of {metric} from the first to the last step ({solver}): {a} vs {b}"

    return pick


def over_draws(method: str, metric: str = "nll") -> Callable:
    """One method's `metric` at its largest dequantization K against K = 1 (A = largest K)."""

    def pick(runs: pd.DataFrame) -> tuple[Values, Values, str] | None:
        rows = _method_rows(runs, method)
        if rows is None:
            return None
        rows = _final(rows)
        draws = sorted(int(k) for k in rows["dequant_draws"].dropna().unique())
        if len(draws) < 2 or draws[0] != 1:
            return None
        at = {k: _by_seed(rows[rows["dequant_draws"] == k].drop_duplicates("seed"), metric) for k in (draws[-1], 1)}
        return at[draws[-1]], at[1], f"{method}, {metric} at K = {draws[-1]} vs K = 1"

    return pick


LIPMAN = "Lipman et al. 2023"
#: The paper's findings (Lipman et al., 2023, Sec. 6: Tables 1 and 4, Figs. 7 and 10) that a sweep can speak to.
PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim("FM-OT needs fewer dopri5 NFE than FM w/ Diffusion (VP) at tol 1e-5",
          between_methods("FM-OT", "FM-VP", "nfe", "dopri5", 1e-5), f"{LIPMAN}, Table 1"),
    Claim("FM-OT's likelihood (NLL / bits per dim) is lower than FM-VP's", between_methods("FM-OT", "FM-VP", "nll", "dopri5"),
          f"{LIPMAN}, Table 1"),
    Claim("FM-OT's samples are better (lower sample metric) than FM-VP's at dopri5",
          between_methods("FM-OT", "FM-VP", "sample_metric", "dopri5"), f"{LIPMAN}, Table 1"),
    Claim("FM-OT's ODE error is lower than FM-VP's at a fixed midpoint budget",
          between_methods("FM-OT", "FM-VP", "ode_error", "midpoint"), f"{LIPMAN}, Fig. 7"),
    Claim("FM-OT needs fewer dopri5 NFE than score matching (SM-VP) at tol 1e-5",
          between_methods("FM-OT", "SM-VP", "nfe", "dopri5", 1e-5), f"{LIPMAN}, Table 1"),
    Claim("score matching's dopri5 NFE rises over training more than FM-OT's",
          rise_over_training("FM-OT", "SM-VP", "nfe", "dopri5"), f"{LIPMAN}, Fig. 10"),
    Claim("bits per dim falls as the dequantization K grows (FM-OT)", over_draws("FM-OT"), f"{LIPMAN}, Table 4"),
)  # fmt: skip

TONG = "Tong et al. 2023 (OT-CFM)"
POOLADIAN = "Pooladian et al. 2023 (Multisample FM)"


def _coupling_claims(label: str, name: str, source: str) -> tuple[Claim, ...]:
    """What the minibatch-OT papers report of a coupling against the paper's independent pairs, FM on the OT path:
    fewer adaptive steps, straighter paths (Liu et al.'s straightness at dopri5), better few-step samples."""
    a = f"FM-OT {label}"
    return (
        Claim(f"{name} needs fewer dopri5 NFE than independent pairs (FM-OT) at tol 1e-5",
              between_methods(a, "FM-OT", "nfe", "dopri5", 1e-5), source),
        Claim(f"{name} paths are straighter (lower straightness at dopri5) than independent pairs'",
              between_methods(a, "FM-OT", "straightness", "dopri5", 1e-5), source),
        Claim(f"{name} samples are better (lower sample metric) than independent pairs' with euler at 4 NFE",
              between_methods(a, "FM-OT", "sample_metric", "euler", nfe=4), source),
    )  # fmt: skip


#: The couplings' papers (beyond Lipman et al.): the exact assignment and an entropic (Sinkhorn) plan per batch.
COUPLING_CLAIMS: tuple[Claim, ...] = (
    *_coupling_claims("+mbOT", "minibatch OT", f"{TONG}; {POOLADIAN}, BatchOT"),
    *_coupling_claims("+Sinkhorn", "Sinkhorn OT", f"{POOLADIAN}, BatchEOT"),
)

#: Every claim a scorecard judges, in the order it prints them.
CLAIMS: tuple[Claim, ...] = PAPER_CLAIMS + COUPLING_CLAIMS


def judge(runs: pd.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> list[Judgement]:
    out = []
    for claim in claims:
        picked = claim.pick(runs)
        if picked is None:
            out.append(Judgement(claim, "not measured", "the sweep has no such cells", None))
            continue
        a, b, detail = picked
        comparison = paired_comparison(a, b)
        if comparison.outcome == NO_VERDICT:
            out.append(Judgement(claim, "not measured", f"{detail}: {comparison.verdict}", comparison))
        elif comparison.outcome == NOT_DETECTED:
            out.append(Judgement(claim, "not settled", detail, comparison))
        else:
            out.append(Judgement(claim, "holds" if comparison.outcome == claim.expect else "fails", detail, comparison))
    return out


def to_markdown(judgements: list[Judgement]) -> str:
    """The scorecard as a Markdown table: claim, outcome, seeds, A - B with its 95 % interval, p, the claim's source."""
    lines = ["| claim | outcome | compared | seeds | A - B [95 % CI] | p | source |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for j in judgements:
        c = j.comparison
        if c is None or not c.seeds:
            lines.append(f"| {j.claim.text} | {j.outcome} | {j.detail} | 0 | - | - | {j.claim.source} |")
            continue
        d = c.difference
        interval = f"{d.mean:.4g}" + ("" if d.low != d.low else f" [{d.low:.4g}, {d.high:.4g}]")
        p = "-" if c.p_value != c.p_value else f"{c.p_value:.3g}"
        lines.append(f"| {j.claim.text} | {j.outcome} | {j.detail} | {len(c.seeds)} | {interval} | {p} | {j.claim.source} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """`python -m orchestrator.scorecard RUNS.parquet ...`: the scorecard of stored rows (docs/results); rows
    written before a column existed (train_axes, the likelihood's protocol) read it as not given."""
    for path in argv:
        runs = pd.read_parquet(path).reindex(columns=RUN_COLUMNS).astype(parquet_dtypes())
        print(f"### {path}\n\n{to_markdown(judge(runs))}\n")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
