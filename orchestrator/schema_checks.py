"""The schema's checks across keys of one sweep file (solver axes, model kind, evaluation steps, pair rows).

They take plain values, not the schema's models, so that the schema module holds the models alone and calls
these from its validator; each raises KeyedError naming the key the user must change."""

from __future__ import annotations

from collections.abc import Sequence

from fm_core.dataset_specs import DATASET_SPECS
from fm_core.names import ADAPTIVE_SOLVERS, COUPLING_NAMES, FIXED_STAGES, OBJECTIVE_NAMES, PATH_NAMES
from orchestrator.config_errors import KeyedError

IMAGE_DATASETS = tuple(name for name, spec in DATASET_SPECS.items() if spec.is_image)


def check_solver_axes(solvers: Sequence[str], tols: Sequence[float], nfes: Sequence[int]) -> None:
    """Tolerances go with adaptive solvers and NFE budgets with fixed-step ones, each needing the other."""
    fixed = [s for s in solvers if s in FIXED_STAGES]
    adaptive = [s for s in solvers if s in ADAPTIVE_SOLVERS]
    if tols and not adaptive:
        raise KeyedError("grid.tol", f"a tolerance only applies to adaptive solvers, not to {', '.join(fixed)}")
    if nfes and not fixed:
        raise KeyedError("grid.nfe", f"an NFE budget only applies to fixed-step solvers, not to {', '.join(adaptive)}")
    if adaptive and not tols:
        raise KeyedError("grid.tol", f"adaptive solver(s) {', '.join(adaptive)} need at least one tolerance")
    if fixed and not nfes:
        raise KeyedError("grid.nfe", f"fixed-step solver(s) {', '.join(fixed)} need at least one NFE budget")
    for n in nfes:
        too_small = [s for s in fixed if n < FIXED_STAGES[s]]
        if too_small:
            raise KeyedError("grid.nfe", f"budget {n} is below one step of {', '.join(too_small)}")


def check_model_kind(dataset: str, kind: str) -> None:
    if dataset in IMAGE_DATASETS and kind != "unet":
        raise KeyedError("model.kind", f"image dataset '{dataset}' needs model.kind: unet")
    if dataset not in IMAGE_DATASETS and kind != "mlp":
        raise KeyedError("model.kind", f"low-dimensional dataset '{dataset}' needs model.kind: mlp")


def check_eval_steps(train_steps: int, at_steps: Sequence[int]) -> None:
    """Extra checkpoints to evaluate lie strictly before the final step, which is always evaluated."""
    late = [s for s in at_steps if s > train_steps]
    if late:
        raise KeyedError("eval.at_steps", f"steps {late} are beyond train.steps = {train_steps}")
    if train_steps in at_steps:
        raise KeyedError(
            "eval.at_steps", f"repeats {train_steps}, train.steps, which is always evaluated; remove it from the list"
        )


def check_pairs(pairs: Sequence[Sequence[str]], couplings: Sequence[str]) -> None:
    """Each row names a known path, objective (and coupling), and no two rows train the same configuration
    (a row without a coupling trains with each of the grid's `couplings`)."""
    trained: dict[tuple[str, str, str], int] = {}
    for i, row in enumerate(pairs):
        if len(row) not in (2, 3):
            raise KeyedError(f"grid.pairs[{i}]", f"expected [path, objective] or [path, objective, coupling], got {list(row)}")
        for value, names, what in zip(row, (PATH_NAMES, OBJECTIVE_NAMES, COUPLING_NAMES), ("path", "objective", "coupling")):
            if value not in names:
                raise KeyedError(f"grid.pairs[{i}]", f"unknown {what} '{value}'; choose one of {', '.join(names)}")
        for coupling in row[2:] or couplings:
            first = trained.setdefault((row[0], row[1], coupling), i)
            if first != i:
                raise KeyedError(
                    f"grid.pairs[{i}]", f"trains {row[0]}+{row[1]} with coupling {coupling} again, as grid.pairs[{first}] does"
                )
