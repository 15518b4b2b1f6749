"""Matplotlib figures logged as MLflow artifacts (headless: the Agg backend), and the sample drawing that the
sweep report (orchestrator.report) shares, so a trial's MLflow figure and the report's are the same picture.

2-D samples: a Gaussian-smoothed 2-D histogram (or a scatter) over the data's own range, axes x₁/x₂ with ticks;
the density panels of one figure share one window and one colour scale, read off its colour bar.
Images (N, C, H, W) in [-1, 1]: a grid, in colour for C = 3, gray for C = 1.
Methods keep one colour in every figure (`method_colours`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

DENSITY_BINS = 160
DENSITY_SIGMA = 2.0  # in bins
SCATTER_MAX = 3000  # kind="auto": a scatter up to this many points per panel, a smoothed density above
DENSITY_LABEL = "density (smoothed histogram)"
#: The panel of the data's own samples in a samples figure, and its key in a step's samples .npz (no solver
#: setting's label is a bare word).
DATA_PANEL = "data"
DATA_TITLE = "data (the dataset's own samples)"


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method, given in sorted order (the order of every figure's panels, rows and legends), so
    that a method has the same colour in each of the report's figures."""
    names = sorted(set(methods))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    return {name: to_hex(palette[i % len(palette)]) for i, name in enumerate(names)}


def _save(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


# --- 2-D samples ------------------------------------------------------------------------------------------------


def data_extent(*arrays: np.ndarray | None, pad: float = 0.08, quantile: float = 0.002) -> tuple[float, float, float, float]:
    """One window (x0, x1, y0, y1), equal span on both axes, covering all the points given (a few outliers
    trimmed) with symmetric padding: every panel's samples plus the reference data share it, so panels compare."""
    parts = [np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in arrays if a is not None]
    points = np.concatenate(parts) if parts else np.zeros((0, 2))
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return -1.0, 1.0, -1.0, 1.0
    lo, hi = np.quantile(points, quantile, axis=0), np.quantile(points, 1 - quantile, axis=0)
    centre = (lo + hi) / 2
    half = max(float((hi - lo).max()) / 2, 1e-3) * (1 + 2 * pad)
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def shared_extent(groups: list[np.ndarray], reference: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """One window for panels of several groups of points (a method, a solver setting): the median of the groups'
    own windows, so that one group scattered far (an unstable solve) does not shrink every other panel to a dot
    (its panel says how much of it falls outside: `note_outside`); widened to cover `reference` where given."""
    windows = np.array([data_extent(g) for g in groups]) if groups else np.array([data_extent()])
    centre = np.median((windows[:, [0, 2]] + windows[:, [1, 3]]) / 2, axis=0)
    half = float(np.median((windows[:, 1] - windows[:, 0]) / 2))
    if reference is not None:
        x0, x1, y0, y1 = data_extent(reference)
        lo = np.minimum(centre - half, [x0, y0])
        hi = np.maximum(centre + half, [x1, y1])
        centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def note_outside(ax: plt.Axes, x: np.ndarray, extent: tuple[float, float, float, float], least: float = 0.01) -> None:
    """Write on the panel what share of its points the shared window leaves out (from `least` up)."""
    x0, x1, y0, y1 = extent
    outside = float(np.mean(~((x[:, 0] >= x0) & (x[:, 0] <= x1) & (x[:, 1] >= y0) & (x[:, 1] <= y1))))
    if outside >= least:
        ax.text(0.03, 0.03, f"{outside:.0%} outside this window", transform=ax.transAxes, fontsize=6.5, va="bottom",
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5})  # fmt: skip


def smoothed_density(x: np.ndarray, extent: tuple[float, float, float, float], bins: int = DENSITY_BINS) -> np.ndarray:
    """A 2-D histogram of `x` over `extent` (x0, x1, y0, y1), Gaussian-smoothed and normalised to a density."""
    from scipy.ndimage import gaussian_filter  # lazy: ~0.3 s that a trial whose panels are all scatter plots skips

    x0, x1, y0, y1 = extent
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
    smooth = gaussian_filter(counts, DENSITY_SIGMA, mode="constant")
    cell = (x1 - x0) * (y1 - y0) / bins**2
    return smooth.T / max(len(x) * cell, 1e-12)  # rows = y


def panel_kind(x: np.ndarray, kind: str = "auto") -> str:
    """`kind` of a 2-D panel: "auto" is a scatter up to SCATTER_MAX points, a smoothed density above."""
    return ("scatter" if len(x) <= SCATTER_MAX else "density") if kind == "auto" else kind


def density_peak(arrays: Iterable[np.ndarray], extent: tuple[float, float, float, float]) -> float:
    """The highest smoothed density of any of `arrays` over `extent`: the top of a figure's shared colour scale."""
    return max((float(smoothed_density(x, extent).max()) for x in arrays), default=1.0) or 1.0


def draw_2d(
    ax: plt.Axes, x: np.ndarray, extent: tuple[float, float, float, float], kind: str = "auto", vmax: float | None = None
) -> AxesImage | None:
    """One 2-D panel: smoothed density (on the colour scale 0..`vmax`, shared by a figure's panels; the image
    is returned for the colour bar) or small-alpha scatter; labelled axes with ticks, equal aspect."""
    image = None
    if panel_kind(x, kind) == "scatter":
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.35, lw=0, color="tab:blue", rasterized=True)
    else:
        density = smoothed_density(x, extent)
        image = ax.imshow(density, origin="lower", extent=extent, cmap="magma", interpolation="bilinear", aspect="equal",
                          vmin=0.0, vmax=vmax)  # fmt: skip
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.tick_params(labelsize=7)
    ax.locator_params(nbins=5)
    return image


def density_colour_bar(fig: plt.Figure, image: AxesImage | None, axes: Any) -> None:
    """One colour bar beside `axes` for the shared scale of their density panels (none without a density)."""
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
        bar.set_label(DENSITY_LABEL, fontsize=8)
        bar.ax.tick_params(labelsize=7)


# --- images -----------------------------------------------------------------------------------------------------


def image_grid(x: np.ndarray, max_images: int = 64, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> an (rows*H, cols*W, 3) RGB grid in [0, 1] (C = 1 repeated: gray)."""
    x = np.asarray(x, dtype=np.float32)
    n = min(max_images, x.shape[0])
    side = max(1, math.ceil(math.sqrt(n)))  # no image: an empty (white) grid
    rows = math.ceil(n / side)
    c, h, w = x.shape[1:]
    grid = np.ones((rows * (h + pad) + pad, side * (w + pad) + pad, 3), dtype=np.float32)
    images = (np.clip(x[:n], -1, 1) + 1) / 2
    images = np.repeat(images, 3, axis=1) if c == 1 else images[:, :3]
    for i in range(n):
        r, col = divmod(i, side)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = images[i].transpose(1, 2, 0)
    return grid


# --- the sample figure ------------------------------------------------------------------------------------------


def panel_title(label: str, nfe: float | None = None) -> str:
    if nfe is None or nfe != nfe:
        return label
    return f"{label}\nNFE {int(round(nfe))}"


def figure_title(method: str | None = None, step: int | None = None, title: str = "") -> str:
    parts = [p for p in (method, title) if p]
    if step is not None:
        parts.append(f"training step {int(step)}")
    return " · ".join(parts)


#: Panels side by side in one row of a samples figure, and the characters of a panel title's line.
PANELS_PER_ROW = 5
TITLE_WIDTH = 34


def draw_samples(
    panels: Mapping[str, Any],
    *,
    titles: Mapping[str, str] | None = None,
    suptitle: str = "",
    reference: Any = None,
    kind: str = "auto",
    max_images: int = 64,
    colours: Mapping[str, str] | None = None,
) -> plt.Figure:
    """One panel per entry of `panels` (numpy arrays or tensors, keyed by panel name); `titles` overrides a
    panel's title (default: its key), `colours` its colour (a method's). 2-D panels share a window fitted to
    the samples (`shared_extent`) and `reference`, and their densities one colour scale with its colour bar."""
    import textwrap

    arrays = {k: _numpy(v) for k, v in panels.items()}
    arrays = {k: a for k, a in arrays.items() if len(a)} or arrays  # an empty panel (no data kept) is left out
    names = list(arrays)
    is_2d = all(a.ndim == 2 for a in arrays.values())
    n = len(names)
    size = 2.6 if is_2d else 2.9
    columns = min(n, PANELS_PER_ROW)  # more panels (training-option variants) go on further rows
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns + 0.4 + 0.8 * is_2d, (size + (0.7 if is_2d else 1.1)) * rows + 0.3 * is_2d),
                             squeeze=False, layout="constrained")  # fmt: skip
    extent, vmax, image = None, None, None
    if is_2d:
        extent = shared_extent(list(arrays.values()), None if reference is None else _numpy(reference))
        vmax = density_peak([a for a in arrays.values() if panel_kind(a, kind) == "density"], extent)
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        x = arrays[name]
        if x.ndim == 2:
            image = draw_2d(ax, x, extent, kind, vmax) or image
            note_outside(ax, x, extent)
            if i % columns:
                ax.set_ylabel("")
        else:
            ax.imshow(image_grid(x, max_images), interpolation="nearest")
            ax.set_axis_off()
        title = (titles or {}).get(name, name)  # long labels wrap instead of running into the next panel
        ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)) or title, fontsize=8,
                     color=(colours or {}).get(name, "black"))  # fmt: skip
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    density_colour_bar(fig, image, axes)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def data_panel(data: Any, like: np.ndarray) -> np.ndarray:
    """The data's samples shown beside samples shaped `like`: as many 2-D points (a panel drawn the same way,
    scatter or density), or the images one grid shows (the .npz stays small for image data)."""
    data = _numpy(data)
    return data[: len(like)] if like.ndim == 2 else data[:64]


def save_samples(
    samples: Mapping[str, Any],
    path: Path,
    title: str = "",
    max_images: int = 64,
    *,
    step: int | None = None,
    method: str | None = None,
    nfe: Mapping[str, float] | None = None,
    reference: Any = None,
    kind: str = "auto",
    data: Any = None,
) -> Path:
    """One panel per solver setting (keyed by SolverSetting.label), titled with the label and its NFE if
    given, after a panel of the data's own samples (`data`); the figure names the method and the training
    step (`title="step N"` is read as the step)."""
    match = re.fullmatch(r"step (\d+)", title.strip())
    if step is None and match:
        step, title = int(match.group(1)), ""
    titles = {k: panel_title(k, (nfe or {}).get(k)) for k in samples}
    if data is not None:
        samples, titles = {DATA_PANEL: data, **samples}, {DATA_PANEL: DATA_TITLE, **titles}
    fig = draw_samples(
        samples, titles=titles, suptitle=figure_title(method, step, title), reference=reference, kind=kind,
        max_images=max_images,
    )  # fmt: skip
    return _save(fig, path)


# --- the loss curve ---------------------------------------------------------------------------------------------


def readable_log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log ticks a reader can read. Over a wide range: decades (10^k). Over under ~1.5 decades, where a log
    axis would show one or no labelled tick: labelled ticks at 1..9 x 10^k, written plainly (1.2, 0.003)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo <= 0 or hi / lo >= 10**1.5:
        return
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    subs = (1.0, 2.0, 5.0) if hi / lo >= 4 else tuple(np.arange(1, 10, dtype=float))
    target.set_major_locator(LogLocator(base=10, subs=subs, numticks=15))
    target.set_major_formatter(plain)
    if len([t for t in target.get_majorticklocs() if lo <= t <= hi]) < 2:  # a very narrow range: linear ticks
        target.set_major_locator(MaxNLocator(nbins=5))
    target.set_minor_formatter(NullFormatter())


def _plot_loss(ax: plt.Axes, losses: list[tuple[int, float]], ylabel: str, labelsize: float) -> None:
    """The loss against the step on `ax`: log y only when every loss is positive, ticks a reader can read."""
    steps, values = zip(*losses, strict=True)
    ax.plot(steps, values, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if min(values) > 0:
        ax.set_yscale("log")
        readable_log_axis(ax, "y")
    ax.tick_params(labelsize=labelsize, which="both")
    ax.grid(alpha=0.3, which="both")


def save_loss_curve(losses: list[tuple[int, float]], path: Path, title: str = "", ylabel: str = "training loss") -> Path:
    """The training loss against the step (log y only when every loss is positive); titled with the trial."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4), layout="constrained")
    _plot_loss(ax, losses, f"{ylabel} (objective's units)", labelsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


#: The loss strip's size in pixels: MLflow 3.17's run page shows a run's description 100 px tall, its paragraph
#: included (13 px below it); anything taller is cut there under a fade and "Show more". The strip fits whole.
LOSS_STRIP_PX = (900, 84)


def save_loss_strip(losses: list[tuple[int, float]], path: Path, title: str = "") -> Path:
    """The loss curve as a wide strip, LOSS_STRIP_PX: what a training run's MLflow page leads with (its
    description, orchestrator.run_page); the trial's name inside the axes, since a title would not fit."""
    dpi = 110
    fig, ax = plt.subplots(figsize=(LOSS_STRIP_PX[0] / dpi, LOSS_STRIP_PX[1] / dpi), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.01, w_pad=0.02)
    _plot_loss(ax, losses, "loss", labelsize=7)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    ax.xaxis.labelpad = 1
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "linear" or hi / lo < 10:  # three labelled ticks in 60 px, not one per tenth
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.text(0.995, 0.92, title, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    return _save(fig, path, dpi=dpi)
