"""The `fmx` command line: validate, sweep, train, eval, tables, compare, report, ui.

It parses arguments, calls fmx's Python API (orchestrator.api and the stage modules) and prints; what a
command does and how it ends (exit codes: 2 bad input, 1 a store or disk that gave out, 130 interrupted) is
decided there. Bad input of any kind ends with one message and exit code 2, before Ray or MLflow are
started and before anything is written.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

from pydantic import TypeAdapter, ValidationError
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fm_core.names import ADAPTIVE_SOLVERS
from fm_core.solvers import DEFAULT_TOL, SolverSetting
from orchestrator import api
from orchestrator import ui as fmx_ui
from orchestrator.config_errors import ConfigError
from orchestrator.schema import SolverName, SweepConfig
from orchestrator.value_types import Nfe, Tolerance
from orchestrator.errors import CheckpointError, CompareError, FewerRowsError, NoGpuError, SweepStopped
from orchestrator.outcome import SweepOutcome
from orchestrator.records import STATE_FILE
from orchestrator.pass_work import EVALUATE
from orchestrator.plan import plan_sweep
from orchestrator.rows import VALUE_FIELDS
from orchestrator.comparison_text import describe
from orchestrator.stats import POWER
from orchestrator.planning import preview
from orchestrator.store_check import check_existing_store
from orchestrator.validation import load_sweep
from orchestrator.tracking import REPORT_EXPERIMENT, TrackingError, check_tracking_uri, resolve_tracking_uri
from orchestrator.out_folders import FolderUnusable, check_folder

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Flow Matching ablations at any scale.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

SweepFile = Annotated[Path, typer.Argument(help="sweep YAML file", show_default=False)]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
]


def _fail(message: str, code: int = 2, label: str = "error") -> NoReturn:
    console.print(f"[red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)  # text, never markup
    raise typer.Exit(code)


def _output_folder(path: Path, option: str) -> Path:
    """`path` where it can be a folder fmx writes into (nothing is left created), else one line and exit 2."""
    try:
        check_folder(path, option)
    except FolderUnusable as err:
        _fail(str(err))
    return path


def _load(file: Path) -> SweepConfig:
    try:
        return load_sweep(file)
    except ConfigError as err:
        _fail(str(err))


def _tracking(uri: str | None, existing: bool = False) -> str:
    """The resolved tracking URI, checked; `existing`: a read-only command, which must find a local store
    there (MLflow would create an empty one) and one that is an MLflow store."""
    resolved = resolve_tracking_uri(uri)
    try:
        check_tracking_uri(resolved)
    except TrackingError as err:
        _fail(f"--tracking-uri: {err}")
    problem = check_existing_store(resolved) if existing else None
    if problem:
        _fail(f"--tracking-uri: {problem}")
    return resolved


@app.command()
def version() -> None:
    """Print fmx's version."""
    from importlib.metadata import version as _version

    out.print(_version("fmx"))


@app.command()
def validate(file: SweepFile) -> None:
    """Check a sweep file (schema, values, combinations, data folders) without running anything."""
    config = _load(file)
    plan = plan_sweep(config)
    out.print(
        f"{file}: ok — sweep '{config.name}', {len(plan.trainings)} trainings × {len(plan.settings)} solver settings"
        f" × {len(plan.eval_steps)} checkpoint(s) = {plan.num_evaluations} evaluations",
        highlight=False,
    )


#: --dry-run lists at most this many trainings and solver settings: a big plan is summarised, not printed whole.
PLAN_ROWS_SHOWN = 50


def _more(total: int) -> str:
    return f"... {total - PLAN_ROWS_SHOWN} more" if total > PLAN_ROWS_SHOWN else ""


def _print_plan(config: SweepConfig) -> None:
    plan = plan_sweep(config)
    table = Table(title=f"sweep '{config.name}': {len(plan.trainings)} trainings")
    axes = bool(config.grid.train)
    for col in ("trial", "path", "objective", "coupling", "seed", *(["train"] if axes else [])):
        table.add_column(col, overflow="fold")
    for key in plan.trainings[:PLAN_ROWS_SHOWN]:
        table.add_row(key.trial_id, key.path, key.objective, key.coupling, str(key.seed), *([key.axes_label or ""] if axes else []))
    if _more(len(plan.trainings)):
        table.add_row(_more(len(plan.trainings)), *[""] * (4 + axes))
    out.print(table)
    labels = [s.label for s in plan.settings[:PLAN_ROWS_SHOWN]] + [_more(len(plan.settings))]
    steps = plan.eval_steps[:PLAN_ROWS_SHOWN] + ([_more(len(plan.eval_steps))] if _more(len(plan.eval_steps)) else [])
    out.print(f"each evaluated at steps {steps} under: {', '.join(filter(None, labels))}", highlight=False)
    out.print(f"{plan.num_evaluations} evaluations in all", highlight=False)
    if plan.skipped:
        out.print(f"skipped (invalid: skip): {', '.join(f'{p}+{o}' for p, o in plan.skipped)}", highlight=False)


def _print_pass(config: SweepConfig, tracking_uri: str | None, resume: bool) -> None:
    """What a run would train, evaluate from stored weights and reuse, against what MLflow holds."""
    try:
        seen = preview(config, resolve_tracking_uri(tracking_uri), resume)
    except SweepStopped as err:
        _fail(str(err), err.exit_code)
    if seen.pass_plan is None:
        out.print(seen.nothing_reused, highlight=False)
        return
    pass_plan = seen.pass_plan
    if not pass_plan.work:
        out.print(f"against {seen.uri}: {pass_plan.summary()}: nothing would run", highlight=False)
        return
    table = Table(title=f"against {seen.uri}: {pass_plan.summary()}")
    for col in ("trial", "would", "why"):
        table.add_column(col)
    for item in pass_plan.work[:PLAN_ROWS_SHOWN]:
        what = "evaluate " + ", ".join(f"step {s}: {' '.join(labels)}" for s, labels in item.evaluate) if item.mode == EVALUATE else "train"
        table.add_row(item.key.trial_id, what, item.why)
    if _more(len(pass_plan.work)):
        table.add_row(_more(len(pass_plan.work)), "", "")
    out.print(table)


@app.command()
def sweep(
    file: SweepFile,
    address: Annotated[str | None, typer.Option(help="Ray cluster address HOST:PORT (default: a local Ray)")] = None,
    tracking_uri: TrackingUri = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted sweep")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the trainings and evaluations, run nothing")] = False,
) -> None:
    """Run a sweep: Ray Tune trials train each configuration once and evaluate every solver setting."""
    if dry_run:
        config = _load(file)
        _print_plan(config)
        _print_pass(config, tracking_uri, resume)
        return
    try:
        outcome = api.run_sweep(file, tracking_uri, address=address, resume=resume, console=console)
    except SweepStopped as err:
        _fail(str(err), err.exit_code, err.label)
    _report_outcome(outcome)


def _report_outcome(outcome: SweepOutcome) -> None:
    """The table (Markdown where stdout is a file or a pipe: a log keeps it whole), the counts, where results
    are, and the outcome's exit code."""
    _show_table(outcome.runs, markdown=not out.is_terminal)
    out.print(
        f"{outcome.trainings} trainings ({outcome.failed_trials} failed, {len(outcome.interrupted)} interrupted), "
        f"{len(outcome.runs)} evaluations ({outcome.failed_evaluations} failed) in {outcome.seconds:.0f} s",
        highlight=False,
    )
    if outcome.runs_path is not None:
        out.print(f"rows: {outcome.runs_path}\ntable: {outcome.table_path}", highlight=False)
    for trial, why in outcome.repaired.items():
        if trial not in outcome.unrecorded and trial not in outcome.interrupted:
            console.print(f"[yellow]note:[/] trial {trial}'s record was completed by the driver: {escape(why or 'rows from its checkpoint')}", highlight=False)
    for trial, why in outcome.unrecorded.items():
        console.print(f"[red]error:[/] trial {trial} failed before it recorded anything: {escape(why)}", highlight=False)
    if outcome.not_written:
        label = "[yellow]note:[/]" if outcome.interrupted else "[red]error:[/]"
        console.print(f"{label} tables not written: {escape(outcome.not_written)}", highlight=False)
    if outcome.interrupted:
        console.print(
            f"[red]interrupted:[/] {len(outcome.interrupted)} trial(s) did not finish; run `fmx sweep {outcome.file} --resume`",
            highlight=False,
        )
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)
    # Everything is written. Python's exit would now run the cyclic garbage collector over the many objects
    # Ray, MLflow and pandas leave behind (about a second here); frozen objects are exempt from it.
    gc.freeze()


def _show_table(runs: pd.DataFrame, markdown: bool) -> None:
    """The summary: Markdown (asked for, or the sweep's table in a log), else laid out for the terminal's width
    (80 in a pipe, or $COLUMNS) so that no number is split across lines (orchestrator.terminal_table)."""
    if runs.empty:  # an interrupted pass of new evaluation settings: none of the file's evaluations is in yet
        out.print("(no evaluation rows yet)", highlight=False)
        return
    if markdown:
        shown, legend = api.table_view(runs, markdown)
        out.print(escape(shown) + f"\n\n{legend}", highlight=False, soft_wrap=True)
        return
    out.print(api.terminal_table(runs, out), highlight=False, soft_wrap=False)


def _sweep_and_store(sweep_name: str, tracking_uri: str | None) -> tuple[str, str]:
    """A sweep named directly or by its YAML file, and its store, checked (it must exist and be MLflow's)."""
    name = _load(Path(sweep_name)).name if sweep_name.endswith((".yaml", ".yml")) else sweep_name
    return name, _tracking(tracking_uri, existing=True)


def _runs_from_mlflow(sweep_name: str, tracking_uri: str | None, publish_view: bool = False) -> tuple[str, str, pd.DataFrame]:
    """The sweep's rows rebuilt from MLflow (the store checked first); `publish_view`: the UI's view rewritten."""
    name, uri = _sweep_and_store(sweep_name, tracking_uri)
    try:
        return name, uri, api.collect_runs(uri, name, publish_view=publish_view)
    except LookupError as err:
        _fail(str(err))


@app.command()
def tables(
    sweep_name: Annotated[str, typer.Argument(help="sweep name, or its YAML file", show_default=False)],
    tracking_uri: TrackingUri = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="print Markdown instead of a terminal table")] = False,
    out_dir: Annotated[Path | None, typer.Option(help="where to write the Parquet files (default results/<name>)")] = None,
    allow_fewer: Annotated[
        bool, typer.Option("--allow-fewer", help="replace a runs.parquet that has more rows than MLflow now gives")
    ] = False,
) -> None:
    """Rebuild runs.parquet and table.parquet from MLflow alone, and print the summary."""
    name, uri = _sweep_and_store(sweep_name, tracking_uri)
    target = _output_folder(out_dir or Path("results") / name, "--out-dir")
    try:
        runs, runs_path, table_path = api.rebuild_tables(uri, name, target, allow_fewer)
    except (LookupError, FolderUnusable) as err:
        _fail(str(err))
    except FewerRowsError as err:
        _fail(f"{err}; pass --allow-fewer to replace it anyway", code=1)
    _show_table(runs, markdown)
    console.print(f"rows: {runs_path}\ntable: {table_path}", highlight=False)


@app.command()
def compare(
    sweep_name: Annotated[str, typer.Argument(help="sweep name, or its YAML file", show_default=False)],
    method_a: Annotated[str, typer.Argument(help="a method: its label (FM-OT) or key (ot-fm)", show_default=False)],
    method_b: Annotated[str, typer.Argument(help="the other method", show_default=False)],
    metric: Annotated[str, typer.Option(help=" | ".join(f.name for f in VALUE_FIELDS) + ", a child run's metric name or a table's header")] = "nfe",
    margin: Annotated[
        float | None, typer.Option(help="also test equivalence: |A - B| below this, in the metric's units (two one-sided tests)")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """A minus B over matched seeds in every evaluation cell both have (once per checkpoint for the NLL): the
    95 % interval (of A / B for positive values such as NFE), d_z, the paired t-test's p, and the verdict: A lower,
    B lower, no difference detected (with the difference the seeds could detect), equivalent within --margin."""
    if margin is not None and not margin > 0:
        _fail(f"--margin: {margin} is not a positive number")
    name, uri, runs = _runs_from_mlflow(sweep_name, tracking_uri)
    try:
        cells, label_a, label_b = api.compare(runs, method_a, method_b, metric, margin)
    except CompareError as err:
        _fail(str(err))
    if not cells:
        _fail(f"{label_a} and {label_b} share no evaluated cell in sweep '{name}'")
    out.print(f"A = {label_a}, B = {label_b}, on {metric}; paired by seed (the same training seed, and the same evaluation "
              f"noise: eval.seed is shared by every trial); [95 % interval]; what the seeds detect: at {POWER * 100:.0f} % "
              "power, were their spread the true one", highlight=False, markup=False, soft_wrap=False)  # fmt: skip
    for cell in cells:  # words wrap at the terminal's width (or 80 in a pipe), never inside a number
        out.print("\n".join(describe(cell)), highlight=False, markup=False, soft_wrap=False)


@app.command()
def report(
    sweep_name: Annotated[str, typer.Argument(help="sweep name, or its YAML file", show_default=False)],
    tracking_uri: TrackingUri = None,
    out_dir: Annotated[Path | None, typer.Option(help="default results/<name>/report")] = None,
) -> None:
    """Markdown tables and PNG plots of a finished sweep, written to disk and logged to MLflow."""
    if out_dir is not None:  # refused before the store is read
        _output_folder(out_dir, "--out-dir")
    name, uri, runs = _runs_from_mlflow(sweep_name, tracking_uri)
    if runs.empty:
        _fail(f"sweep '{name}' has no evaluated rows in MLflow at {uri}")
    target = _output_folder(out_dir or Path("results") / name / "report", "--out-dir")
    try:
        built = api.report(uri, name, runs, target)
    except FolderUnusable as err:
        _fail(str(err))
    out.print(built.markdown.read_text(), highlight=False, markup=False)
    console.print(f"report: {built.markdown} ({len(built.plots)} plots; also in MLflow experiment '{REPORT_EXPERIMENT.format(sweep=name)}')", highlight=False)


@app.command()
def train(
    file: SweepFile,
    trial: Annotated[str | None, typer.Option(help="trial id, e.g. ot-fm-independent-s0 (default: the first)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="checkpoint folder")] = Path("checkpoints"),
) -> None:
    """Train one configuration of a sweep in this process (no Ray) and save its checkpoint."""
    config = _load(file)
    plan = plan_sweep(config)
    keys = {k.trial_id: k for k in plan.trainings}
    if trial is not None and trial not in keys:
        _fail(f"--trial: '{trial}' is not a training of {file}; choose one of {', '.join(keys)}")
    key = keys[trial] if trial else plan.trainings[0]
    target = _output_folder(out_dir / key.trial_id, "--out")
    try:
        state = api.local_run().train_one(
            config, key, target,
            on_log=lambda s, values: console.print(f"{key.trial_id} step {s}/{config.train.steps} loss {values['train_loss']:.4g}"),
        )  # fmt: skip
    except NoGpuError as err:
        _fail(f"{file}: {err}")
    (target / "sweep.yaml").write_text(Path(file).read_text())
    (target / "trial.txt").write_text(key.trial_id + "\n")
    out.print(f"saved {target} ({state.step} steps, {state.train_seconds:.1f} s on {state.trained_on})", highlight=False)


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="folder written by `fmx train`", show_default=False)],
    solver: Annotated[str, typer.Option(help="ODE solver")] = "dopri5",
    tol: Annotated[float | None, typer.Option(help="atol = rtol for adaptive solvers")] = None,
    nfe: Annotated[int | None, typer.Option(help="NFE budget for fixed-step solvers")] = None,
) -> None:
    """Evaluate a checkpoint from `fmx train` under one solver setting and print its metrics."""
    for option, value, kind in (("--solver", solver, SolverName), ("--tol", tol, Tolerance), ("--nfe", nfe, Nfe)):
        try:  # the ranges a sweep file's grid has: one fact, in orchestrator.value_types / schema
            TypeAdapter(kind).validate_python(value) if value is not None else None
        except ValidationError as err:
            _fail(f"{option}: {value!r}: {err.errors()[0]['msg']}")
    if not (checkpoint / STATE_FILE).is_file() or not (checkpoint / "trial.txt").is_file():
        _fail(f"{checkpoint}: not a checkpoint folder written by `fmx train`")
    config = _load(checkpoint / "sweep.yaml")
    try:
        trial_id = (checkpoint / "trial.txt").read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        _fail(f"{checkpoint / 'trial.txt'}: unreadable ({err})")
    keys = {k.trial_id: k for k in plan_sweep(config).trainings}
    if trial_id not in keys:
        _fail(f"{checkpoint / 'trial.txt'}: '{trial_id[:100]}' is not a training of its sweep.yaml; one of {', '.join(keys)}")
    key = keys[trial_id]
    try:
        default_tol = DEFAULT_TOL if tol is None and nfe is None and solver in ADAPTIVE_SOLVERS else tol
        setting = SolverSetting(solver, tol=default_tol, nfe_budget=nfe)
    except ValueError as err:
        _fail(f"--solver/--tol/--nfe: {err}")
    try:
        row = api.local_run().evaluate_checkpoint(config, key, checkpoint, setting)
    except CheckpointError as err:
        _fail(str(err))
    for k, v in row.as_dict().items():
        if v is not None and v == v:  # what was measured: fields that do not apply (None, NaN) are left out
            out.print(f"{k:>20}: {v}", highlight=False)


@app.command()
def ui(
    sweep_name: Annotated[str | None, typer.Argument(help="sweep name, or its YAML file", show_default=False)] = None,
    tracking_uri: TrackingUri = None,
    port: Annotated[int, typer.Option(help="port to listen on")] = 5000,
    host: Annotated[str, typer.Option(help="address to bind (not loopback: reachable from other machines)")] = "127.0.0.1",
) -> None:
    """Start a light MLflow UI for the sweep store and, once it answers, print the sweep's runs page."""
    name = _load(Path(sweep_name)).name if sweep_name and sweep_name.endswith((".yaml", ".yml")) else sweep_name
    uri = _tracking(tracking_uri, existing=True)
    if uri.startswith(("http://", "https://")):
        out.print(f"the tracking server already serves the UI: {uri}")
        return
    problem = fmx_ui.port_problem(port, host)
    if problem:
        _fail(f"--port: {problem}")
    exp_id = fmx_ui.experiment_id(uri, name) if name else None
    if name and exp_id is None:
        _fail(f"no sweep '{name}' in the MLflow store {uri}")
    if name:  # stores written before the view existed get it now; a current one is rewritten identically
        api.collect_runs(uri, name, publish_view=True)
    if host not in fmx_ui.LOOPBACK:
        console.print(f"[yellow]warning:[/] --host {host}: the UI is reachable from other machines, without login")
    try:
        code, served = fmx_ui.serve(uri, host, port, exp_id, announce=lambda line: out.print(line, highlight=False))
    except fmx_ui.Stopped as stopped:
        console.print(f"{stopped}: stopped the MLflow UI; port {port} on {host} is free", highlight=False)
        raise typer.Exit(130) from None
    if code:
        what = "failed" if served else "exited without serving it"
        _fail(f"the MLflow UI on {host}:{port} {what} (exit code {code}); see its output above", code=1)


if __name__ == "__main__":
    app()
