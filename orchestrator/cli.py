"""The `fmx` command line: validate, sweep, train, eval, tables, ui.

Bad input of any kind (file, key, value, address) ends with one message and exit code 2, before
Ray or MLflow are started and before anything is written.
"""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.config import ConfigError, SweepConfig, load_sweep, local_capacity_problem
from orchestrator.plan import plan_sweep
from orchestrator.preflight import is_local_ray

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Flow Matching ablations at any scale.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

SweepFile = Annotated[Path, typer.Argument(help="sweep YAML file", show_default=False)]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
]


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # text, never markup
    raise typer.Exit(code)


def _load(file: Path) -> SweepConfig:
    try:
        return load_sweep(file)
    except ConfigError as err:
        _fail(str(err))


def _tracking(uri: str | None, existing: bool = False) -> str:
    """The resolved tracking URI, checked; `existing`: a read-only command, which must find a local store
    there (MLflow would create an empty one) and one that is an MLflow store."""
    from orchestrator.store_check import check_existing_store
    from orchestrator.tracking import TrackingError, check_tracking_uri, resolve_tracking_uri

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
    """What a run would train, evaluate from stored weights and reuse, judged against what MLflow holds
    (read only: a store that does not exist yet is not created)."""
    from orchestrator.store_check import sqlite_path
    from orchestrator.tracking import TrackingError, check_tracking_uri, find_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    try:
        if db is not None and not db.is_file():
            raise TrackingError(f"no MLflow store at {db} yet")
        check_tracking_uri(uri)
        experiment_id = find_experiment(uri, config.name)
    except TrackingError as err:
        out.print(f"nothing is reused ({err}): every training would run", highlight=False)
        return
    if experiment_id is None:
        out.print(f"nothing is reused (no experiment '{config.name}' at {uri} yet): every training would run", highlight=False)
        return
    from orchestrator.registry import EVALUATE, plan_pass, read_cells
    from orchestrator.sweep import storage_dir
    from orchestrator.tracking import DamagedRun

    plan = plan_sweep(config)
    try:
        cells = read_cells(uri, experiment_id)
    except DamagedRun as err:
        _fail(str(err))
    pass_plan = plan_pass(config, plan, cells, storage_dir(config), retry_failed=resume)
    if not pass_plan.work:
        out.print(f"against {uri}: {pass_plan.summary()}: nothing would run", highlight=False)
        return
    table = Table(title=f"against {uri}: {pass_plan.summary()}")
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
    config = _load(file)
    if dry_run:
        _print_plan(config)
        _print_pass(config, tracking_uri, resume)
        return
    local = is_local_ray(address)
    if local:
        # A local Ray serves this machine only: its GCS, raylet and agents then listen on 127.0.0.1 instead of
        # every interface. Ray reads this when it is imported, so before anything below imports it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from orchestrator.disk import as_disk_full, full_disk_under
    from orchestrator.sweep import Unschedulable, results_dir, run_sweep, stop_local_ray
    from orchestrator.tracking import DamagedRun, TrackingUnavailable

    uri = _tracking(tracking_uri)
    lock = _preflight_sweep(config, file, address, uri, resume)  # held (referenced) until the command returns
    console.print(f"MLflow tracking: [bold]{uri}[/]   (browse with: fmx ui)", highlight=False)
    if not local:
        if not config.storage_path:
            console.print(
                "[yellow]warning:[/] --address without `storage_path` in the sweep file: checkpoints go to this "
                "machine's results/ folder, which other machines of the cluster cannot reach", highlight=False
            )
        if not uri.startswith(("http://", "https://", "databricks")):
            console.print(
                "[yellow]warning:[/] --address with a local MLflow store: trials on other machines cannot reach it; "
                "use --tracking-uri http://HEAD:5000 (see docs/cluster.md)", highlight=False
            )
    try:
        outcome = run_sweep(config, uri, address=address, resume=resume, console=console, sweep_file=str(file))
    except Unschedulable as err:
        _fail(f"{file}: {err}")
    except DamagedRun as err:
        _fail(str(err))
    except (KeyboardInterrupt, EOFError) as err:  # Ctrl-C outside Tune's own handling (Ray's start, the end)
        full = full_disk_under(results_dir(config), uri) if isinstance(err, EOFError) else None
        if full is not None:  # Tune ends with "Aborted." (an EOFError) when it cannot write its state
            _fail_disk_full(full, file)
        console.print(f"[red]interrupted:[/] run `fmx sweep {file} --resume` to continue", highlight=False)
        raise typer.Exit(130) from None
    except TrackingUnavailable as err:
        _fail(f"{err}; what the trials computed is kept in their checkpoints: run `fmx sweep {file} --resume` "
              "once the store is back", code=1)  # fmt: skip
    except Exception as err:
        full = as_disk_full(err) or full_disk_under(results_dir(config), uri)
        if full is None:
            raise
        _fail_disk_full(full, file)
    finally:
        stop_local_ray()
    _report_outcome(outcome, file)
    lock.release()


def _fail_disk_full(full: Exception, file: Path) -> NoReturn:
    _fail(f"{full}: free some space, then run `fmx sweep {file} --resume`", code=1)


def _preflight_sweep(config: SweepConfig, file: Path, address: str | None, uri: str, resume: bool):  # -> SweepLock
    """Everything checked before Ray starts: local capacity, the Ray address, the sweep's earlier state and
    store, and its lock (held until the command exits). Any problem ends the command with exit 2."""
    from orchestrator.preflight import PreflightError, check_ray_address, local_gpu_count
    from orchestrator.sweep import ResumeError, check_resume_state, results_dir, storage_dir, trial_side_cpus
    from orchestrator.sweep_guard import StoreMismatch, SweepBusy, SweepLock, check_store_matches

    if is_local_ray(address):
        problem = local_capacity_problem(config, file, extra_cpus=trial_side_cpus(config))
        if problem is not None:
            _fail(str(problem))
        gpus = local_gpu_count() if config.train.use_gpu else None
        if gpus is not None and gpus < config.train.num_workers:
            _fail(
                f"{file}: train.use_gpu: {config.train.num_workers} worker(s) need a GPU each, but this machine has "
                f"{gpus}; set use_gpu: false, or pass --address of a cluster with GPUs"
            )
    storage = storage_dir(config)
    lock = SweepLock(results_dir(config), None if "://" in storage else Path(storage))
    try:
        check_ray_address(address)
        lock.acquire(config.name, existing_only=True)  # a sweep running says so before its state is judged
        restore = check_resume_state(config, resume)
        if resume:  # a pass to restore must be of this very file; any --resume must log to the same store
            check_store_matches(results_dir(config), uri, config, file, same_file=restore is not None)
        if not lock.held:  # only now may the folder be created: bad input writes nothing
            lock.acquire(config.name)
    except (PreflightError, ResumeError, StoreMismatch, SweepBusy) as err:
        _fail(str(err))
    return lock


def _report_outcome(outcome, file: Path) -> None:  # noqa: ANN001 - orchestrator.sweep.SweepOutcome
    """The table, the counts, where results are, and the exit code: 130 if interrupted, 1 if a trial never
    recorded anything (a broken install, say) or the tables could not be written safely, else 0."""
    from orchestrator.tables import summarize

    _show_table(summarize(outcome.runs), markdown=False)
    failed_rows = int((outcome.runs["status"] != "ok").sum())
    out.print(
        f"{outcome.trainings} trainings ({outcome.failed_trials} failed, {len(outcome.interrupted)} interrupted), "
        f"{len(outcome.runs)} evaluations ({failed_rows} failed) in {outcome.seconds:.0f} s",
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
        console.print(f"[red]error:[/] tables not written: {escape(outcome.not_written)}", highlight=False)
    if outcome.interrupted:
        console.print(
            f"[red]interrupted:[/] {len(outcome.interrupted)} trial(s) did not finish; run `fmx sweep {file} --resume`",
            highlight=False,
        )
        raise typer.Exit(130)
    if outcome.unrecorded or outcome.not_written:
        raise typer.Exit(1)
    # Everything is written. Python's exit would now run the cyclic garbage collector over the many objects
    # Ray, MLflow and pandas leave behind (about a second here); frozen objects are exempt from it.
    gc.freeze()


def _show_table(table, markdown: bool) -> None:  # noqa: ANN001 - a pandas DataFrame
    from orchestrator.tables import CELL_LEGEND, display_table, to_markdown

    if markdown:
        out.print(escape(to_markdown(table)) + f"\n\n{CELL_LEGEND}", highlight=False, soft_wrap=True)
        return
    shown = display_table(table)
    rich_table = Table()
    # Labels stay whole (two tolerances must never read alike); numbers, headers and method labels that carry
    # training-option values (`FM-OT [ema_decay=0.999]`) fold onto more lines instead of being cut.
    whole = {"solver"} | ({"method"} if shown["method"].str.len().max() <= 24 else set())
    for col in shown.columns:
        rich_table.add_column(str(col), no_wrap=col in whole, overflow="fold")
    for row in shown.itertuples(index=False):  # escaped: `FM-OT [lr=0.001]` is text, not rich markup
        rich_table.add_row(*(escape(str(v)) for v in row))
    rich_table.caption = CELL_LEGEND
    out.print(rich_table)


def _runs_from_mlflow(sweep_name: str, tracking_uri: str | None, publish_view: bool = False):  # -> (name, uri, DataFrame)
    """A sweep named directly or by its YAML file, and its rows rebuilt from MLflow (the store checked first,
    before the seconds of importing what reads it); `publish_view`: the UI's comparison view rewritten too."""
    name = _load(Path(sweep_name)).name if sweep_name.endswith((".yaml", ".yml")) else sweep_name
    uri = _tracking(tracking_uri, existing=True)
    from orchestrator.sweep import collect_runs

    try:
        return name, uri, collect_runs(uri, name, publish_view=publish_view)
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
    name, uri, runs = _runs_from_mlflow(sweep_name, tracking_uri, publish_view=True)
    from orchestrator.tables import FewerRowsError, summarize, write_tables

    try:
        runs_path, table_path = write_tables(runs, out_dir or Path("results") / name, allow_fewer=allow_fewer)
    except FewerRowsError as err:
        _fail(f"{err}; pass --allow-fewer to replace it anyway", code=1)
    _show_table(summarize(runs), markdown)
    console.print(f"rows: {runs_path}\ntable: {table_path}", highlight=False)


@app.command()
def compare(
    sweep_name: Annotated[str, typer.Argument(help="sweep name, or its YAML file", show_default=False)],
    method_a: Annotated[str, typer.Argument(help="a method: its label (FM-OT) or key (ot-fm)", show_default=False)],
    method_b: Annotated[str, typer.Argument(help="the other method", show_default=False)],
    metric: Annotated[str, typer.Option(help="nfe | nll | sample_metric | ode_error")] = "nfe",
    tracking_uri: TrackingUri = None,
) -> None:
    """A minus B over matched seeds in every evaluation cell both have: mean difference with its 95 %
    interval, effect size d_z, paired t-test p-value, and the verdict (A lower, B lower, tie)."""
    name, uri, runs = _runs_from_mlflow(sweep_name, tracking_uri)
    from orchestrator.compare import CompareError, compare_methods, resolve_method
    from orchestrator.tables import method_label

    try:
        cells = compare_methods(runs, method_a, method_b, metric)
        label_a, label_b = method_label(*resolve_method(runs, method_a)), method_label(*resolve_method(runs, method_b))
    except CompareError as err:
        _fail(str(err))
    if not cells:
        _fail(f"{label_a} and {label_b} share no evaluated cell in sweep '{name}'")
    table = Table(caption=f"A = {escape(label_a)}, B = {escape(label_b)}, on {metric}; paired by seed (same training seed, and the "
                          "same evaluation noise: eval.seed is shared by every trial)")  # fmt: skip
    for column in ("step", "setting", "K", "seeds", "A", "B", "A - B [95 % CI]", "d_z", "p", "verdict"):
        table.add_column(column, no_wrap=True)
    for cell in cells:
        c, d = cell.comparison, cell.comparison.difference
        interval = "-" if d.low != d.low else f"{d.mean:.4g} [{d.low:.4g}, {d.high:.4g}]"
        table.add_row(str(cell.step), cell.setting, "-" if cell.dequant_draws is None else str(cell.dequant_draws),
                      str(len(c.seeds)), f"{c.mean_a:.4g}", f"{c.mean_b:.4g}", interval if len(c.seeds) > 1 else f"{d.mean:.4g}",
                      _number(c.effect_size), _number(c.p_value), c.verdict)  # fmt: skip
    wide = Console(file=out.file, width=max(out.width, 140), highlight=False)  # a line per cell, also in a pipe
    wide.print(table)


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.3g}"


@app.command()
def report(
    sweep_name: Annotated[str, typer.Argument(help="sweep name, or its YAML file", show_default=False)],
    tracking_uri: TrackingUri = None,
    out_dir: Annotated[Path | None, typer.Option(help="default results/<name>/report")] = None,
) -> None:
    """Markdown tables and PNG plots of a finished sweep, written to disk and logged to MLflow."""
    name, uri, runs = _runs_from_mlflow(sweep_name, tracking_uri)
    from orchestrator.report import build_report, load_samples, load_trajectories
    from orchestrator.tracking import REPORT_EXPERIMENT, log_report

    if runs.empty:
        _fail(f"sweep '{name}' has no evaluated rows in MLflow at {uri}")
    target = out_dir or Path("results") / name / "report"
    built = build_report(runs, target, name, load_samples(uri, runs), load_trajectories(uri, runs))
    log_report(uri, name, built.directory)
    out.print(built.markdown.read_text(), highlight=False, markup=False)
    console.print(f"report: {built.markdown} ({len(built.plots)} plots; also in MLflow experiment '{REPORT_EXPERIMENT.format(sweep=name)}')", highlight=False)


@app.command()
def train(
    file: SweepFile,
    trial: Annotated[str | None, typer.Option(help="trial id, e.g. ot-fm-independent-s0 (default: the first)")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="checkpoint folder")] = Path("checkpoints"),
) -> None:
    """Train one configuration of a sweep in this process (no Ray) and save its checkpoint."""
    import torch

    from orchestrator.model_state import ModelState
    from orchestrator.trainer import Trainer

    config = _load(file)
    plan = plan_sweep(config)
    keys = {k.trial_id: k for k in plan.trainings}
    if trial is not None and trial not in keys:
        _fail(f"--trial: '{trial}' is not a training of {file}; choose one of {', '.join(keys)}")
    key = keys[trial] if trial else plan.trainings[0]
    torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    state = ModelState(config.for_training(key), key)
    Trainer(state).train_until(
        config.train.steps,
        on_log=lambda s, values: console.print(f"{key.trial_id} step {s}/{config.train.steps} loss {values['train_loss']:.4g}"),
    )
    target = out_dir / key.trial_id
    state.save(target)
    (target / "sweep.yaml").write_text(Path(file).read_text())
    (target / "trial.txt").write_text(key.trial_id + "\n")
    out.print(f"saved {target} ({state.step} steps, {state.train_seconds:.1f} s)", highlight=False)


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="folder written by `fmx train`", show_default=False)],
    solver: Annotated[str, typer.Option(help="ODE solver")] = "dopri5",
    tol: Annotated[float | None, typer.Option(help="atol = rtol for adaptive solvers")] = None,
    nfe: Annotated[int | None, typer.Option(help="NFE budget for fixed-step solvers")] = None,
) -> None:
    """Evaluate a checkpoint from `fmx train` under one solver setting and print its metrics."""
    from fm_core.names import ADAPTIVE_SOLVERS
    from fm_core.solvers import SolverSetting
    from orchestrator.evaluation import Evaluator
    from orchestrator.model_state import STATE_FILE, CheckpointError, ModelState

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
        default_tol = 1e-5 if tol is None and nfe is None and solver in ADAPTIVE_SOLVERS else tol
        setting = SolverSetting(solver, tol=default_tol, nfe_budget=nfe)
    except ValueError as err:
        _fail(f"--solver/--tol/--nfe: {err}")
    state = ModelState(config.for_training(key), key)
    try:
        state.restore(checkpoint)
    except CheckpointError as err:
        _fail(str(err))
    rows, _ = Evaluator(state).evaluate([setting])
    for k, v in rows[0].as_dict().items():
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
    problem = _port_problem(port, host)
    if problem:
        _fail(f"--port: {problem}")
    from orchestrator import ui as fmx_ui

    exp_id = fmx_ui.experiment_id(uri, name) if name else None
    if name and exp_id is None:
        _fail(f"no sweep '{name}' in the MLflow store {uri}")
    if name:  # stores written before the view existed get it now; a current one is rewritten identically
        from orchestrator.sweep import collect_runs

        collect_runs(uri, name, publish_view=True)
    if host not in fmx_ui.LOOPBACK:
        console.print(f"[yellow]warning:[/] --host {host}: the UI is reachable from other machines, without login")
    code, served = _serve(uri, host, port, exp_id)
    if code:
        what = "failed" if served else "exited without serving it"
        _fail(f"the MLflow UI on {host}:{port} {what} (exit code {code}); see its output above", code=1)


def _port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why the UI cannot listen on `host`:`port`, found by binding it (as the server would) and letting go."""
    from orchestrator.ui import port_in_use

    if not 1 <= port <= 65535:
        return f"{port} is not a TCP port (1 to 65535)"
    if port_in_use(host, port):
        return f"port {port} on {host} is in use; pass another --port"
    return None


def _serve(uri: str, host: str, port: int, exp_id: str | None) -> tuple[int, bool]:
    """Run the server until it exits or Ctrl-C stops it; print the URL only once it answers.
    (exit code, whether it ever served); an exit without serving is a failure even with code 0."""
    from orchestrator import ui as fmx_ui

    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    process = fmx_ui.start_server(uri, host, port)
    try:
        served = fmx_ui.wait_until_served(address, process)
        if served:
            if exp_id:
                out.print(f"MLflow UI: {fmx_ui.runs_page_url(address, exp_id)}  (store: {uri}; Ctrl-C to stop)", highlight=False)
                out.print(f"parallel coordinates: {fmx_ui.runs_page_url(address, exp_id, charts=True)}", highlight=False)
            else:
                out.print(f"MLflow UI: {address}  (store: {uri}; Ctrl-C to stop)", highlight=False)
        code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server and its worker too (same process group)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 0, True
    return (code or (0 if served else 1)), served


if __name__ == "__main__":
    app()
