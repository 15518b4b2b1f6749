"""`fmx report`: a finished sweep's Parquet (and sample artifacts) -> Markdown tables and PNG plots.

Which plots appear depends on what the sweep varied: fixed-step NFE budgets give error/quality vs
NFE, several tolerances give NFE vs tolerance, several checkpoints give quality and NFE vs step.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fm_core.solvers import SolverSetting  # noqa: E402
from orchestrator.plots import data_extent, draw_2d, draw_samples, figure_title, panel_title, readable_log_axis  # noqa: E402
from orchestrator.scorecard import judge  # noqa: E402
from orchestrator.scorecard import to_markdown as scorecard_markdown  # noqa: E402
from orchestrator.tables import cell_legend, method_label, method_labels, summarize, to_markdown  # noqa: E402
from orchestrator.tracking import client  # noqa: E402
from orchestrator.out_folders import make_folder

ODE_ERROR_LABEL = "ODE error (MSE vs reference solve)"


@dataclass
class Report:
    directory: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)


def _methods(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(method_labels(frame), index=frame.index)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Figures are made with layout="constrained": nothing clipped, outside legends given room."""
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _lines(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, by: list[str]) -> None:
    """Mean over seeds with a min-max band, one line per group."""
    for name, group in frame.groupby(by, dropna=False):
        stats = group.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        label = " ".join(str(v) for v in (name if isinstance(name, tuple) else (name,)))
        ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label)
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)


def _finish(fig: plt.Figure, axes: list[plt.Axes], log_y: bool = False) -> None:
    """Readable log ticks on every log axis, and one legend outside the panels (never over the data)."""
    for ax in axes:
        ax.grid(alpha=0.3, which="major")
        ax.tick_params(labelsize=8, which="both")
        ax.autoscale_view()
        if ax.get_xscale() == "log":
            readable_log_axis(ax, "x")
        if ax.get_yscale() == "log":
            readable_log_axis(ax, "y")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def error_and_quality_vs_nfe(runs: pd.DataFrame, out: Path) -> list[Path]:
    fixed = runs[runs["nfe_budget"].notna() & (runs["status"] == "ok")].copy()
    if fixed["nfe_budget"].nunique() < 2:
        return []
    fixed["method"] = _methods(fixed)
    fixed["nfe"] = fixed["nfe"].astype(float)
    paths = []
    for column, ylabel, name in (
        ("ode_error", ODE_ERROR_LABEL, "error_vs_nfe.png"),
        ("sample_metric", _metric_label(fixed), "quality_vs_nfe.png"),
    ):
        if fixed[column].isna().all():  # no reference solve (eval.reference_tol: null) or no sample metric
            continue
        solvers = sorted(fixed["solver"].unique())
        fig, axes = plt.subplots(
            1, len(solvers), figsize=(3.8 * len(solvers) + 1.4, 3.4), squeeze=False, sharey=True, layout="constrained"
        )
        for ax, solver in zip(axes[0], solvers, strict=True):
            _lines(ax, fixed[fixed["solver"] == solver], "nfe", column, ["method"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{solver} (fixed step)", fontsize=9)
            ax.set_xlabel("NFE (function evaluations)")
        axes[0][0].set_ylabel(ylabel)
        _finish(fig, list(axes[0]))
        paths.append(_save(fig, out / name))
    return paths


def nfe_vs_tolerance(runs: pd.DataFrame, out: Path) -> list[Path]:
    adaptive = runs[runs["tol"].notna() & (runs["status"] == "ok")].copy()
    if adaptive["tol"].nunique() < 2:
        return []
    adaptive["method"] = _methods(adaptive)
    adaptive["nfe"] = adaptive["nfe"].astype(float)
    with_error = not adaptive["ode_error"].isna().all()  # no reference solve: the NFE panel alone
    fig, axes = plt.subplots(
        1, 2 if with_error else 1, figsize=(10 if with_error else 5.6, 3.4), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    _lines(axes[0], adaptive, "tol", "nfe", ["method", "solver"])
    axes[0].set_ylabel("NFE (function evaluations)")
    axes[0].set_title("cost of an adaptive solve", fontsize=9)
    if with_error:
        _lines(axes[1], adaptive, "tol", "ode_error", ["method", "solver"])
        axes[1].set_ylabel(ODE_ERROR_LABEL)
        axes[1].set_yscale("log")
        axes[1].set_title("its error", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tolerance (atol = rtol)")
    _finish(fig, list(axes))
    return [_save(fig, out / "nfe_vs_tolerance.png")]


def quality_vs_step(runs: pd.DataFrame, out: Path) -> list[Path]:
    ok = runs[runs["status"] == "ok"].copy()
    if ok["train_step"].nunique() < 2:
        return []
    ok["method"] = _methods(ok)
    ok["nfe"] = ok["nfe"].astype(float)
    ok["train_step"] = ok["train_step"].astype(float)
    adaptive = ok[ok["tol"].notna()]
    if adaptive.empty:
        adaptive = ok
    first_tol = adaptive["tol"].min() if adaptive["tol"].notna().any() else None
    chosen = adaptive[adaptive["tol"] == first_tol] if first_tol is not None else adaptive
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    _lines(axes[0], chosen, "train_step", "sample_metric", ["method"])
    axes[0].set_ylabel(_metric_label(chosen))
    _lines(axes[1], chosen, "train_step", "nfe", ["method"])
    axes[1].set_ylabel("NFE (function evaluations)")
    setting = SolverSetting.of(chosen.iloc[0].to_dict()).label
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_title(setting, fontsize=9)
    axes[0].set_yscale("log")
    _finish(fig, list(axes))
    return [_save(fig, out / "quality_vs_step.png")]


def _metric_label(frame: pd.DataFrame) -> str:
    names = frame["sample_metric_name"].dropna()
    name = str(names.iloc[0]) if len(names) else "sample metric"
    return {"sliced_w2": "sliced W₂ to data (lower is better)", "classifier_fd": "classifier FD (lower is better)"}.get(
        name, name
    ) + f" [{name}]" * (name in ("sliced_w2", "classifier_fd"))


def _nfe_of(runs: pd.DataFrame | None, method: str, label: str) -> float | None:
    """The NFE the report's rows give the final-step, first-seed evaluation of `method` at setting `label`."""
    if runs is None or runs.empty:
        return None
    final = runs[(runs["train_step"] == runs["train_step"].max()) & (runs["seed"] == runs["seed"].min())]
    final = final[_methods(final) == method] if not final.empty else final
    for _, row in final.iterrows():
        if SolverSetting.of(row.to_dict()).label == label and pd.notna(row.get("nfe")):
            return float(row["nfe"])
    return None


def samples_per_method(
    samples: dict[str, np.ndarray | dict[str, np.ndarray]], out: Path, runs: pd.DataFrame | None = None
) -> list[Path]:
    """The final-step samples, one panel per method: the same drawing as a trial's MLflow figure
    (orchestrator.plots.draw_samples). A value may be {setting label: array} (the panel names the setting and,
    given `runs`, its NFE) or a bare array."""
    if not samples:
        return []
    names = sorted(samples)
    panels, titles = {}, {}
    for name in names:
        value = samples[name]
        label = None
        if isinstance(value, dict):
            label = next((k for k in sorted(value) if "tol" in k), next(iter(sorted(value))))
            value = value[label]
        panels[name] = value
        titles[name] = name if label is None else f"{name} · " + panel_title(label, _nfe_of(runs, name, label))
    step = int(runs["train_step"].max()) if runs is not None and not runs.empty else None
    fig = draw_samples(panels, titles=titles, suptitle=figure_title("final samples", step), max_images=36)
    return [_save(fig, out / "samples_per_method.png")]


def _final_artifacts(tracking_uri: str, runs: pd.DataFrame, prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """`samples/<prefix>_step<final>.npz` of each seed-0 trial, by method label (trials without one skipped)."""
    mlflow_client = client(tracking_uri)
    out: dict[str, dict[str, np.ndarray]] = {}
    final = runs["train_step"].max()
    for _, row in runs[runs["seed"] == runs["seed"].min()].drop_duplicates("trial_id").iterrows():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow_client.download_artifacts(row["mlflow_run_id"], f"samples/{prefix}_step{final}.npz", tmp)
                # allow_pickle=False (numpy's default, said here on purpose): an artifact from a shared store
                # yields plain arrays only; one holding pickled objects raises instead of running anything.
                with np.load(local, allow_pickle=False) as arrays:
                    out[method_label(row["path"], row["objective"], row["coupling"], row.get("train_axes"))] = dict(arrays)
        except Exception:  # an older run, or a failed trial, has no such artifact
            continue
    return out


def load_samples(tracking_uri: str, runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Final-step samples of seed-0 trials (the best-tolerance adaptive setting), from MLflow artifacts."""
    out: dict[str, np.ndarray] = {}
    for method, data in _final_artifacts(tracking_uri, runs, "samples").items():
        label = next((k for k in sorted(data) if "tol" in k), next(iter(sorted(data)), None))
        if label is not None:
            out[method] = {label: data[label]}  # the setting label travels with the array (the panel names it)
    return out


def load_trajectories(tracking_uri: str, runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Final-step reference-solve states at several t (2-D sweeps), from MLflow artifacts."""
    return _final_artifacts(tracking_uri, runs, "trajectory")


def density_over_t(trajectories: dict[str, dict[str, np.ndarray]], out: Path) -> list[Path]:
    """One row per method, one column per time: how each path carries noise to data (2-D only). Smoothed
    densities (the sample figure's drawing), one window per row fitted to all its times."""
    if not trajectories:
        return []
    names = sorted(trajectories)
    columns = len(next(iter(trajectories.values()))["t"])
    fig, axes = plt.subplots(
        len(names), columns, figsize=(2.0 * columns + 0.6, 2.1 * len(names) + 0.4), squeeze=False, layout="constrained"
    )
    for r, name in enumerate(names):
        times, states = trajectories[name]["t"], trajectories[name]["x"]
        extent = data_extent(*states[:columns])
        for c in range(columns):
            ax = axes[r][c]
            draw_2d(ax, states[c], extent, kind="density")
            ax.set_title(f"{name}, t = {times[c]:.2f}" if c == 0 else f"t = {times[c]:.2f}", fontsize=8)
            if c > 0:
                ax.set_ylabel("")
            if r < len(names) - 1:
                ax.set_xlabel("")
    fig.suptitle("density over t (reference solve, final training step)", fontsize=10)
    return [_save(fig, out / "density_over_t.png")]


def build_report(
    runs: pd.DataFrame,
    out_dir: Path,
    sweep: str,
    samples: dict[str, np.ndarray] | None = None,
    trajectories: dict[str, dict[str, np.ndarray]] | None = None,
) -> Report:
    make_folder(out_dir, "the report's folder")
    plots: list[Path] = []
    plots += samples_per_method(samples or {}, out_dir, runs)
    plots += density_over_t(trajectories or {}, out_dir)
    plots += error_and_quality_vs_nfe(runs, out_dir)
    plots += nfe_vs_tolerance(runs, out_dir)
    plots += quality_vs_step(runs, out_dir)
    text = io.StringIO()
    text.write(f"# Sweep `{sweep}`\n\n")
    ok, failed = int((runs["status"] == "ok").sum()), int((runs["status"] != "ok").sum())
    text.write(f"{runs['trial_id'].nunique()} trainings, {ok} evaluations ok, {failed} failed.\n\n")
    final = runs[runs["train_step"] == runs["train_step"].max()]
    summary = summarize(final)
    text.write(f"## Summary (final checkpoint)\n\n{cell_legend(summary)}\n\n" + to_markdown(summary) + "\n\n")
    if runs["train_step"].nunique() > 1:
        text.write("## Over training\n\n" + to_markdown(summarize(runs)) + "\n\n")
    text.write("## The paper's claims on this sweep\n\n"
               "Paired by seed, 95 % t-interval of the mean difference A - B (orchestrator/scorecard.py):\n\n"
               + scorecard_markdown(judge(runs)) + "\n\n")  # fmt: skip
    for plot in plots:
        text.write(f"![{plot.stem}]({plot.name})\n\n")
    markdown = out_dir / "report.md"
    markdown.write_text(text.getvalue())
    return Report(directory=out_dir, markdown=markdown, plots=plots)
