"""Content keys of trainings and evaluations, and the planning of a pass against what MLflow holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cell_store import cell_dir, step_dir
from orchestrator.cells import eval_digest, training_cell
from orchestrator.schema import SweepConfig
from orchestrator.plan import plan_sweep
from orchestrator.cell_runs import _evaluation_of
from orchestrator.pass_work import EVALUATE, TRAIN, CellRecord, plan_pass

BASE = {
    "name": "keys",
    "dataset": {"name": "moons"},
    "model": {"kind": "mlp", "hidden": 32, "depth": 2},
    "train": {"steps": 60, "batch_size": 64},
    "eval": {"samples": 100, "likelihood_points": 10},
    "grid": {"path": ["ot"], "seed": [0], "solver": ["euler"], "nfe": [4, 8]},
}


def _config(**changes: dict) -> SweepConfig:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for section, values in changes.items():
        data[section] = {**data[section], **values} if isinstance(data.get(section), dict) else values
    return SweepConfig.model_validate(data)


def _cell(config: SweepConfig) -> str:
    return training_cell(config, plan_sweep(config).trainings[0])


@pytest.mark.parametrize(
    "change",
    [{"train": {"steps": 61}}, {"train": {"lr": 2e-3}}, {"train": {"batch_size": 32}}, {"train": {"ema_decay": 0.99}},
     {"train": {"sigma_min": 1e-3}}, {"train": {"num_workers": 2}}, {"model": {"hidden": 33}}, {"grid": {"seed": [1]}},
     {"dataset": {"noise": 0.2}}, {"fault_injection": {"nan_at_step": 5, "trials": ["ot-fm-independent-s0"]}}],
)  # fmt: skip
def test_whatever_decides_the_weights_makes_another_training_cell(change):
    assert _cell(_config(**change)) != _cell(_config())


@pytest.mark.parametrize(
    "change",
    [{"train": {"log_every": 7}}, {"train": {"checkpoint_every": 20}}, {"train": {"cpus_per_worker": 2}},
     {"train": {"compile": True}}, {"train": {"max_failures": 3}}, {"name": "renamed"}, {"description": "words"},
     {"eval": {"samples": 50}}, {"grid": {"nfe": [2]}}, {"storage_path": "/elsewhere"},
     {"fault_injection": {"nan_at_step": 5, "trials": ["vp-fm-independent-s0"]}}],
)  # fmt: skip
def test_how_a_training_is_run_or_evaluated_keeps_its_cell(change):
    assert _cell(_config(**change)) == _cell(_config())


def test_a_data_root_from_the_environment_is_keyed_as_written():
    one = _config().model_copy(update={"written_as": {"dataset.root": "${DATA}/x"}})
    two = _config().model_copy(update={"written_as": {"dataset.root": "${DATA}/x"}})
    other = _config().model_copy(update={"written_as": {"dataset.root": "${DATA}/y"}})
    assert _cell(one) == _cell(two) != _cell(other)


def test_the_evaluation_settings_key_follows_what_changes_a_result():
    base = eval_digest(_config())
    for change in ({"samples": 50}, {"seed": 3}, {"reference_tol": 1e-4}, {"likelihood_points": 11}, {"precision": "bf16"},
                   {"per_sample_nfe": 8}):
        assert eval_digest(_config(eval=change)) != base, change
    for change in ({"at_steps": [30]}, {"batch_size": 16}):
        assert eval_digest(_config(eval=change)) == base, change


def _record(config: SweepConfig, status: str = "FINISHED", labels: tuple[str, ...] = ("euler_nfe4", "euler_nfe8")) -> CellRecord:
    digest = eval_digest(config)
    return CellRecord("run", status, "NonFiniteLossError" if status == "FAILED" else None,
                      frozenset((digest, 60, label) for label in labels))  # fmt: skip


def _store_weights(storage: Path, cell: str, step: int) -> None:
    folder = Path(step_dir(cell_dir(str(storage), cell), step))
    folder.mkdir(parents=True)
    (folder / "record.json").write_text("{}")


def test_a_pass_trains_new_cells_evaluates_stored_ones_and_reuses_finished_ones(tmp_path: Path):
    config = _config(grid={"seed": [0, 1, 2, 3, 4]})
    plan = plan_sweep(config)
    cells = [training_cell(config, key) for key in plan.trainings]
    records = {
        cells[0]: _record(config),  # every evaluation there: reused
        cells[1]: _record(config, labels=("euler_nfe4",)),  # one missing, its weights stored: evaluated only
        cells[2]: _record(config, labels=("euler_nfe4",)),  # one missing, no weights stored: trained again
        cells[3]: _record(config, status="FAILED"),
    }  # cells[4] is new
    _store_weights(tmp_path, cells[1], 60)
    work = plan_pass(config, plan, records, str(tmp_path), retry_failed=False)
    assert work.reused == [plan.trainings[0]]
    assert [(w.key.seed, w.mode) for w in work.work] == [(1, EVALUATE), (2, TRAIN), (4, TRAIN)]
    assert work.work[0].evaluate == ((60, ("euler_nfe8",)),)
    assert "no stored weights of step 60" in work.work[1].why and work.work[2].why == "new"
    assert [(k.seed, why) for k, why in work.failed] == [(3, "NonFiniteLossError")]
    assert "1 failed left as they are" in work.summary()

    retried = plan_pass(config, plan, records, str(tmp_path), retry_failed=True)
    assert [(w.key.seed, w.mode) for w in retried.work] == [(1, EVALUATE), (2, TRAIN), (3, TRAIN), (4, TRAIN)]


def test_other_evaluation_settings_make_every_evaluation_new(tmp_path: Path):
    config = _config()
    record = _record(config)
    changed = _config(eval={"samples": 50})
    plan = plan_sweep(changed)
    cell = training_cell(changed, plan.trainings[0])
    assert cell == training_cell(config, plan.trainings[0])
    _store_weights(tmp_path, cell, 60)
    work = plan_pass(changed, plan, {cell: record}, str(tmp_path), retry_failed=False)
    assert [(w.mode, w.evaluate) for w in work.work] == [(EVALUATE, ((60, ("euler_nfe4", "euler_nfe8")),))]


def test_an_evaluation_key_is_read_back_from_a_child_run_tag():
    assert _evaluation_of("ab12cd34/step300/rk4_nfe8/model/k2") == ("ab12cd34", 300, "rk4_nfe8")
    assert _evaluation_of("step300/dopri5_tol1e-05/ema") == (None, 300, "dopri5_tol1e-05")
    assert _evaluation_of("garbage") is None


def test_a_failed_evaluation_is_evaluated_again_by_resume_in_any_later_pass(tmp_path: Path):
    """A failed evaluation (a cut-off step snapshot, later restored) counted as evaluated: once a later pass
    existed it was never redone ("0 to train, 1 reused"), whatever the command."""
    config = _config()
    plan = plan_sweep(config)
    cell = training_cell(config, plan.trainings[0])
    digest = eval_digest(config)
    record = CellRecord("run", "FINISHED", None, frozenset((digest, 60, label) for label in ("euler_nfe4", "euler_nfe8")),
                        failed_evaluations=frozenset({(digest, 60, "euler_nfe8")}))  # fmt: skip
    _store_weights(tmp_path, cell, 60)
    assert plan_pass(config, plan, {cell: record}, str(tmp_path), retry_failed=False).reused == [plan.trainings[0]]
    retried = plan_pass(config, plan, {cell: record}, str(tmp_path), retry_failed=True)
    assert [(w.mode, w.evaluate) for w in retried.work] == [(EVALUATE, ((60, ("euler_nfe8",)),))]


def test_resume_without_a_pass_to_restore_retries_what_failed_instead_of_refusing(tmp_path: Path):
    """After `rm -rf results/<n>` (as a message advised), `--resume` said "no earlier run" while the plain
    command said "retry with --resume": the failed cell could not be repaired."""
    from orchestrator.planning import check_resume_state, folders_of

    config = _config()
    assert check_resume_state(config, folders_of(config, tmp_path), resume=True) is None


def test_a_couplings_options_are_in_its_own_cells_only_and_prefetching_in_none():
    def cell(coupling: str, **train) -> str:
        return _cell(_config(train=train, grid={"coupling": [coupling]}))

    reg = {"coupling_options": {"sinkhorn": {"reg": 0.5}}}
    assert cell("independent", **reg) == cell("independent")  # another coupling's options: the same training
    assert cell("minibatch_ot", **reg) == cell("minibatch_ot")
    assert cell("sinkhorn", **reg) != cell("sinkhorn")
    assert cell("minibatch_ot", coupling_prefetch=False) == cell("minibatch_ot")  # the same pairs either way
