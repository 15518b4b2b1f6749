"""`fmx report`: a finished sweep's Parquet (and sample artifacts) -> Markdown tables and PNG plots.

Which plots appear depends on what the sweep varied: fixed-step NFE budgets give error/quality vs
NFE, several tolerances give NFE vs tolerance, several checkpoints give quality and NFE vs step. Every sweep
gets the per-method figure of each metric with its interval over seeds, shown beside the verdicts. A method has
one colour, and the methods one order (sorted), in every figure (orchestrator.plots.method_colours).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fm_core.solvers import SETTING_FIELDS, SolverSetting  # noqa: E402
from orchestrator.plots import (  # noqa: E402
    DATA_PANEL,
    DATA_TITLE,
    density_colour_bar,
    density_peak,
    draw_2d,
    draw_samples,
    figure_title,
    method_colours,
    note_outside,
    panel_title,
    readable_log_axis,
    shared_extent,
)
from orchestrator.rows import is_positive, is_result, shown_value_fields, value_label  # noqa: E402
from orchestrator.scorecard import judge  # noqa: E402
from orchestrator.scorecard import to_markdown as scorecard_markdown  # noqa: E402
from orchestrator.tables import cell_legend, method_labels, summarize, to_markdown  # noqa: E402
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


def _colours(frame: pd.DataFrame, colours: Mapping[str, str] | None) -> Mapping[str, str]:
    """The report's method colours, or (a figure drawn on its own) those of the frame's methods."""
    return colours if colours is not None else method_colours(method_labels(frame))


LINE_STYLES = ("-", "--", ":", "-.")


def _lines(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, by: list[str], colours: Mapping[str, str]) -> None:
    """Mean over seeds with a min-max band, one line per group (`by` starts with "method"): a method's colour,
    and a line style per value of the rest of `by` (the solver)."""
    styles: dict[tuple, str] = {}
    for name, group in frame.groupby(by, dropna=False):
        key = name if isinstance(name, tuple) else (name,)
        stats = group.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        label = " ".join(str(v) for v in key)
        style = styles.setdefault(key[1:], LINE_STYLES[len(styles) % len(LINE_STYLES)])
        ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label, color=colours[key[0]], ls=style)
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15, color=colours[key[0]])


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


def error_and_quality_vs_nfe(runs: pd.DataFrame, out: Path, colours: Mapping[str, str] | None = None) -> list[Path]:
    fixed = runs[runs["nfe_budget"].notna() & (runs["status"] == "ok")].copy()
    if fixed["nfe_budget"].nunique() < 2:
        return []
    fixed["method"] = _methods(fixed)
    fixed["nfe"] = fixed["nfe"].astype(float)
    colours = _colours(fixed, colours)
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
            _lines(ax, fixed[fixed["solver"] == solver], "nfe", column, ["method"], colours)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{solver} (fixed step)", fontsize=9)
            ax.set_xlabel("NFE (function evaluations)")
        axes[0][0].set_ylabel(ylabel)
        _finish(fig, list(axes[0]))
        paths.append(_save(fig, out / name))
    return paths


def nfe_vs_tolerance(runs: pd.DataFrame, out: Path, colours: Mapping[str, str] | None = None) -> list[Path]:
    adaptive = runs[runs["tol"].notna() & (runs["status"] == "ok")].copy()
    if adaptive["tol"].nunique() < 2:
        return []
    adaptive["method"] = _methods(adaptive)
    adaptive["nfe"] = adaptive["nfe"].astype(float)
    colours = _colours(adaptive, colours)
    with_error = not adaptive["ode_error"].isna().all()  # no reference solve: the NFE panel alone
    fig, axes = plt.subplots(
        1, 2 if with_error else 1, figsize=(10 if with_error else 5.6, 3.4), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    _lines(axes[0], adaptive, "tol", "nfe", ["method", "solver"], colours)
    axes[0].set_ylabel("NFE (function evaluations)")
    axes[0].set_title("cost of an adaptive solve", fontsize=9)
    if with_error:
        _lines(axes[1], adaptive, "tol", "ode_error", ["method", "solver"], colours)
        axes[1].set_ylabel(ODE_ERROR_LABEL)
        axes[1].set_yscale("log")
        axes[1].set_title("its error", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tolerance (atol = rtol)")
    _finish(fig, list(axes))
    return [_save(fig, out / "nfe_vs_tolerance.png")]


def quality_vs_step(runs: pd.DataFrame, out: Path, colours: Mapping[str, str] | None = None) -> list[Path]:
    ok = runs[runs["status"] == "ok"].copy()
    if ok["train_step"].nunique() < 2:
        return []
    ok["method"] = _methods(ok)
    ok["nfe"] = ok["nfe"].astype(float)
    ok["train_step"] = ok["train_step"].astype(float)
    colours = _colours(ok, colours)
    adaptive = ok[ok["tol"].notna()]
    if adaptive.empty:
        adaptive = ok
    first_tol = adaptive["tol"].min() if adaptive["tol"].notna().any() else None
    chosen = adaptive[adaptive["tol"] == first_tol] if first_tol is not None else adaptive
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    _lines(axes[0], chosen, "train_step", "sample_metric", ["method"], colours)
    axes[0].set_ylabel(_metric_label(chosen))
    _lines(axes[1], chosen, "train_step", "nfe", ["method"], colours)
    axes[1].set_ylabel("NFE (function evaluations)")
    setting = SolverSetting.of(chosen.iloc[0].to_dict()).label
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_title(setting, fontsize=9)
    axes[0].set_yscale("log")
    _finish(fig, list(axes))
    return [_save(fig, out / "quality_vs_step.png")]


#: Markers of the solver settings in the per-method metric figure (a method's colour, a setting's marker).
SETTING_MARKERS = "osD^vP*Xhp<>"


def _final_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """The summary (tables.summarize) of the last checkpoint's evaluations, with each cell's method and setting."""
    final = runs[runs["train_step"] == runs["train_step"].max()]
    table = summarize(final)
    table = table[table["seeds"] > 0].copy()
    table["method"] = method_labels(table)
    table["setting"] = [SolverSetting.of(r).label for r in table[list(SETTING_FIELDS)].to_dict("records")]
    if table["dequant_draws"].nunique() > 1:
        table["setting"] += " K" + table["dequant_draws"].astype(str)
    return table


def _most_accurate(table: pd.DataFrame) -> pd.DataFrame:
    """Each solver's most accurate settings (its smallest tolerance, or its largest NFE budget): how a metric
    moves over budgets and tolerances is the line figures' job; this one compares the methods."""
    keep = []
    for _, rows in table.groupby("solver", dropna=False, sort=False):
        keep.append(rows[rows["tol"] == rows["tol"].min()] if rows["tol"].notna().any()
                    else rows[rows["nfe_budget"] == rows["nfe_budget"].max()])  # fmt: skip
    return pd.concat(keep)


def metrics_per_method(runs: pd.DataFrame, out: Path, colours: Mapping[str, str] | None = None) -> list[Path]:
    """One panel per metric (EvalRow's result fields the sweep measured): per method, in the report's order and
    colours, and per solver setting (a marker each, side by side; each solver's most accurate ones) the mean over
    seeds at the final checkpoint with its 95 % t-interval where two or more seeds give one (a bare point for one
    seed); for a value that is never negative, the geometric mean with its interval, as the tables give it."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return []
    every = _final_summary(ok)
    table = _most_accurate(every)
    fields = [f for f in shown_value_fields()
              if is_result(f) and value_label(f, table) and table[f"{f.name}_mean"].notna().any()]  # fmt: skip
    if table.empty or not fields:
        return []
    colours = _colours(table, colours)
    methods = [m for m in colours if m in set(table["method"])]
    settings = list(dict.fromkeys(table["setting"]))
    markers = {s: SETTING_MARKERS[i % len(SETTING_MARKERS)] for i, s in enumerate(settings)}
    width = 0.7 / len(settings)
    panel = min(8.0, max(3.0, 0.55 * len(methods) * max(1.0, len(settings) / 3) + 1.2))
    fig, axes = plt.subplots(1, len(fields), figsize=(panel * len(fields) + 1.6, 3.6), squeeze=False, layout="constrained")
    for ax, f in zip(axes[0], fields, strict=True):
        for _, cell in table.iterrows():
            mean, low, high = cell[f"{f.name}_mean"], cell[f"{f.name}_ci_low"], cell[f"{f.name}_ci_high"]
            if pd.isna(mean):
                continue
            x = methods.index(cell["method"]) + (settings.index(cell["setting"]) - (len(settings) - 1) / 2) * width
            interval = int(cell[f"{f.name}_n"]) >= 2 and pd.notna(low) and pd.notna(high)
            if interval and is_positive(f.name) and low > 0:  # the geometric mean's interval (orchestrator.stats): its centre
                mean = float(np.sqrt(low * high))
            bars = ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]] if interval else None,
                               fmt=markers[cell["setting"]], color=colours[cell["method"]], ms=5, capsize=3, lw=1.2)  # fmt: skip
            bars.lines[0].set_gid(f"{cell['method']} | {cell['setting']}")  # names the point for a reader of the Figure
        ax.set_xticks(range(len(methods)), methods, rotation=30 if len(methods) > 3 else 0, ha="right" if len(methods) > 3 else "center")
        for tick, method in zip(ax.get_xticklabels(), methods, strict=True):
            tick.set_color(colours[method])
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylabel(value_label(f, table))
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(labelsize=8)
    handles = [plt.Line2D([], [], marker=markers[s], color="0.35", ls="none", label=s) for s in settings]
    fig.legend(handles=handles, title="solver setting", loc="outside right upper", fontsize=7, title_fontsize=7, frameon=False)
    which = "" if len(table) == len(every) else "each solver at its most accurate setting; "
    fig.suptitle(figure_title(f"{which}mean over seeds (geometric for values above 0), 95 % t-interval (2 or more seeds)", int(table["train_step"].max())),
                 fontsize=10)  # fmt: skip
    return [_save(fig, out / "metrics_per_method.png")]


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
    samples: dict[str, np.ndarray | dict[str, np.ndarray]],
    out: Path,
    runs: pd.DataFrame | None = None,
    data: np.ndarray | None = None,
    colours: Mapping[str, str] | None = None,
) -> list[Path]:
    """The final-step samples, one panel per method (in the report's order, titled in its colour) after a panel
    of the data's own samples (`data`, where the trials stored them): the same drawing as a trial's MLflow
    figure (orchestrator.plots.draw_samples). A value may be {setting label: array} (the panel names the setting
    and, given `runs`, its NFE) or a bare array."""
    if not samples:
        return []
    names = sorted(samples)
    panels, titles = {}, {}
    if data is not None:
        panels[DATA_PANEL], titles[DATA_PANEL] = data, DATA_TITLE
    for name in names:
        value = samples[name]
        label = None
        if isinstance(value, dict):
            label = next((k for k in sorted(value) if "tol" in k), next(iter(sorted(value))))
            value = value[label]
        panels[name] = value
        titles[name] = name if label is None else f"{name} · " + panel_title(label, _nfe_of(runs, name, label))
    step = int(runs["train_step"].max()) if runs is not None and not runs.empty else None
    fig = draw_samples(panels, titles=titles, suptitle=figure_title("final samples", step), max_images=36,
                       colours=colours if colours is not None else method_colours(names))  # fmt: skip
    return [_save(fig, out / "samples_per_method.png")]


def density_over_t(
    trajectories: dict[str, dict[str, np.ndarray]], out: Path, colours: Mapping[str, str] | None = None
) -> list[Path]:
    """One row per method (in the report's order, named in its colour), one column per time: how each path
    carries noise to data (2-D only). Smoothed densities (the sample figure's drawing) in one window (fitted to
    the rows, `shared_extent`) and on one colour scale for every panel, read off the colour bar, so rows and
    times compare."""
    if not trajectories:
        return []
    names = sorted(trajectories)
    colours = colours if colours is not None else method_colours(names)
    columns = len(next(iter(trajectories.values()))["t"])
    fig, axes = plt.subplots(len(names), columns, figsize=(2.0 * columns + 1.4, 2.1 * len(names) + 0.4), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")  # fmt: skip
    extent = shared_extent([np.concatenate(trajectories[name]["x"][:columns]) for name in names])
    vmax = density_peak([trajectories[name]["x"][c] for name in names for c in range(columns)], extent)
    image = None
    for r, name in enumerate(names):
        times = trajectories[name]["t"]
        for c in range(columns):
            ax = axes[r][c]
            image = draw_2d(ax, trajectories[name]["x"][c], extent, kind="density", vmax=vmax)
            note_outside(ax, trajectories[name]["x"][c], extent)
            ax.set_title(f"{name}, t = {times[c]:.2f}" if c == 0 else f"t = {times[c]:.2f}", fontsize=8,
                         color=colours.get(name, "black") if c == 0 else "black")  # fmt: skip
            if c > 0:
                ax.set_ylabel("")
            if r < len(names) - 1:
                ax.set_xlabel("")
    density_colour_bar(fig, image, axes)
    fig.suptitle("density over t (reference solve, final training step)", fontsize=10)
    return [_save(fig, out / "density_over_t.png")]


def build_report(
    runs: pd.DataFrame,
    out_dir: Path,
    sweep: str,
    samples: dict[str, np.ndarray] | None = None,
    trajectories: dict[str, dict[str, np.ndarray]] | None = None,
    data: np.ndarray | None = None,
) -> Report:
    """report.md with its figures: the summary table, then the verdicts with the per-method metric figure right
    below them, then the other figures; one method colour map for all (`_report_colours`)."""
    make_folder(out_dir, "the report's folder")
    colours = _report_colours(runs, samples or {}, trajectories or {})
    beside_verdicts = metrics_per_method(runs, out_dir, colours)
    plots: list[Path] = []
    plots += samples_per_method(samples or {}, out_dir, runs, data, colours)
    plots += density_over_t(trajectories or {}, out_dir, colours)
    plots += error_and_quality_vs_nfe(runs, out_dir, colours)
    plots += nfe_vs_tolerance(runs, out_dir, colours)
    plots += quality_vs_step(runs, out_dir, colours)
    text = io.StringIO()
    text.write(f"# Sweep `{sweep}`\n\n")
    ok, failed = int((runs["status"] == "ok").sum()), int((runs["status"] != "ok").sum())
    text.write(f"{runs['trial_id'].nunique()} trainings, {ok} evaluations ok, {failed} failed.\n\n")
    final = runs[runs["train_step"] == runs["train_step"].max()]
    summary = summarize(final)
    text.write(f"## Summary (final checkpoint)\n\n{cell_legend(summary)}\n\n" + to_markdown(summary) + "\n\n")
    if runs["train_step"].nunique() > 1:
        text.write("## Over training\n\n" + to_markdown(summarize(runs)) + "\n\n")
    text.write("## The papers' claims on this sweep\n\n"
               "Paired by seed, 95 % t-interval of the mean difference A - B (orchestrator/scorecard.py):\n\n"
               + scorecard_markdown(judge(runs)) + "\n\n")  # fmt: skip
    _images(text, beside_verdicts)
    if plots:
        text.write("## Figures\n\n")
        _images(text, plots)
    markdown = out_dir / "report.md"
    markdown.write_text(text.getvalue())
    return Report(directory=out_dir, markdown=markdown, plots=beside_verdicts + plots)


def _report_colours(runs: pd.DataFrame, *by_method: Iterable[str]) -> dict[str, str]:
    """The report's method colours: every method of the rows and of the sample and trajectory artifacts."""
    return method_colours([*method_labels(runs), *(name for names in by_method for name in names)])


def _images(text: io.StringIO, plots: list[Path]) -> None:
    text.writelines(f"![{plot.stem}]({plot.name})\n\n" for plot in plots)
