"""The papers' claims as a scorecard, on constructed runs tables with known outcomes: holds, fails, not settled and
not measured, each with the numbers it was judged by."""

from __future__ import annotations

import pytest

from fm_core.solvers import SolverSetting
from orchestrator.rows import EvalRow
from orchestrator.scorecard import COUPLING_CLAIMS, PAPER_CLAIMS, judge, to_markdown
from orchestrator.tables import rows_frame

DOPRI5 = SolverSetting.adaptive("dopri5", 1e-5)
EULER2, EULER4 = SolverSetting("euler", nfe_budget=2), SolverSetting("euler", nfe_budget=4)
TIE_NOISE = [0.02, -0.03, 0.01, -0.01]  # OT's sample metric minus VP's: no consistent side


def _row(path: str, objective: str, seed: int, step: int = 100, coupling: str = "independent", setting: SolverSetting = DOPRI5,
         **values) -> EvalRow:
    return EvalRow.of(setting, step, trial_id=f"{path}-{objective}-{coupling}-s{seed}", path=path, objective=objective,
                      coupling=coupling, seed=seed, dataset="moons", model="mlp", nll_unit="nats", **values)  # fmt: skip


def _outcomes(rows: list[EvalRow]) -> dict[str, str]:
    return {j.claim.text: j.outcome for j in judge(rows_frame(rows))}


def test_holds_fails_not_settled_and_not_measured_on_known_rows():
    rows = []
    for s in range(4):
        rows.append(_row("ot", "fm", s, nfe=20 + s, nll=3.0 + 0.01 * s, sample_metric=0.30 + TIE_NOISE[s]))
        rows.append(_row("vp", "fm", s, nfe=30 + s + s % 2, nll=2.5 + 0.01 * s + 0.002 * (s % 2), sample_metric=0.30))
    outcomes = _outcomes(rows)
    claims = [c.text for c in PAPER_CLAIMS]
    assert outcomes[claims[0]] == "holds"  # OT's NFE lower, seed by seed
    assert outcomes[claims[1]] == "fails"  # OT's NLL higher here, seed by seed
    assert outcomes[claims[2]] == "not settled"  # the sample metric's differences straddle 0
    assert outcomes[claims[3]] == "not measured"  # no midpoint cells
    assert outcomes[claims[4]] == "not measured"  # no SM-VP
    assert outcomes[claims[5]] == "not measured"  # one training step only
    assert outcomes[claims[6]] == "not measured"  # no dequantization K
    table = to_markdown(judge(rows_frame(rows)))
    assert "| FM-OT needs fewer dopri5 NFE than FM w/ Diffusion (VP) at tol 1e-5 | holds | FM-OT vs FM-VP, nfe, dopri5 at tol 1e-05 | 4 | -10.5 [" in table


def test_over_training_and_over_k_claims_pair_steps_and_draws_by_seed():
    rows = []
    for s in range(3):
        for step, sm_nfe in ((100, 40 + s), (200, 60 + 2 * s)):
            rows.append(_row("ot", "fm", s, step=step, nfe=30 + s % 2 + step // 100))
            rows.append(_row("vp", "sm", s, step=step, nfe=sm_nfe))
        for k, nll in ((1, 3.0 + 0.01 * s), (4, 2.9 + 0.012 * s)):
            rows.append(_row("ot", "fm", s, step=300, nfe=31, nll=nll, dequant_draws=k).replace(dequant_draws=k))
    outcomes = _outcomes(rows)
    claims = [c.text for c in PAPER_CLAIMS]
    assert outcomes[claims[5]] == "holds"  # SM's NFE rises by ~20, OT's by ~1-2
    assert outcomes[claims[6]] == "holds"  # K = 4 lower than K = 1 for every seed


def test_one_seed_is_not_enough_for_a_verdict():
    rows = [_row("ot", "fm", 0, nfe=20, nll=3.0), _row("vp", "fm", 0, nfe=30, nll=2.5)]
    judged = judge(rows_frame(rows))
    assert judged[0].outcome == "not measured" and "no verdict (1 seed)" in judged[0].detail


def _coupled_rows(coupling: str, sign: int, seeds: int = 3) -> list[EvalRow]:
    """FM-OT with independent pairs and with `coupling`, the coupling's NFE, straightness and 4-step Euler sample
    metric lower than independent pairs' in every seed (sign 1) or higher (sign -1), by amounts that vary by seed
    (and its 2-step Euler sample metric the other way, which the claim at 4 NFE must not read)."""
    rows = []
    for s in range(seeds):
        for c, shift in (("independent", 0), (coupling, -sign)):
            rows.append(_row("ot", "fm", s, coupling=c, nfe=40 + 2 * s + shift * (6 + 2 * (s % 2)), straightness=1.0 + shift * (0.5 + 0.1 * s)))
            rows.append(_row("ot", "fm", s, coupling=c, setting=EULER2, sample_metric=0.3 - shift * 0.1))  # not the claim's budget
            rows.append(_row("ot", "fm", s, coupling=c, setting=EULER4, sample_metric=0.4 + shift * (0.1 + 0.02 * s)))
    return rows


@pytest.mark.parametrize(("coupling", "claims"), [("minibatch_ot", COUPLING_CLAIMS[:3]), ("sinkhorn", COUPLING_CLAIMS[3:])])
def test_each_coupling_claim_holds_fails_or_is_not_measured_on_known_rows(coupling: str, claims: tuple):
    texts = [c.text for c in claims]
    assert all(coupling.split("_")[0] in t.lower() for t in texts)  # the claims this coupling's rows speak to
    for sign, outcome in ((1, "holds"), (-1, "fails")):
        outcomes = _outcomes(_coupled_rows(coupling, sign))
        assert [outcomes[t] for t in texts] == [outcome] * 3, (sign, outcomes)
    one_seed = _outcomes(_coupled_rows(coupling, 1, seeds=1))
    without_coupling = _outcomes([r for r in _coupled_rows(coupling, 1) if r.coupling == "independent"])
    assert [one_seed[t] for t in texts] == [without_coupling[t] for t in texts] == ["not measured"] * 3
    table = to_markdown(judge(rows_frame(_coupled_rows(coupling, 1))))
    label = {"minibatch_ot": "FM-OT +mbOT", "sinkhorn": "FM-OT +Sinkhorn"}[coupling]
    assert f"| holds | {label} vs FM-OT, straightness, dopri5 at tol 1e-05 | 3 |" in table
    assert f"| holds | {label} vs FM-OT, sample_metric, euler at 4 NFE | 3 |" in table
    assert all(f"| {c.source} |" in table for c in claims) and "Pooladian et al. 2023" in claims[0].source
