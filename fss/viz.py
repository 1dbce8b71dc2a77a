"""Figures: three-plane views of volumes with FeTA label overlays."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fss.labels import TISSUES

LABEL_CMAP = ListedColormap([t.color for t in TISSUES], name="feta")
"""Colour map indexed by FeTA label value (0..7)."""

PLANES = ("sagittal", "coronal", "axial")


def plot_planes(
    image: np.ndarray,
    labels: np.ndarray | None = None,
    center: Sequence[int] | None = None,
    title: str | None = None,
    alpha: float = 0.45,
) -> Figure:
    """Sagittal, coronal and axial slices of a RAS+ volume, optionally with labels on top.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        Intensities on a RAS+ grid (first axis left to right, then posterior to
        anterior, then inferior to superior), e.g. from :class:`fss.io.WorkingGrid`.
    labels : np.ndarray, shape (X, Y, Z), optional
        FeTA label map on the same grid; drawn in the FeTA colours with a legend.
    center : (3,) ints, optional
        Voxel where the three planes cross; default: the centre of the labels'
        foreground, or of the volume.
    title : str, optional
        Figure title (put the data attribution here when showing public data).
    alpha : float
        Opacity of the label overlay.

    Returns
    -------
    matplotlib.figure.Figure
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {image.shape}")
    if labels is not None and np.shape(labels) != image.shape:
        raise ValueError(f"labels shape {np.shape(labels)} differs from image shape {image.shape}")
    if center is None:
        foreground = np.argwhere(labels > 0) if labels is not None else np.empty((0, 3))
        center = foreground.mean(0) if len(foreground) else np.asarray(image.shape) / 2
    center = [int(round(c)) for c in center]
    low, high = np.percentile(image, [0.5, 99.5])

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.8), layout="constrained")
    for axis, (ax, plane) in enumerate(zip(axes, PLANES)):
        picked = tuple(center[a] if a == axis else slice(None) for a in range(3))
        ax.imshow(image[picked].T, cmap="gray", origin="lower", vmin=low, vmax=high, interpolation="nearest")
        if labels is not None:
            overlay = np.ma.masked_equal(np.asarray(labels)[picked].T, 0)
            ax.imshow(overlay, cmap=LABEL_CMAP, vmin=0, vmax=len(TISSUES) - 1, alpha=alpha, origin="lower", interpolation="nearest")
        ax.set_title(f"{plane} {center[axis]}")
        ax.set_axis_off()
    if labels is not None:
        present = set(np.unique(labels).tolist())
        handles = [Patch(color=t.color, label=t.short) for t in TISSUES[1:] if t.value in present]
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
