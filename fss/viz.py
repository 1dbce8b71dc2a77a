"""Figures: scans with label overlays in world space (nilearn), three-plane views of working-grid arrays, intensity mixtures.

Text sizes are relative ("small", "medium", "large") to matplotlib's base font size, which
:func:`figure_style` sets for reading on a screen or on a projector (:func:`fss.notebook.notebook_figures`
applies it in a notebook).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap, to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text

from fss.labels import META_LABELS, TISSUE_ORDER, TISSUES
from fss.paths import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from fss.seeds import Mixture
    from fss.synth.views import PartialVolumeView, StageView

FETA_COLORS: dict[int, tuple[str, str]] = {t.value: (t.short, t.color) for t in TISSUES[1:]}
"""Legend name and colour of each FeTA label value."""

FETA_COLORMAP = ListedColormap([FETA_COLORS[v][1] for v in sorted(FETA_COLORS)], name="feta")
"""The FeTA colours as a colormap over label values ``min(FETA_COLORS)`` to ``max(FETA_COLORS)``."""

META_COLORMAPS = {1: "Blues", 2: "Reds", 3: "Greys", 4: "Greens"}

META_COLORS: dict[int, tuple[str, str]] = {m: (name, to_hex(plt.get_cmap(META_COLORMAPS[m])(0.7))) for m, (name, _) in META_LABELS.items()}
"""Legend name and colour of each meta-label."""

PLANES = ("sagittal", "coronal", "axial")

FIGURE_DPI = 100
"""Pixels per inch of figures shown in a notebook: a 10-inch figure is 1000 pixels wide."""
DISPLAY_WIDTH_PX = 1000
"""Width (pixels) of a notebook's output area on a 1920-pixel screen or projector: wider figures are shown shrunk to it."""
FIGURE_WIDTH_IN = DISPLAY_WIDTH_PX / FIGURE_DPI
"""The widest figure (inches) a notebook shows at its own size: fss's figures are at most this wide."""
READABLE_TEXT_PX = 10
"""The smallest font size (pixels, as shown) that stays readable from the back of a room; 72-dpi figures at 7 points had 7."""
SMALLEST_TEXT_KEY = "fss/smallest_text_px"
"""Key of a notebook PNG output's metadata that holds :func:`smallest_text_pixels` of its figure."""


def seed_colors(max_subclasses: int = 4) -> dict[int, tuple[str, str]]:
    """Legend name and colour of each seed value ``10 * M + j``: one hue per meta-label, lighter to darker with j."""
    colors = {}
    for m, (name, _) in META_LABELS.items():
        cmap = plt.get_cmap(META_COLORMAPS[m])
        for j in range(max_subclasses):
            colors[10 * m + j] = (f"{name} {j}", to_hex(cmap(0.35 + 0.6 * j / max(max_subclasses - 1, 1))))
    return colors


def plot_planes(image: np.ndarray, labels: np.ndarray | None = None, **options) -> Figure:
    """Sagittal, coronal and axial slices of a RAS+ volume, optionally with labels on top.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        Intensities on a RAS+ grid (first axis left to right, then posterior to
        anterior, then inferior to superior), e.g. from :class:`fss.io.WorkingGrid`.
    labels : np.ndarray, shape (X, Y, Z), optional
        Label map on the same grid (0 = not drawn), drawn in colours with a legend.
    **options
        ``center``, ``title``, ``alpha``, ``colors``, ``spacing``, ``legend_columns``: see :func:`plot_comparison`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return plot_comparison(image, {"": labels}, **options)


def plot_comparison(
    image: np.ndarray,
    label_maps: Mapping[str, np.ndarray | None],
    center: Sequence[int] | None = None,
    title: str | None = None,
    alpha: float = 0.45,
    colors: Mapping[int, tuple[str, str]] = FETA_COLORS,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    legend_columns: int | None = None,
) -> Figure:
    """One row of :func:`plot_planes` per label map, all at the same slices: e.g. a reference and a prediction.

    Left and right are marked (L, R) on the coronal and axial views.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        Intensities on a RAS+ grid.
    label_maps : mapping
        ``{row title: labels (X, Y, Z) or None}``; None shows the image alone.
    center : (3,) ints, optional
        Where the planes cross, for every row; default: the centre of the first label map's
        foreground, or of the volume.
    title : str, optional
        Figure title (put the data attribution here when showing public data).
    alpha : float
        Opacity of the label overlay.
    colors : mapping
        ``{value: (legend name, colour)}``; default the FeTA tissues, see also :func:`seed_colors`.
    spacing : (3,) floats
        Voxel size in mm, so that anisotropic voxels are drawn with their true proportions.
    legend_columns : int, optional
        Columns of the legend, filled one after the other in the order of the label values (default: one row of up
        to 8). A seed map reads as a table with one column per meta-label (``len(META_COLORS)``): its subclasses
        are the rows.

    Returns
    -------
    matplotlib.figure.Figure
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {image.shape}")
    maps = {name: None if labels is None else np.asarray(labels) for name, labels in label_maps.items()}
    for name, labels in maps.items():
        if labels is not None and labels.shape != image.shape:
            raise ValueError(f"labels shape {labels.shape} ({name or 'labels'}) differs from image shape {image.shape}")
    if center is None:
        first = next(iter(maps.values()))
        foreground = np.argwhere(first > 0) if first is not None else np.empty((0, 3))
        center = foreground.mean(0) if len(foreground) else np.asarray(image.shape) / 2
    center = [int(round(c)) for c in center]
    low, high = np.percentile(image, [0.5, 99.5])
    present = sorted({int(v) for labels in maps.values() if labels is not None for v in np.unique(labels) if v != 0})
    unknown = [v for v in present if v not in colors]
    if unknown:
        raise ValueError(f"no colour for label values {unknown}")
    palette = _palette(colors)
    cmap = ListedColormap(palette)

    figure, axes = plt.subplots(len(maps), 3, figsize=(10, 3.4 * len(maps) + 0.4), layout="constrained", squeeze=False)
    for row, (name, labels) in zip(axes, maps.items()):
        for axis, (ax, plane) in enumerate(zip(row, PLANES)):
            picked = tuple(center[a] if a == axis else slice(None) for a in range(3))
            across, up = [a for a in range(3) if a != axis]
            aspect = spacing[up] / spacing[across]
            ax.imshow(image[picked].T, cmap="gray", origin="lower", vmin=low, vmax=high, interpolation="nearest", aspect=aspect)
            if labels is not None:
                overlay = np.ma.masked_equal(labels[picked].T, 0)
                ax.imshow(overlay, cmap=cmap, vmin=0, vmax=len(palette) - 1, alpha=alpha, origin="lower", interpolation="nearest", aspect=aspect)
            ax.set_title(f"{name}: {plane} {center[axis]}" if name else f"{plane} {center[axis]}", fontsize="medium")
            if across == 0:  # the first (left-to-right) axis runs across: mark the sides
                for x, letter in ((0.02, "L"), (0.98, "R")):
                    ax.text(x, 0.5, letter, transform=ax.transAxes, color="yellow", fontsize="x-large", fontweight="bold", ha="center", va="center")
            ax.set_axis_off()
    if present:
        handles = [Patch(facecolor=colors[v][1], edgecolor="0.3", label=colors[v][0]) for v in present]  # edges set light colours off the page
        columns = legend_columns or min(len(handles), 8)
        figure.legend(handles=handles, loc="outside lower center", ncol=columns, frameon=False, fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def _feta_label_image(labels: nib.spatialimages.SpatialImage, dtype: type = np.int16) -> tuple[nib.Nifti1Image, list[int]]:
    """The label map as a plain image of ``dtype`` and its label values present, refusing values without a FeTA colour."""
    values = np.asarray(labels.dataobj)
    present = [int(v) for v in np.unique(values) if v != 0]
    unknown = [v for v in present if v not in FETA_COLORS]
    if unknown:
        raise ValueError(f"no colour for label values {unknown}")
    return nib.Nifti1Image(values.astype(dtype), labels.affine), present


def plot_segmentation(scan: nib.spatialimages.SpatialImage, labels: nib.spatialimages.SpatialImage, title: str | None = None) -> Figure:
    """A scan and its FeTA label map in world space, any orientation and voxel size: nilearn's ``plot_roi`` with the FeTA colours.

    Three orthogonal cuts through the labels' centre, left and right marked, a legend of the
    tissues present, ``title`` (one or more lines) above. For arrays on a working grid (no world
    coordinates) use :func:`plot_planes`.
    """
    from nilearn import plotting

    label_image, present = _feta_label_image(labels)
    extra_lines = title.count("\n") if title else 0  # room above the cuts for a title of several lines
    figure = plt.figure(figsize=(10, 4.4 + 0.25 * extra_lines), facecolor="black")
    plotting.plot_roi(
        label_image,
        bg_img=nib.Nifti1Image(np.asarray(scan.dataobj, dtype=np.float32), scan.affine),
        cmap=FETA_COLORMAP,
        vmin=min(FETA_COLORS),
        vmax=max(FETA_COLORS),
        alpha=0.45,
        draw_cross=False,
        dim=0,
        colorbar=False,
        black_bg=True,
        figure=figure,
        axes=(0.0, 0.1, 1.0, 0.82 - 0.05 * extra_lines),
    )
    handles = [Patch(facecolor=FETA_COLORS[v][1], edgecolor="0.6", label=FETA_COLORS[v][0]) for v in present]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize="small", labelcolor="white")
    if title:
        figure.suptitle(title, fontsize="medium", color="white")
    return figure


def view_segmentation(
    scan: nib.spatialimages.SpatialImage, labels: nib.spatialimages.SpatialImage, spacing_mm: float | None = 1.2, title: str | None = None
):
    """An interactive viewer (nilearn's ``view_img``) of a scan with its FeTA label map, for a notebook or a web page.

    Click to move the three cuts; the labels are drawn in the FeTA colours, half transparent.

    Parameters
    ----------
    scan, labels : nibabel images
        The scan and its label map in world space, any orientation (the labels on any grid).
    spacing_mm : float or None
        Both are first resampled onto an axis-aligned grid of this voxel size (labels by nearest
        neighbour): the page embeds every voxel, so 1.2 mm keeps it near 0.5 MB for a fetal
        brain where nilearn's own choice (None) can take several times that.
    title : str, optional

    Returns
    -------
    nilearn.plotting.html_stat_map.StatMapView
        Shown when it is a cell's last value; ``save_as_html(path)`` writes a stand-alone page.
    """
    from nilearn import image, plotting

    label_image, _ = _feta_label_image(labels, np.float32)
    background = nib.Nifti1Image(np.asarray(scan.dataobj, dtype=np.float32), scan.affine)
    if spacing_mm is not None:
        background = image.resample_img(
            background, target_affine=np.eye(3) * spacing_mm, interpolation="continuous", force_resample=True, copy_header=True
        )
        label_image = image.resample_to_img(label_image, background, interpolation="nearest", force_resample=True, copy_header=True)
    return plotting.view_img(
        label_image,
        bg_img=background,
        cmap=FETA_COLORMAP,
        symmetric_cmap=False,
        vmin=min(FETA_COLORS),
        vmax=max(FETA_COLORS),
        threshold=0.5,
        opacity=0.5,
        resampling_interpolation="nearest",
        colorbar=False,
        black_bg=True,
        dim=0,
        title=title,
    )


def plot_mixtures(image: np.ndarray, regions: Mapping[int, np.ndarray], mixtures: Mapping[int, Mixture], bins: int = 120) -> Figure:
    """Intensity histogram of each meta-label with its fitted Gaussian components.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        Intensities.
    regions : mapping
        ``{M: bool mask (X, Y, Z)}`` from :func:`fss.seeds.meta_label_regions`.
    mixtures : mapping
        ``{M: fss.seeds.Mixture}`` for one K.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per meta-label: density histogram, each weighted component, their sum.
    """
    metas = [m for m in regions if m in mixtures]
    figure, axes = plt.subplots(1, len(metas), figsize=(min(FIGURE_WIDTH_IN, 3.2 * len(metas)), 2.8), layout="constrained", squeeze=False)
    for ax, m in zip(axes[0], metas):
        values = np.asarray(image)[regions[m]]
        mixture = mixtures[m]
        ax.hist(values, bins=bins, density=True, color="0.8")
        x = np.linspace(values.min(), values.max(), 400)
        densities = [
            w * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)) for mu, sd, w in zip(mixture.means, mixture.stds, mixture.weights)
        ]
        cmap = plt.get_cmap(META_COLORMAPS[m])
        for j, density in enumerate(densities):
            ax.plot(x, density, color=cmap(0.35 + 0.6 * j / max(len(densities) - 1, 1)), label=f"{j}")
        ax.plot(x, np.sum(densities, axis=0), "k--", linewidth=0.8, label="sum")
        ax.set_title(f"{m}: {META_LABELS[m][0]} ({values.size} voxels)", fontsize="medium")
        ax.set_xlabel("intensity")
        ax.set_yticks([])
        ax.legend(fontsize="small", title="subclass", title_fontsize="small")
    return figure


def plot_gallery(images: np.ndarray, labels: np.ndarray, columns: int = 4, titles: Sequence[str] | None = None) -> Figure:
    """Middle axial slices of several volumes, FeTA label contours on top.

    Parameters
    ----------
    images : np.ndarray, shape (N, X, Y, Z)
        Intensities on RAS+ grids.
    labels : np.ndarray, shape (N, X, Y, Z)
        FeTA label maps.
    columns : int
        Panels per row.
    titles : sequence of str, optional
        One per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape or images.ndim != 4:
        raise ValueError(f"expected images and labels of one shape (N, X, Y, Z), got {images.shape} and {labels.shape}")
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(FIGURE_WIDTH_IN, FIGURE_WIDTH_IN / columns * 1.1 * rows), layout="constrained", squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= len(images):
            continue
        z = images.shape[3] // 2
        ax.imshow(images[index, :, :, z].T, cmap="gray", origin="lower", interpolation="nearest")
        slice_labels = labels[index, :, :, z].T
        for value, (_, color) in FETA_COLORS.items():
            if np.any(slice_labels == value):
                ax.contour(slice_labels == value, levels=[0.5], colors=[color], linewidths=0.6)
        if titles is not None:
            ax.set_title(titles[index], fontsize="small")
    figure.legend(
        handles=[Patch(color=c, label=n) for n, c in FETA_COLORS.values()], loc="outside lower center", ncol=7, frameon=False, fontsize="small"
    )
    return figure


def _palette(colors: Mapping[int, tuple[str, str]]) -> np.ndarray:
    """(max value + 1, 3) RGB of each value of ``colors`` (legend name and colour by value), black elsewhere."""
    palette = np.zeros((max(colors) + 1, 3))
    for value, (_, color) in colors.items():
        palette[value] = to_rgb(color)
    return palette


def plot_stages(views: Sequence[StageView]) -> Figure:
    """A sample stage by stage, a row per stage (:func:`fss.synth.views.stage_views`).

    The seed map and the labels while the stages only move them; from the contrast stage on, the image
    (0 to 1) and what the stage changed (the difference from the stage before, -0.5 to 0.5), or for the bias
    stage the field that multiplies the image, with its colour bar.
    """
    seeds, tissues = _palette(seed_colors(4)), _palette(FETA_COLORS)
    figure, axes = plt.subplots(len(views), 2, figsize=(6.5, 3.0 * len(views)), layout="constrained", squeeze=False)
    for view, (left, right) in zip(views, axes):
        if view.stage in ("subclasses", "spatial"):
            left.imshow(np.rot90(seeds[view.seed_map]), interpolation="nearest")
            right.imshow(np.rot90(tissues[view.labels]), interpolation="nearest")
            right.set_title("its labels", fontsize="small")
        else:
            left.imshow(np.rot90(view.image), cmap="gray", vmin=0, vmax=1)
            if view.bias_field is not None:
                field = right.imshow(np.rot90(view.bias_field), cmap="coolwarm")
                figure.colorbar(field, ax=right, shrink=0.7)
                right.set_title("the field (multiplies the image)", fontsize="small")
            elif view.change is not None:
                right.imshow(np.rot90(view.change), cmap="RdBu_r", vmin=-0.5, vmax=0.5)
                right.set_title("change from the stage before (-0.5 to 0.5)", fontsize="small")
        left.set_title(view.title, fontsize="medium")
    for ax in axes.flat:
        ax.set_axis_off()
    return figure


def plot_partial_volume(view: PartialVolumeView) -> Figure:
    """The contrast stage read by nearest neighbour and linearly around the cortex, and the intensities along one line
    across it (:func:`fss.synth.views.partial_volume_views`)."""
    titles = {"nearest": "nearest: staircase edges, white texture", "linear": "linear (the reference preset): partial volume"}
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2), layout="constrained")
    for ax, (how, window) in zip(axes, view.windows.items()):
        ax.imshow(window, cmap="gray", interpolation="nearest")
        ax.axvline(view.line, color="tab:orange", lw=0.8)
        ax.set_title(titles[how], fontsize="medium")
        ax.set_axis_off()
    for how, profile in view.profiles.items():
        axes[2].plot(profile, ".-", label=how)
    first, last = view.cortex
    axes[2].axvspan(first - 0.5, last + 0.5, color="0.9", label=f"cortex (labels, {last - first + 1} voxels)")
    axes[2].set_xlabel("voxel along the orange line")
    axes[2].set_ylabel("intensity")
    axes[2].legend(fontsize="small")
    return figure


def plot_domain_randomization(labels: np.ndarray, synthetic: Sequence[np.ndarray], scan: np.ndarray, segmentation: np.ndarray) -> Figure:
    """Domain randomization on one page: a label map, images drawn from it, and a real scan segmented by a network that
    saw only such images.

    Parameters
    ----------
    labels : np.ndarray, (X, Y)
        A slice of the FeTA label map the images are drawn from.
    synthetic : sequence of np.ndarray, (X, Y) each
        Slices of synthetic images drawn from it (six fill the middle), intensities in [0, 1].
    scan, segmentation : np.ndarray, (X, Y)
        A slice of a real scan and of its segmentation (FeTA labels) by the network trained on synthetic images only.

    All slices are drawn with their first axis across and anterior (or superior) up.
    """
    tissues = _palette(FETA_COLORS)
    columns = -(-len(synthetic) // 2)
    figure = plt.figure(figsize=(FIGURE_WIDTH_IN, 4.2), layout="constrained")
    parts = figure.subfigures(1, 3, width_ratios=[1.2, columns, 1.2])
    titles = (
        "one label map",
        "drawn again and again: random contrast,\nshape, bias, resolution and noise\n",
        "another population, segmented\nby a network that saw\nonly such images",
    )
    for part, title in zip(parts, titles):
        part.suptitle(title, fontsize="medium")
    ax = parts[0].subplots()
    ax.imshow(np.rot90(tissues[labels]), interpolation="nearest")
    ax.set_axis_off()
    axes = parts[1].subplots(2, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image in zip(axes.flat, synthetic):
        ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=1)
    top, bottom = parts[2].subplots(2, 1)
    low, high = np.percentile(scan, [0.5, 99.5])
    top.imshow(np.rot90(scan), cmap="gray", vmin=low, vmax=high)
    bottom.imshow(np.rot90(scan), cmap="gray", vmin=low, vmax=high)
    bottom.imshow(np.rot90(np.ma.masked_equal(segmentation, 0)), cmap=FETA_COLORMAP, vmin=min(FETA_COLORS), vmax=max(FETA_COLORS), alpha=0.5)
    for ax in (top, bottom):
        ax.set_axis_off()
    figure.legend(
        handles=[Patch(color=c, label=n) for n, c in FETA_COLORS.values()], loc="outside lower center", ncol=7, frameon=False, fontsize="small"
    )
    return figure


def plot_training(log: pd.DataFrame) -> Figure:
    """Training loss and validation Dice against iterations.

    Parameters
    ----------
    log : pandas.DataFrame
        Rows of ``fss.train``'s ``log.csv``: ``iteration``, ``loss``, and at validation
        steps ``dice_<tissue>`` and ``mean_dice``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    left.plot(log["iteration"], log["loss"], color="0.7", linewidth=0.8, label="loss")
    window = max(1, len(log) // 20)
    left.plot(log["iteration"], log["loss"].rolling(window, min_periods=1).mean(), color="k", label=f"running mean ({window})")
    left.set_xlabel("iteration")
    left.set_ylabel("Dice + cross-entropy loss")
    left.legend(fontsize="small")
    validated = log.dropna(subset=["mean_dice"]) if "mean_dice" in log else log.iloc[:0]
    for short, color in FETA_COLORS.values():
        if f"dice_{short}" in validated:
            right.plot(validated["iteration"], validated[f"dice_{short}"], "o-", color=color, markersize=3, label=short)
    if len(validated):
        right.plot(validated["iteration"], validated["mean_dice"], "k-", linewidth=2, label="mean")
    right.set_xlabel("iteration")
    right.set_ylabel("validation Dice")
    right.set_ylim(0, 1)
    right.legend(fontsize="small", ncol=2)
    return figure


def plot_experiment(per_seed: pd.DataFrame, title: str = "") -> Figure:
    """Dice of each arm of an experiment, per tissue and per place: a dot per seed, a bar at the mean.

    Parameters
    ----------
    per_seed : pandas.DataFrame
        Rows of :func:`fss.experiments.dice_per_seed` (``where``, ``stress``, ``severity``, ``arm``,
        ``seed``, ``tissue``, ``value``).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        One panel for the mean over tissues, then one per tissue (FeTA order), each on a 0-1 Dice
        axis. The places are the clean datasets and each stress at its highest severity in the
        table; the other severities are in :func:`fss.experiments.spread_over_seeds`.
    """
    highest = per_seed.groupby("stress").severity.transform("max")
    shown = per_seed[per_seed.stress.isna() | (per_seed.severity == highest)]
    places, arms = list(dict.fromkeys(shown["where"])), list(dict.fromkeys(shown.arm))
    tissues = ["mean", *[t for t in TISSUE_ORDER if t in set(shown.tissue)]]
    columns = min(4, len(tissues))
    rows = -(-len(tissues) // columns)
    size = (min(FIGURE_WIDTH_IN, 3.6 * columns), 3 * rows)
    figure, axes = plt.subplots(rows, columns, figsize=size, layout="constrained", sharey=True, squeeze=False)
    for ax, tissue in zip(axes.flat, tissues):
        for a, arm in enumerate(arms):
            x = np.arange(len(places)) + (a - (len(arms) - 1) / 2) * 0.8 / len(arms)
            for i, place in enumerate(places):
                values = shown[(shown["where"] == place) & (shown.arm == arm) & (shown.tissue == tissue)].value
                ax.plot([x[i]] * len(values), values, "o", color=f"C{a}", alpha=0.6, markersize=4)
                ax.plot([x[i] - 0.12, x[i] + 0.12], [values.mean()] * 2, "-", color=f"C{a}", linewidth=2, label=arm if i == 0 else None)
        ax.set_xticks(range(len(places)), places, rotation=35, ha="right", rotation_mode="anchor", fontsize="medium")
        ax.set_title("mean of the tissues" if tissue == "mean" else tissue, fontsize="medium")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("Dice (dots: seeds, bars: means)", fontsize="small")
    for ax in axes.flat[len(tissues) :]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize="small")
    if title:
        figure.suptitle(title, fontsize="large")
    return figure


def plot_stresses(views: Mapping[str, Sequence[tuple[str, np.ndarray]]]) -> Figure:
    """Slices of one image clean and under each stress: a row per kind, a titled panel per slice.

    Parameters
    ----------
    views : mapping of kind to (title, slice) pairs
        2-D slices with intensities in [0, 1], as :func:`fss.stress.stress_views` gives them (the
        clean slice first, then one per severity); the kind labels its row.
    """
    columns = max(len(row) for row in views.values())
    figure, axes = plt.subplots(len(views), columns, figsize=(2 * columns, 2.4 * len(views)), layout="constrained", squeeze=False)
    for row, (kind, panels) in zip(axes, views.items()):
        row[0].set_ylabel(kind, fontsize="medium")
        for ax, (title, picture) in zip(row, panels):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure


def plot_dice_per_case(results: pd.DataFrame) -> Figure:
    """Dice of each model per tissue and dataset: a dot per case, a bar at each model's mean, on a 0-1 axis.

    Parameters
    ----------
    results : pandas.DataFrame
        Rows of :func:`fss.evaluation.evaluate` (``model``, ``dataset``, ``case``, ``tissue``,
        ``metric``, ``value``); the Dice rows are drawn, datasets and models in the order they
        appear.
    """
    chosen = results[results.metric == "dice"]
    datasets, models = list(dict.fromkeys(chosen.dataset)), list(dict.fromkeys(chosen.model))
    tissues = [t for t in TISSUE_ORDER if t in set(chosen.tissue)]
    figure, axes = plt.subplots(1, len(tissues), figsize=(FIGURE_WIDTH_IN, 4.2), layout="constrained", sharey=True, squeeze=False)
    for ax, tissue in zip(axes[0], tissues):
        for m, model in enumerate(models):
            for d, dataset in enumerate(datasets):
                values = chosen[(chosen.tissue == tissue) & (chosen.dataset == dataset) & (chosen.model == model)].value.dropna()
                x = d + (m - (len(models) - 1) / 2) * 0.8 / len(models)
                ax.plot([x] * len(values), values, "o", color=f"C{m}", alpha=0.5, markersize=4)
                ax.plot([x - 0.12, x + 0.12], [values.mean()] * 2, "-", color=f"C{m}", linewidth=2, label=model if d == 0 else None)
        ax.set_xticks(range(len(datasets)), [d.replace(", ", "\n") for d in datasets], fontsize="small", rotation=90)
        ax.set_title(tissue, fontsize="medium")
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("Dice (dots: cases, bars: means)")
    axes[0, -1].legend(fontsize="small")
    return figure


def plot_dice_against_severity(
    clean: pd.Series, stressed: pd.Series, reference: tuple[pd.Series, pd.Series] | None = None, reference_name: str = "reference"
) -> Figure:
    """Mean Dice of each model against the severity of each stress, severity 0 being the clean images.

    Parameters
    ----------
    clean : pandas.Series, indexed by model
    stressed : pandas.Series, indexed by (model, stress, severity)
        As :func:`fss.evaluation.drops_from_clean` returns them.
    reference : (clean, stressed), optional
        Another evaluation of the same models (e.g. the shipped one, every severity), drawn behind in thin dashed
        lines of the same colours where it has the model and the stress.
    reference_name : str
        What the legend calls ``reference``.

    Returns
    -------
    matplotlib.figure.Figure
        A panel per stress. Lines join neighbouring severities only: where severities are
        missing (only 3 evaluated, say), the points stand alone and no line suggests a shape
        between them.
    """
    kinds = list(dict.fromkeys(stressed.index.get_level_values("stress")))
    columns = min(4, len(kinds))
    rows = -(-len(kinds) // columns)
    size = (min(FIGURE_WIDTH_IN, 3.5 * columns), 2.8 * rows)
    figure, axes = plt.subplots(rows, columns, figsize=size, layout="constrained", sharey=True, squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        for m, model in enumerate(clean.index):
            if reference is not None and (model, kind) in reference[1].index.droplevel("severity"):
                per = reference[1].loc[model, kind]
                label = f"{model}, {reference_name}" if kind == kinds[0] else None
                ax.plot([0, *per.index], [reference[0][model], *per.values], "--", color=f"C{m}", linewidth=0.8, alpha=0.6, label=label)
            per = stressed.loc[model, kind]
            severities, values = [0, *per.index], [clean[model], *per.values]
            ax.plot(severities, values, "o", color=f"C{m}", label=model if kind == kinds[0] else None)
            for (s0, v0), (s1, v1) in zip(zip(severities, values), zip(severities[1:], values[1:])):
                if s1 == s0 + 1:
                    ax.plot([s0, s1], [v0, v1], "-", color=f"C{m}")
        ax.set_title(kind, fontsize="medium")
        ax.set_ylim(0, 1)
        ax.set_xlabel("severity (0: clean)")
        ax.set_xticks([0, 1, 2, 3])
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(kinds) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean Dice")
    handles, names = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=min(len(names), 4), frameon=False, fontsize="small")
    return figure


def plot_growth_curves(curves: pd.DataFrame, age: float, volumes: Mapping[str, float]) -> Figure:
    """Each tissue's and the brain's volume against age for each atlas, with one scan's volumes at its age.

    Parameters
    ----------
    curves : pandas.DataFrame
        Columns ``atlas``, ``age`` (weeks) and :data:`fss.metrics.VOLUME_COLUMNS` (mm^3): one row per atlas volume.
    age : float
        The scan's gestational age (weeks).
    volumes : mapping
        The scan's volumes, keyed as :func:`fss.metrics.tissue_volumes` keys them (mm^3).

    Returns
    -------
    Figure
        One panel per tissue and one for the brain (ml against weeks): a line per atlas, a grey band between the atlases
        where both have the age, and the scan as a dot in the tissue's colour; the legend below the panels.
    """
    figure, axes = plt.subplots(2, 4, figsize=(10, 5.4), layout="constrained")
    for ax, (short, color) in zip(axes.flat, [*FETA_COLORS.values(), ("brain", "#000000")]):
        column = f"{short}_mm3"
        wide = curves.pivot(index="age", columns="atlas", values=column) / 1000
        both = wide.dropna()
        ax.fill_between(both.index, both.min(axis=1), both.max(axis=1), color="0.85", label="between the atlases")
        for (name, line), style in zip(wide.items(), ("-", "--")):
            ax.plot(line.dropna().index, line.dropna(), style, color="0.4", linewidth=1, label=name)
        ax.plot([age], [volumes[column] / 1000], "o", color=color, markeredgecolor="k", label="this scan")
        ax.set_title(short, fontsize="medium")
        ax.set_xlabel("weeks")
        ax.set_ylabel("ml")
    handles, names = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=len(names), frameon=False, fontsize="small")
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix, e.g. ``.png``), atomically, replacing an older one.

    The figure stays open (a notebook still shows it); close it with ``plt.close(figure)`` when done.
    """
    with atomic_path(path, overwrite=True) as temporary:
        figure.savefig(temporary, dpi=dpi)
    return Path(path)


def figure_style(projection: bool = False) -> dict[str, object]:
    """Matplotlib settings (``rcParams``) for figures read on a screen, or on a projector when ``projection``.

    :data:`FIGURE_DPI` pixels per inch and a base font of 10 points (14 for projection), which fss's
    figures scale their text from; use it as ``plt.rcParams.update(figure_style())`` or in
    ``plt.rc_context(figure_style())``.
    """
    return {"figure.dpi": FIGURE_DPI, "savefig.dpi": "figure", "font.size": 14 if projection else 10}


def smallest_text_pixels(figure: Figure, display_width: int = DISPLAY_WIDTH_PX) -> float:
    """Font size (pixels) of the smallest text drawn in ``figure`` as a notebook shows it: at most ``display_width`` pixels wide.

    Counts every visible, non-empty text (titles, labels, tick labels, legends); ``inf`` for a figure without text.
    """
    figure.canvas.draw()  # places tick labels
    sizes = [text.get_fontsize() for text in figure.findobj(match=Text) if _drawn_text(text)]
    if not sizes:
        return float("inf")
    width = figure.get_figwidth() * figure.dpi
    return min(sizes) * figure.dpi / 72 * min(1.0, display_width / width)


def _drawn_text(text: Text) -> bool:
    """Whether ``text`` is visible, has characters and lies inside its figure (tick labels beyond an axis's limits are kept, not drawn)."""
    if not (text.get_visible() and text.get_text().strip()):
        return False
    box, page = text.get_window_extent(), text.get_figure(root=True).bbox
    return box.width > 0 and box.x1 > 0 and box.x0 < page.width and box.y1 > 0 and box.y0 < page.height
