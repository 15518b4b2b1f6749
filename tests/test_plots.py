"""The figures a reader has to trust: labelled axes, the solver setting and step named, colour kept, readable ticks.

Each test renders a figure (or reopens the PNG) and checks what a reader would see.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from orchestrator import plots, report  # noqa: E402

LABELS = ["dopri5_tol1e-05", "euler_nfe8", "rk4_nfe16"]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[plt.Figure]:
    """Every figure that orchestrator.plots / orchestrator.report save, kept open for inspection."""
    figures: list[plt.Figure] = []

    def keep(save):
        def wrapper(fig, path, *args, **kwargs):
            out = save(fig, path, *args, **kwargs)  # a closed Figure can still be inspected
            figures.append(fig)
            return out

        return wrapper

    monkeypatch.setattr(plots, "_save", keep(getattr(plots, "_save", None)), raising=False)
    monkeypatch.setattr(report, "_save", keep(report._save))
    return figures


def _two_d(n: int = 2000, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, 2), generator=g) * scale + shift


def _colour_images(n: int = 16) -> np.ndarray:
    """(N, 3, 8, 8) in [-1, 1]: red, green and blue squares (no channel equals another)."""
    x = -np.ones((n, 3, 8, 8), dtype=np.float32)
    for i in range(n):
        x[i, i % 3] = 1.0
    return x


def _renderer(fig: plt.Figure):
    """A fresh Agg canvas (closing a pyplot figure detaches its own), drawn so layout and boxes are final."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _sample_axes(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.get_title()]


def _is_colour(png: Path) -> bool:
    rgb = mpimg.imread(png)[..., :3].astype(float)
    return float(np.abs(rgb[..., 0] - rgb[..., 1]).max()) > 0.5 or float(np.abs(rgb[..., 1] - rgb[..., 2]).max()) > 0.5


# --- the trial's sample figure ---------------------------------------------------------------------------------


def test_2d_panels_have_labelled_axes_setting_titles_and_step(tmp_path: Path, captured):
    samples = {label: _two_d() for label in LABELS}
    plots.save_samples(samples, tmp_path / "s.png", title="step 200", nfe={"dopri5_tol1e-05": 74, "euler_nfe8": 8})
    (fig,) = captured
    panels = _sample_axes(fig)
    assert len(panels) == 3
    for ax, label in zip(panels, LABELS, strict=True):
        assert label in ax.get_title()
        assert ax.get_xlabel(), "every 2-D panel labels its x axis"
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()], "2-D panels need tick labels"
    assert panels[0].get_ylabel()
    assert "74" in panels[0].get_title() and "NFE" in panels[0].get_title()
    assert "training step 200" in fig._suptitle.get_text()


def test_2d_panel_limits_cover_the_data_and_reference(tmp_path: Path, captured):
    wide = _two_d(shift=6.0, scale=2.0)  # mostly far outside a fixed [-4.5, 4.5] window
    reference = _two_d(shift=-1.0) * 0.5
    plots.save_samples({"euler_nfe8": wide}, tmp_path / "s.png", step=10, reference=reference)
    (fig,) = captured
    (ax,) = _sample_axes(fig)
    x0, x1 = sorted(ax.get_xlim())
    y0, y1 = sorted(ax.get_ylim())
    both = np.concatenate([wide.numpy(), reference.numpy()])
    lo, hi = np.quantile(both, 0.005, axis=0), np.quantile(both, 0.995, axis=0)
    assert x0 <= lo[0] and x1 >= hi[0] and y0 <= lo[1] and y1 >= hi[1]
    assert x1 - x0 < 60  # fitted to the data, not an arbitrary huge window


def test_2d_density_is_smooth_not_speckle(captured):
    """The density shown is smoothed: neighbouring cells differ little compared with the peak."""
    fig = plots.draw_samples({"euler_nfe8": _two_d(n=2000).numpy()}, kind="density")
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert images
    a = np.asarray(images[0].get_array(), dtype=float)
    roughness = np.abs(np.diff(a, axis=0)).mean() / (a.max() + 1e-12)
    assert roughness < 0.02, roughness
    plt.close(fig)


def test_rgb_sample_grid_keeps_colour(tmp_path: Path):
    x = torch.from_numpy(_colour_images())
    plots.save_samples({"euler_nfe8": x}, tmp_path / "rgb.png", step=5)
    assert _is_colour(tmp_path / "rgb.png")


def test_gray_digits_stay_gray(tmp_path: Path):
    x = torch.rand((9, 1, 8, 8)) * 2 - 1
    plots.save_samples({"euler_nfe8": x}, tmp_path / "gray.png", step=5)
    assert not _is_colour(tmp_path / "gray.png")


# --- the loss curve ----------------------------------------------------------------------------------------------


def test_loss_curve_narrow_log_range_has_readable_ticks(tmp_path: Path, captured):
    losses = [(s, 1.2 + 0.3 * np.exp(-s / 300)) for s in range(1, 2001, 10)]  # 1.2 .. 1.5: < 1 decade
    plots.save_loss_curve(losses, tmp_path / "loss.png", title="fm-ot-seed0")
    (fig,) = captured
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    visible = [t for t in ax.get_yticklabels(which="both") if t.get_text() and 1.2 <= t.get_position()[1] <= 1.5]
    assert len(texts) >= 2 and len(visible) >= 2, texts
    assert "training step" in ax.get_xlabel() and "loss" in ax.get_ylabel()
    assert "fm-ot-seed0" in ax.get_title()
    # No tick label sticks out of the saved image.
    renderer = _renderer(fig)
    (y0, y1), (x0, x1) = ax.get_ylim(), ax.get_xlim()
    shown = [t for t in ax.get_yticklabels(which="both") if y0 <= t.get_position()[1] <= y1]
    shown += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
    for label in shown:
        if label.get_text() and label.get_visible():
            box = label.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


@pytest.mark.parametrize("losses", [[(s, 1.2 + 0.3 * np.exp(-s / 300)) for s in range(1, 2001, 10)],
                                    [(s, 10 * np.exp(-s / 300) + 0.01) for s in range(1, 3001, 10)],
                                    [(s, 1 - s / 1000) for s in range(1, 3001, 10)]],
                         ids=["narrow_log", "wide_log", "linear"])  # fmt: skip
def test_loss_strip_fits_a_run_description_with_labelled_axes_and_few_ticks(tmp_path: Path, captured, losses):
    """MLflow shows a run's description 100 px tall: the strip is 84 px, every label inside it, three y ticks."""
    plots.save_loss_strip(losses, tmp_path / "strip.png", title="ot-fm-independent-s0")
    (fig,) = captured
    (ax,) = fig.axes
    assert plt.imread(tmp_path / "strip.png").shape[:2] == (plots.LOSS_STRIP_PX[1], plots.LOSS_STRIP_PX[0])
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "loss"
    renderer = _renderer(fig)
    (y0, y1) = sorted(ax.get_ylim())
    ticks = [t for t in ax.get_yticklabels() if t.get_text() and y0 <= t.get_position()[1] <= y1]
    assert 2 <= len(ticks) <= 3, [t.get_text() for t in ticks]
    for text in [*ticks, ax.xaxis.label, ax.yaxis.label, *ax.texts]:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, text


def test_loss_curve_with_negative_losses_is_linear(tmp_path: Path, captured):
    plots.save_loss_curve([(1, 0.5), (2, -0.2), (3, -0.4)], tmp_path / "loss.png")
    (fig,) = captured
    assert fig.axes[0].get_yscale() == "linear"


# --- the report -------------------------------------------------------------------------------------------------


def _runs() -> pd.DataFrame:
    rows = []
    for path in ("ot", "vp"):
        for seed in (0, 1):
            for solver, budgets in (("euler", (4, 8, 16)), ("rk4", (4, 8, 16))):
                for b in budgets:
                    rows.append(dict(
                        trial_id=f"{path}-s{seed}", path=path, objective="fm", coupling="independent", seed=seed,
                        train_step=100, solver=solver, tol=np.nan, nfe_budget=b, nfe=b, nll=1.0, nll_unit="nats",
                        sample_metric=1.0 / b + 0.01 * seed, sample_metric_name="sliced_w2", ode_error=1.0 / b**2,
                        status="ok",
                    ))  # fmt: skip
            for tol in (1e-3, 1e-4, 1e-5):
                rows.append(dict(
                    trial_id=f"{path}-s{seed}", path=path, objective="fm", coupling="independent", seed=seed,
                    train_step=100, solver="dopri5", tol=tol, nfe_budget=np.nan, nfe=-20 * np.log10(tol), nll=1.0,
                    nll_unit="nats", sample_metric=0.1, sample_metric_name="sliced_w2", ode_error=tol, status="ok",
                ))  # fmt: skip
    return pd.DataFrame(rows)


def test_report_line_plots_label_axes_with_units_and_title_solvers(tmp_path: Path, captured):
    runs = _runs()
    report.error_and_quality_vs_nfe(runs, tmp_path)
    report.nfe_vs_tolerance(runs, tmp_path)
    assert len(captured) == 3
    error, quality, tolerance = captured
    for fig in captured:
        for ax in fig.axes:
            if not ax.has_data():
                continue
            assert ax.get_xlabel(), fig
            if ax.get_ylabel():  # a shared y axis labels (and ticks) its first panel only
                assert [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
    error_axes = [ax for ax in error.axes if ax.has_data()]
    assert {ax.get_title() for ax in error_axes} >= {"euler", "rk4"} or all(
        any(s in ax.get_title() for s in ("euler", "rk4")) for ax in error_axes
    )
    assert "MSE" in error_axes[0].get_ylabel() and "reference" in error_axes[0].get_ylabel()
    assert all("NFE" in ax.get_xlabel() for ax in error_axes)
    assert "sliced_w2" in [ax for ax in quality.axes if ax.has_data()][0].get_ylabel()
    tol_axes = [ax for ax in tolerance.axes if ax.has_data()]
    assert all("atol = rtol" in ax.get_xlabel() for ax in tol_axes)
    assert "MSE" in tol_axes[-1].get_ylabel()


def test_report_legend_does_not_cover_data(tmp_path: Path, captured):
    report.error_and_quality_vs_nfe(_runs(), tmp_path)
    for fig in captured:
        renderer = _renderer(fig)
        legends = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg] + list(fig.legends)
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                for line in ax.get_lines():
                    xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
                    inside = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
                    assert not inside.any(), "the legend covers data points"


def test_report_samples_keep_colour_and_name_setting_and_step(tmp_path: Path, captured):
    samples = {"FM-OT": {"dopri5_tol1e-05": _colour_images()}, "FM-VP": {"dopri5_tol1e-05": _colour_images()}}
    (png,) = report.samples_per_method(samples, tmp_path, runs=_runs())
    assert _is_colour(png)
    fig = captured[-1]
    panels = _sample_axes(fig)
    assert len(panels) == 2
    assert all("dopri5_tol1e-05" in ax.get_title() for ax in panels)
    assert "training step 100" in fig._suptitle.get_text()


def test_report_samples_accept_plain_arrays_and_draw_axes(tmp_path: Path, captured):
    """`samples` as load_samples gave it before (method -> array): still drawn, 2-D with labelled axes."""
    (png,) = report.samples_per_method({"FM-OT": _two_d().numpy(), "FM-VP": _two_d(shift=1).numpy()}, tmp_path)
    assert png.exists()
    panels = _sample_axes(captured[-1])
    assert len(panels) == 2 and all(ax.get_xlabel() for ax in panels)


def test_density_over_t_is_smoothed_with_labelled_axes(tmp_path: Path, captured):
    states = np.stack([_two_d(n=1000, scale=1 + t).numpy() for t in range(3)])
    trajectories = {"FM-OT": {"t": np.array([0.0, 0.5, 1.0]), "x": states}}
    report.density_over_t(trajectories, tmp_path)
    fig = captured[-1]
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes) == 3
    assert any(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes)
    a = np.asarray(axes[0].get_images()[0].get_array(), dtype=float)
    assert np.abs(np.diff(a, axis=0)).mean() / (a.max() + 1e-12) < 0.02
    assert all(ax.get_xticklabels() and any(t.get_text() for t in ax.get_xticklabels()) for ax in axes[-1:])


# --- the report's methods: one order, one colour, intervals, shared density scales ----------------------------


def _method_runs() -> pd.DataFrame:
    """runs.parquet's frame (EvalRow's columns): FM-OT and FM-VP over 3 seeds, SM-VP over one; four settings."""
    from orchestrator.rows import EvalRow
    from orchestrator.tables import rows_frame

    rng = np.random.default_rng(0)
    rows = []
    for path, objective, seeds in (("vp", "sm", (0,)), ("ot", "fm", (0, 1, 2)), ("vp", "fm", (0, 1, 2))):
        for seed in seeds:
            for solver, tol, budget, nfe in (("dopri5", 1e-5, None, 80), ("euler", None, 4, 4), ("euler", None, 8, 8),
                                             ("rk4", None, 16, 16)):  # fmt: skip
                rows.append(EvalRow(
                    trial_id=f"{path}-{objective}-s{seed}", dataset="checkerboard", model="mlp", path=path,
                    objective=objective, coupling="independent", seed=seed, train_step=100, solver=solver, tol=tol,
                    nfe_budget=budget, nfe=nfe + int(rng.integers(0, 9)) * (tol is not None), nll=2.9 + rng.normal(0, 0.05),
                    nll_unit="nats", sample_metric=0.1 * 8 / nfe + rng.normal(0, 0.01), sample_metric_name="sliced_w2",
                    ode_error=1e-3 / nfe, status="ok",
                ))  # fmt: skip
    return rows_frame(rows)


def _colour_of_line(fig: plt.Figure) -> dict[str, str]:
    from matplotlib.colors import to_hex

    return {line.get_label(): to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")}  # fmt: skip


def test_report_metric_figure_orders_colours_and_intervals_methods_as_the_other_figures(tmp_path: Path, captured):
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    runs = _method_runs()
    methods = ["FM-OT", "FM-VP", "SM-VP"]
    data = _two_d(n=4000).numpy()  # above SCATTER_MAX: density panels
    samples = {m: {"dopri5_tol1e-05": _two_d(n=4000, shift=i).numpy()} for i, m in enumerate(methods)}
    built = report.build_report(runs, tmp_path, "demo", samples, None, data)
    figures = {path.stem: fig for path, fig in zip(built.plots, captured, strict=True)}
    metric_fig, sample_fig = figures["metrics_per_method"], figures["samples_per_method"]
    panels = [ax for ax in metric_fig.axes if ax.has_data()]
    assert [ax.get_ylabel() for ax in panels] == ["NLL (nats)", "sliced_w2", "NFE"]  # one per metric measured
    # The same methods, in the same order and colour, as the samples figure and the line plots.
    sample_titles = [ax for ax in _sample_axes(sample_fig) if ax.get_images()]
    assert sample_titles[0].get_title() == plots.DATA_TITLE  # the data's own samples first
    title_colour = {ax.get_title().split(" · ")[0]: to_hex(ax.title.get_color()) for ax in sample_titles[1:]}
    assert list(title_colour) == methods
    line_colour = _colour_of_line(figures["error_vs_nfe"])
    assert set(line_colour) == set(methods)
    for ax in panels:
        ticks = ax.get_xticklabels()
        assert [t.get_text() for t in ticks] == methods
        assert {t.get_text(): to_hex(t.get_color()) for t in ticks} == title_colour == line_colour
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == len(methods) * 3  # every method x solver, at its most accurate setting
        assert {c.lines[0].get_gid().split(" | ")[1] for c in bars} == {"dopri5_tol1e-05", "euler_nfe8", "rk4_nfe16"}
        for c in bars:
            method = c.lines[0].get_gid().split(" | ")[0]
            assert to_hex(c.lines[0].get_color()) == title_colour[method]
            assert c.has_yerr == (method != "SM-VP"), method  # an interval where 2+ seeds give one
    # Density panels: one window and one colour scale, read off a colour bar.
    images = [im for ax in sample_titles for im in ax.get_images()]
    assert len({im.get_clim() for im in images}) == 1 and images[0].get_clim()[0] == 0
    assert len({(ax.get_xlim(), ax.get_ylim()) for ax in sample_titles}) == 1
    assert [ax for ax in sample_fig.axes if ax.get_label() == "<colorbar>"]
    assert "![metrics_per_method](metrics_per_method.png)" in built.markdown.read_text().split("## Figures")[0]


def test_density_over_t_rows_share_axes_and_one_colour_bar(tmp_path: Path, captured):
    """Rows of very different spread are drawn in one window and on one colour scale, with its colour bar; a row
    scattered far (a diverging solve) does not widen the window for all: its panels say what falls outside."""
    times = np.array([0.0, 0.5, 1.0])
    trajectories = {
        name: {"t": times, "x": np.stack([_two_d(n=1000, scale=scale * (1 + t)).numpy() for t in times])}
        for name, scale in (("FM-OT", 1.0), ("FM-VP", 3.0), ("SM-VP", 100.0))
    }
    report.density_over_t(trajectories, tmp_path)
    fig = captured[-1]
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 9
    x0, x1 = panels[0].get_xlim()
    assert 2 * 3.0 * 2 * 2 < x1 - x0 < 100, (x0, x1)  # FM-VP's spread at t = 1 (+-2 sd) fits; SM-VP's does not
    notes = [[t.get_text() for t in ax.texts] for ax in panels]
    assert all(any("outside" in n for n in row) for row in notes[6:]) and not any(notes[:3]), notes
    assert len({(ax.get_xlim(), ax.get_ylim()) for ax in panels}) == 1
    assert all(panels[0].get_shared_x_axes().joined(panels[0], ax) for ax in panels)
    assert all(panels[0].get_shared_y_axes().joined(panels[0], ax) for ax in panels)
    assert len({ax.get_images()[0].get_clim() for ax in panels}) == 1
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "density" in bar.get_ylabel()


def test_a_data_panel_with_no_image_is_left_out_not_a_division_by_zero():
    """A one-image folder keeps no data sample for the figure: drawing the samples failed the whole trial
    (ZeroDivisionError in the image grid) after its training and evaluation had succeeded."""
    import numpy as np

    from orchestrator.plots import draw_samples, image_grid

    assert image_grid(np.zeros((0, 1, 8, 8))).shape[2] == 3
    figure = draw_samples({"data": np.zeros((0, 1, 8, 8)), "FM-OT": np.zeros((4, 1, 8, 8))})
    assert [ax.get_title() for ax in figure.axes] == ["FM-OT"]
