"""What the generator's figures show, computed: a sample after each stage, and its contrast read two ways.

:func:`stage_views` replays one drawn sample with the stages after each one switched off
(:func:`fss.synth.generator.up_to_stage`); :func:`partial_volume_views` reads its contrast stage
by nearest neighbour and linearly. :func:`fss.viz.plot_stages` and :func:`fss.viz.plot_partial_volume`
draw them (notebook 02).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from fss.labels import TISSUES
from fss.synth.bias import bias_field
from fss.synth.generator import Generator, up_to_stage
from fss.synth.stages import STAGE_REGISTRY

CORTEX = next(t.value for t in TISSUES if t.short == "GM")


@dataclass(frozen=True)
class StageView:
    """One axial slice of the first sample of a batch after one stage.

    Attributes
    ----------
    stage : str
        ``"subclasses"`` (the seed map as drawn) or a name of :data:`fss.synth.stages.STAGES`.
    title : str
        What the stage does, numbered in the order of application, and ``(off here)`` for a stage not
        drawn.
    seed_map, labels : np.ndarray, (X, Y)
        Seed values ``10 * M + j`` and FeTA labels.
    image : np.ndarray, (X, Y)
        Intensities in [0, 1]; before the contrast stage, the seed map normalised.
    change : np.ndarray or None, (X, Y)
        The image minus the image after the stage before (None up to the contrast stage).
    bias_field : np.ndarray or None, (X, Y)
        The multiplicative field of the bias stage (None for the other stages, and when it is off).
    """

    stage: str
    title: str
    seed_map: np.ndarray
    labels: np.ndarray
    image: np.ndarray
    change: np.ndarray | None
    bias_field: np.ndarray | None


def stage_views(generator: Generator, params: dict, z: int | None = None) -> list[StageView]:
    """The first sample of ``params`` after each stage in turn, on one axial slice.

    Parameters
    ----------
    generator : Generator
        The generator that drew ``params`` (its configuration says how the stages apply them).
    params : dict
        Drawn parameters (:meth:`Generator.draw`).
    z : int, optional
        The axial slice (output voxels); default the slice through the middle of the final labels' extent.

    Returns
    -------
    list of StageView
        ``"subclasses"`` first, then every stage in the order they are applied.
    """
    titles = {"subclasses": "subclasses: seed map", **{stage.name: stage.title for stage in STAGE_REGISTRY}}
    if z is None:
        z = int(np.argwhere(generator.apply(params).labels[0].cpu().numpy() > 0)[:, 2].mean())
    views, previous = [], None
    for row, (stage, title) in enumerate(titles.items(), start=1):
        step = generator.apply(up_to_stage(params, stage))
        image = step.image[0, 0, :, :, z].cpu().numpy().copy()  # copies: a view would keep the whole volume alive
        shows_intensities = stage not in ("subclasses", "spatial")
        field = None
        if stage == "bias" and params["bias"] is not None:
            bias = params["bias"]
            field = bias_field(float(bias.scale[0]), float(bias.std[0]), int(bias.seed[0]), generator.output_shape, torch.device("cpu"))
            field = field[0, :, :, z].numpy().copy()
        off = stage != "subclasses" and params.get(stage) is None
        views.append(
            StageView(
                stage=stage,
                title=f"{row}. {title}" + (" (off here)" if off else ""),
                seed_map=step.seed_map[0, :, :, z].cpu().numpy().copy(),
                labels=step.labels[0, :, :, z].cpu().numpy().copy(),
                image=image,
                change=image - previous if shows_intensities and previous is not None else None,
                bias_field=field,
            )
        )
        previous = image if shows_intensities else None
        del step
    return views


@dataclass(frozen=True)
class PartialVolumeView:
    """A window around the cortex of the contrast stage read by nearest neighbour and linearly.

    Attributes
    ----------
    windows : dict of str to np.ndarray, (rows, columns)
        ``"nearest"`` and ``"linear"``: intensities on the 0-300 scale, normalised to [0, 1] per sample.
    labels : np.ndarray, (rows, columns)
        The window's FeTA labels (read by nearest neighbour either way).
    profiles : dict of str to np.ndarray, (rows,)
        Each reading's intensities down the window's column ``line``.
    line : int
        The window's column that crosses the cortex once.
    cortex : tuple of int
        First and last row of the window where the labels on that line are cortex.
    """

    windows: dict[str, np.ndarray]
    labels: np.ndarray
    profiles: dict[str, np.ndarray]
    line: int
    cortex: tuple[int, int]


def _first_cortex_run(labels: np.ndarray, column: int) -> tuple[int, int] | None:
    """(first, last) row of the first run of cortex down ``column`` of a 2-D label slice; None if it holds none."""
    found = np.flatnonzero(labels[:, column] == CORTEX)
    if len(found) == 0:
        return None
    last = found[0]
    while last + 1 < len(labels) and labels[last + 1, column] == CORTEX:
        last += 1
    return int(found[0]), int(last)


def partial_volume_views(generator: Generator, params: dict, half_width: int = 12, thickest: int = 3) -> PartialVolumeView:
    """The first sample's contrast stage read both ways, around a line that crosses thin cortex once.

    On the middle axial slice, the line is the column nearest the middle (at least ``half_width`` voxels from
    the sides) whose first run of cortex is thinner than ``thickest`` voxels: across the cortex, not along a
    sulcus. The window spans ``half_width`` columns either side of it, and from 6 rows above the cortex to 18
    rows below its start.

    Raises
    ------
    ValueError
        If no column of the slice crosses cortex that thin.
    """
    after_contrast = up_to_stage(params, "contrast")
    read = {}
    for how in ("nearest", "linear"):
        spatial = dataclasses.replace(generator.config.spatial, image_interpolation=how)
        read[how] = generator.with_config(dataclasses.replace(generator.config, spatial=spatial)).apply(after_contrast)
    middle = generator.output_shape[2] // 2
    labels = read["linear"].labels[0, :, :, middle].cpu().numpy().copy()
    runs = {c: _first_cortex_run(labels, c) for c in range(half_width, labels.shape[1] - half_width)}
    thin = [c for c, run in runs.items() if run is not None and run[1] - run[0] < thickest]
    if not thin:
        raise ValueError(f"no column of the middle slice crosses cortex thinner than {thickest} voxels")
    column = min(thin, key=lambda c: abs(c - labels.shape[1] // 2))
    first, last = runs[column]
    rows, columns = slice(max(first - 6, 0), first + 18), slice(column - half_width, column + half_width)
    return PartialVolumeView(
        windows={how: sample.image[0, 0, rows, columns, middle].cpu().numpy().copy() for how, sample in read.items()},
        labels=labels[rows, columns].copy(),
        profiles={how: sample.image[0, 0, rows, column, middle].cpu().numpy().copy() for how, sample in read.items()},
        line=column - columns.start,
        cortex=(first - rows.start, last - rows.start),
    )
