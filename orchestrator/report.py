"""`fmx report`: a finished sweep's Parquet (and sample artifacts) -> Markdown tables and PNG plots.

Which plots appear depends on what the sweep varied: fixed-step NFE budgets give error/quality vs
NFE, several tolerances give NFE vs tolerance, several checkpoints give quality and NFE vs step.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.tables import method_label, summarize, to_markdown  # noqa: E402


@dataclass
class Report:
    directory: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)


def _methods(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [method_label(p, o, c) for p, o, c in zip(frame["path"], frame["objective"], frame["coupling"], strict=True)],
        index=frame.index,
    )


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
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


def error_and_quality_vs_nfe(runs: pd.DataFrame, out: Path) -> list[Path]:
    fixed = runs[runs["nfe_budget"].notna() & (runs["status"] == "ok")].copy()
    if fixed["nfe_budget"].nunique() < 2:
        return []
    fixed["method"] = _methods(fixed)
    fixed["nfe"] = fixed["nfe"].astype(float)
    paths = []
    for column, ylabel, name in (
        ("ode_error", "ODE error (MSE vs reference)", "error_vs_nfe.png"),
        ("sample_metric", str(fixed["sample_metric_name"].dropna().iloc[0]), "quality_vs_nfe.png"),
    ):
        if fixed[column].isna().all():  # no reference solve (eval.reference_tol: null) or no sample metric
            continue
        solvers = sorted(fixed["solver"].unique())
        fig, axes = plt.subplots(1, len(solvers), figsize=(4.2 * len(solvers), 3.4), squeeze=False, sharey=True)
        for ax, solver in zip(axes[0], solvers, strict=True):
            _lines(ax, fixed[fixed["solver"] == solver], "nfe", column, ["method"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(solver)
            ax.set_xlabel("NFE")
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=7)
        paths.append(_save(fig, out / name))
    return paths


def nfe_vs_tolerance(runs: pd.DataFrame, out: Path) -> list[Path]:
    adaptive = runs[runs["tol"].notna() & (runs["status"] == "ok")].copy()
    if adaptive["tol"].nunique() < 2:
        return []
    adaptive["method"] = _methods(adaptive)
    adaptive["nfe"] = adaptive["nfe"].astype(float)
    with_error = not adaptive["ode_error"].isna().all()  # no reference solve: the NFE panel alone
    fig, axes = plt.subplots(1, 2 if with_error else 1, figsize=(9 if with_error else 4.5, 3.4), squeeze=False)
    axes = axes[0]
    _lines(axes[0], adaptive, "tol", "nfe", ["method", "solver"])
    axes[0].set_ylabel("NFE")
    if with_error:
        _lines(axes[1], adaptive, "tol", "ode_error", ["method", "solver"])
        axes[1].set_ylabel("ODE error")
        axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("atol = rtol")
    axes[0].legend(fontsize=7)
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
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    _lines(axes[0], chosen, "train_step", "sample_metric", ["method"])
    axes[0].set_ylabel(str(chosen["sample_metric_name"].dropna().iloc[0]))
    _lines(axes[1], chosen, "train_step", "nfe", ["method"])
    axes[1].set_ylabel(f"NFE ({chosen['solver'].iloc[0]}, tol {first_tol:g})" if first_tol else "NFE")
    for ax in axes:
        ax.set_xlabel("training step")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    return [_save(fig, out / "quality_vs_step.png")]


def samples_per_method(samples: dict[str, np.ndarray], out: Path) -> list[Path]:
    if not samples:
        return []
    names = sorted(samples)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.9), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        x = samples[name]
        if x.ndim == 2:
            bins = int(np.clip(np.sqrt(len(x)) / 1.5, 30, 150))
            ax.hist2d(x[:, 0], x[:, 1], bins=bins, range=[[-4.5, 4.5], [-4.5, 4.5]], cmap="viridis")
            ax.set_aspect("equal")
        else:
            n = min(36, x.shape[0])
            side = int(np.ceil(np.sqrt(n)))
            h, w = x.shape[-2:]
            grid = -np.ones((side * h, side * w))
            for i in range(n):
                r, c = divmod(i, side)
                grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = x[i, 0]
            ax.imshow((np.clip(grid, -1, 1) + 1) / 2, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return [_save(fig, out / "samples_per_method.png")]


def _final_artifacts(tracking_uri: str, runs: pd.DataFrame, prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """`samples/<prefix>_step<final>.npz` of each seed-0 trial, by method label (trials without one skipped)."""
    import tempfile

    from orchestrator.tracking import client

    mlflow_client = client(tracking_uri)
    out: dict[str, dict[str, np.ndarray]] = {}
    final = runs["train_step"].max()
    for _, row in runs[runs["seed"] == runs["seed"].min()].drop_duplicates("trial_id").iterrows():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow_client.download_artifacts(row["mlflow_run_id"], f"samples/{prefix}_step{final}.npz", tmp)
                out[method_label(row["path"], row["objective"], row["coupling"])] = dict(np.load(local))
        except Exception:  # an older run, or a failed trial, has no such artifact
            continue
    return out


def load_samples(tracking_uri: str, runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Final-step samples of seed-0 trials (the best-tolerance adaptive setting), from MLflow artifacts."""
    out: dict[str, np.ndarray] = {}
    for method, data in _final_artifacts(tracking_uri, runs, "samples").items():
        label = next((k for k in sorted(data) if "tol" in k), next(iter(sorted(data)), None))
        if label is not None:
            out[method] = data[label]
    return out


def load_trajectories(tracking_uri: str, runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Final-step reference-solve states at several t (2-D sweeps), from MLflow artifacts."""
    return _final_artifacts(tracking_uri, runs, "trajectory")


def density_over_t(trajectories: dict[str, dict[str, np.ndarray]], out: Path) -> list[Path]:
    """One row per method, one column per time: how each path carries noise to data (2-D only)."""
    if not trajectories:
        return []
    names = sorted(trajectories)
    columns = len(next(iter(trajectories.values()))["t"])
    fig, axes = plt.subplots(len(names), columns, figsize=(1.9 * columns, 1.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        times, states = trajectories[name]["t"], trajectories[name]["x"]
        for c in range(columns):
            ax = axes[r][c]
            x = states[c]
            ax.hist2d(x[:, 0], x[:, 1], bins=80, range=[[-4.5, 4.5], [-4.5, 4.5]], cmap="viridis")
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {times[c]:.2f}", fontsize=9)
        axes[r][0].set_ylabel(name, fontsize=8)
    return [_save(fig, out / "density_over_t.png")]


def build_report(
    runs: pd.DataFrame,
    out_dir: Path,
    sweep: str,
    samples: dict[str, np.ndarray] | None = None,
    trajectories: dict[str, dict[str, np.ndarray]] | None = None,
) -> Report:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    plots += samples_per_method(samples or {}, out_dir)
    plots += density_over_t(trajectories or {}, out_dir)
    plots += error_and_quality_vs_nfe(runs, out_dir)
    plots += nfe_vs_tolerance(runs, out_dir)
    plots += quality_vs_step(runs, out_dir)
    text = io.StringIO()
    text.write(f"# Sweep `{sweep}`\n\n")
    ok, failed = int((runs["status"] == "ok").sum()), int((runs["status"] != "ok").sum())
    text.write(f"{runs['trial_id'].nunique()} trainings, {ok} evaluations ok, {failed} failed.\n\n")
    final = runs[runs["train_step"] == runs["train_step"].max()]
    text.write("## Summary (final checkpoint; mean ± std over seeds)\n\n" + to_markdown(summarize(final)) + "\n\n")
    if runs["train_step"].nunique() > 1:
        text.write("## Over training\n\n" + to_markdown(summarize(runs)) + "\n\n")
    for plot in plots:
        text.write(f"![{plot.stem}]({plot.name})\n\n")
    markdown = out_dir / "report.md"
    markdown.write_text(text.getvalue())
    return Report(directory=out_dir, markdown=markdown, plots=plots)
