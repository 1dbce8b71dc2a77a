"""Segmentation metrics per FeTA tissue: Dice, 95th-percentile Hausdorff distance, volume similarity.

Empty labels, a convention used by every function here:

- absent from both maps: every metric is NaN (nothing to measure; averages skip it);
- absent from exactly one map: Dice 0, volume similarity 0, HD95 infinite.

Example
-------
>>> import numpy as np
>>> a = np.zeros((10, 10, 10), bool); a[2:6, 2:6, 2:6] = True
>>> round(dice(a, a), 3), hausdorff95(a, a, (1.0, 1.0, 1.0)), volume_similarity(a, a)
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from nibabel.orientations import inv_ornt_aff, io_orientation
from scipy import ndimage

from fss.io import check_image_argument, load_nifti
from fss.labels import TISSUE_ORDER, TISSUES, check_feta, conventions_that_fit, to_feta

METRICS = ("dice", "hd95", "volume_similarity")


def check_masks(prediction: np.ndarray, reference: np.ndarray) -> None:
    """Raise ``ValueError`` unless both are boolean arrays of one shape.

    A label map passed as a mask would count every non-zero label as foreground, and masks of
    two shapes would broadcast: both give a number that looks right and is not.
    """
    for name, mask in (("prediction", prediction), ("reference", reference)):
        if not isinstance(mask, np.ndarray) or mask.dtype != bool:
            raise ValueError(f"{name}: expected a boolean mask (for example labels == 3), got {getattr(mask, 'dtype', type(mask).__name__)}")
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction and reference masks differ in shape: {prediction.shape} and {reference.shape}")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice overlap ``2 |P & R| / (|P| + |R|)`` of two boolean masks of one shape."""
    check_masks(prediction, reference)
    total = np.count_nonzero(prediction) + np.count_nonzero(reference)
    return float(2 * np.count_nonzero(prediction & reference) / total) if total else float("nan")


def volume_similarity(prediction: np.ndarray, reference: np.ndarray) -> float:
    """``1 - |Vp - Vr| / (Vp + Vr)`` of two boolean masks of one shape (1: same volume, wherever it is)."""
    check_masks(prediction, reference)
    vp, vr = np.count_nonzero(prediction), np.count_nonzero(reference)
    return float(1 - abs(vp - vr) / (vp + vr)) if vp + vr else float("nan")


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks, in mm.

    The larger of the two directed 95th percentiles: of the distances from each surface voxel of
    one mask to the nearest surface voxel of the other, measured with the voxel ``spacing``
    (mm per axis, anisotropic spacing honoured).
    """
    check_masks(prediction, reference)
    has_p, has_r = bool(prediction.any()), bool(reference.any())
    if not (has_p or has_r):
        return float("nan")
    if has_p != has_r:
        return float("inf")
    both = np.argwhere(prediction | reference)
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(both.min(0), both.max(0)))
    p_surface, r_surface = _surface(prediction[box]), _surface(reference[box])
    to_reference = ndimage.distance_transform_edt(~r_surface, sampling=spacing)[p_surface]
    to_prediction = ndimage.distance_transform_edt(~p_surface, sampling=spacing)[r_surface]
    return float(max(np.percentile(to_reference, 95), np.percentile(to_prediction, 95)))


def tissue_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> pd.DataFrame:
    """Every metric for every FeTA tissue of one pair of label maps.

    Parameters
    ----------
    prediction, reference : np.ndarray, (X, Y, Z)
        FeTA label maps on one grid.
    spacing : (3,) floats
        Voxel size in mm.

    Returns
    -------
    pandas.DataFrame with columns ``tissue``, ``metric``, ``value`` (7 tissues x 3 metrics rows).
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    rows = []
    for tissue in TISSUES[1:]:
        p, r = prediction == tissue.value, reference == tissue.value
        values = {"dice": dice(p, r), "hd95": hausdorff95(p, r, spacing), "volume_similarity": volume_similarity(p, r)}
        rows += [{"tissue": tissue.short, "metric": name, "value": values[name]} for name in METRICS]
    return pd.DataFrame(rows)


def labelled_outside_image(prediction: np.ndarray, image: np.ndarray) -> float:
    """Share (0-1) of the labelled voxels of ``prediction`` (label above 0) where ``image`` is 0.

    In a brain-masked scan every voxel outside the mask is 0: tissue labelled there is painted into
    the background. NaN when nothing is labelled.
    """
    if np.shape(prediction) != np.shape(image):
        raise ValueError(f"prediction {np.shape(prediction)} and image {np.shape(image)} differ in shape")
    labelled = np.asarray(prediction) > 0
    count = np.count_nonzero(labelled)
    return float(np.count_nonzero(labelled & (np.asarray(image) == 0)) / count) if count else float("nan")


def dice_per_tissue(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of each FeTA tissue (1..7): tissue short name -> Dice, NaN where absent from both."""
    if np.shape(prediction) != np.shape(reference):
        raise ValueError(f"prediction {np.shape(prediction)} and reference {np.shape(reference)} differ in shape")
    return {t.short: dice(prediction == t.value, reference == t.value) for t in TISSUES[1:]}


def _feta_values(labels: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The voxels of ``labels``, checked to be one 3-D map of whole numbers 0-7 (FeTA); a ValueError says otherwise."""
    data = np.asarray(labels.dataobj)
    if data.ndim != 3:
        raise ValueError(f"labels: expected one 3-D label map, got shape {data.shape}")
    check_feta(data, "labels")
    return data


VOLUME_COLUMNS = [*(f"{t.short}_mm3" for t in TISSUES[1:]), "brain_mm3"]
"""The keys of :func:`tissue_volumes`, in order: each tissue's volume, then the brain's (mm^3)."""


def tissue_volumes(labels: nib.spatialimages.SpatialImage) -> dict[str, float]:
    """Volume of each FeTA tissue and of the brain, in mm^3, from the voxel size.

    The brain is every tissue but the extra-axial CSF (tissues 2-7, the ventricles included):
    the eCSF surrounds the brain and is reported on its own.

    Returns
    -------
    dict
        ``{"<short name>_mm3": volume, ..., "brain_mm3": tissues 2-7}``.

    Raises
    ------
    ValueError
        Unless ``labels`` is one 3-D map of whole numbers 0-7 (the FeTA convention): a 4-D map,
        a probability or interpolated map, or another convention would give volumes that look
        right and are not.
    """
    data = _feta_values(labels)
    voxel = abs(float(np.linalg.det(labels.affine[:3, :3])))
    counts = np.bincount(data.astype(np.int64).ravel(), minlength=len(TISSUES))
    volumes = [float(counts[t.value] * voxel) for t in TISSUES[1:]]
    brain = float(sum(v for t, v in zip(TISSUES[1:], volumes) if t.short != "eCSF"))
    return dict(zip(VOLUME_COLUMNS, [*volumes, brain]))


BRAIN_AXES_ORDER = (1, 0, 2)
"""The grid axes (RAS order) that the brain's principal axes lie along, longest first: anterior-posterior, left-right,
inferior-superior (standard deviations about 1.2 : 1 : 0.8 in the CRL and Wu atlases at every age)."""


DISTINCT_SPREAD = 1.05
"""How much longer (standard deviation of the voxel positions) a principal axis must be than the next for
:func:`brain_turn_degrees` to tell them apart."""


def brain_turn_degrees(labels: nib.spatialimages.SpatialImage) -> float:
    """How far the brain lies turned in its grid: the largest angle (degrees) between its principal axes and the grid's.

    The brain (every FeTA tissue but the extra-axial CSF) is longest front to back, then left to right, then bottom to top:
    its principal axes (of the voxel positions in mm, by decreasing spread) are compared with the grid's voxel axes
    reoriented to RAS (:data:`BRAIN_AXES_ORDER`), the axes that segmentation works on. An upright atlas gives 8-14 degrees
    (its principal axes are not exactly its grid's); a brain turned by ``a`` degrees about one axis, about ``a`` more.

    Returns
    -------
    float
        Degrees (0-90); nan without brain voxels, or when the spreads are too alike to tell the axes apart (each less
        than :data:`DISTINCT_SPREAD` times the next; the atlases' are 1.12-1.32 times).

    Raises
    ------
    ValueError
        Unless ``labels`` is one 3-D FeTA label map.
    """
    data = _feta_values(labels)
    voxels = np.argwhere((data > 0) & (data != 1)).astype(float)
    if len(voxels) < 4:
        return float("nan")
    ras_affine = labels.affine @ inv_ornt_aff(io_orientation(labels.affine), data.shape)
    grid_axes = ras_affine[:3, :3] / np.linalg.norm(ras_affine[:3, :3], axis=0)  # columns: the RAS grid's axes in world space
    positions = voxels @ labels.affine[:3, :3].T  # mm, world space
    variance, axes = np.linalg.eigh(np.cov(positions.T))
    order = np.argsort(variance)[::-1]
    spread = np.sqrt(np.clip(variance[order], 0, None))  # mm, longest first
    if not (spread[0] >= DISTINCT_SPREAD * spread[1] and spread[1] >= DISTINCT_SPREAD * spread[2]):
        return float("nan")  # a round shape: its axes are not the brain's
    principal = axes[:, order]  # columns, longest spread first
    cosines = [abs(principal[:, k] @ grid_axes[:, axis]) for k, axis in enumerate(BRAIN_AXES_ORDER)]
    return float(np.degrees(np.arccos(np.clip(min(cosines), 0.0, 1.0))))


SCORE_COLUMNS = ["case", "tissue", "metric", "value"]
"""Columns of :func:`score_label_maps`; :data:`fss.evaluation.RESULT_COLUMNS` puts the model and the dataset in front."""


def score_label_maps(
    predictions: Sequence[str | os.PathLike | nib.spatialimages.SpatialImage],
    references: Sequence[str | os.PathLike | nib.spatialimages.SpatialImage],
    names: Sequence[str] | None = None,
    convention: str = "feta",
) -> pd.DataFrame:
    """Metrics of predicted label maps against references, as one tidy table.

    Parameters
    ----------
    predictions, references : sequences of paths or nibabel images
        FeTA label maps, pairwise on the same grid.
    names : sequence of str, optional
        Case names for the table; default the prediction file names.
    convention : str
        Label convention of the references (a key of :data:`fss.labels.CONVENTIONS`); predictions are FeTA.

    Returns
    -------
    pandas.DataFrame with columns :data:`SCORE_COLUMNS`; :func:`mean_over_cases` reduces it.

    Raises
    ------
    TypeError
        Naming it (``predictions[i]``, ``references[i]``), for an item that is neither a path nor a nibabel image.
    ValueError
        If the counts of predictions, references and names differ, a pair is not on one grid, or a reference holds values that
        ``convention`` does not define (the message names the file, and a convention that fits).

    Warns
    -----
    UserWarning
        When a reference read in another convention that its values fit agrees with the
        prediction far better (mean Dice at least :data:`LIKELIER_CONVENTION_GAIN` higher), as
        atlas labels read as FeTA do.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if names is not None and len(names) != len(predictions):
        raise ValueError(f"names: {len(names)} names for {len(predictions)} predictions; give one name per prediction")
    for argument, images in (("predictions", predictions), ("references", references)):
        for index, image in enumerate(images):
            check_image_argument(image, f"{argument}[{index}]")
    tables = []
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        p, r = load_nifti(prediction), load_nifti(reference)
        name = (
            names[index]
            if names is not None
            else (os.fspath(prediction) if not isinstance(prediction, nib.spatialimages.SpatialImage) else f"image {index}")
        )
        if p.shape != r.shape:
            raise ValueError(f"{name}: prediction and reference are on different grids (shapes {p.shape} and {r.shape})")
        if not np.allclose(p.affine, r.affine, atol=1e-3):
            worst = np.abs(p.affine - r.affine).max()
            raise ValueError(
                f"{name}: prediction and reference have the same shape but different affines (differing by up to {worst:.3g} mm): "
                f"{np.round(p.affine[:3], 3).tolist()} and {np.round(r.affine[:3], 3).tolist()}"
            )
        source = os.fspath(reference) if not isinstance(reference, nib.spatialimages.SpatialImage) else f"{name} (reference)"
        predicted, reference_values = to_feta(np.asarray(p.dataobj)), np.asarray(r.dataobj)
        reference_feta = _reference_in_feta(reference_values, convention, source)
        _warn_of_a_likelier_convention(predicted, reference_feta, reference_values, convention, source)
        table = tissue_metrics(predicted, reference_feta, voxel_sizes(p.affine))
        tables.append(table.assign(case=name)[SCORE_COLUMNS])
    return pd.concat(tables, ignore_index=True)


def _reference_in_feta(labels: np.ndarray, convention: str, source: str) -> np.ndarray:
    """``labels`` in FeTA values; a ValueError names ``source`` and the conventions that would fit."""
    try:
        return to_feta(labels, convention)
    except ValueError as error:
        fitting = [name for name in conventions_that_fit(labels) if name != convention]
        hint = f"; it fits the {fitting[0]!r} convention: --convention {fitting[0]}" if fitting else ""
        raise ValueError(f"{source}: {error}{hint}") from error


LIKELIER_CONVENTION_GAIN = 0.2
"""Mean Dice by which another label convention must beat the one given before :func:`evaluate` warns."""


def _warn_of_a_likelier_convention(prediction: np.ndarray, reference: np.ndarray, values: np.ndarray, convention: str, source: str) -> None:
    """Warn when the reference, read in another convention that its values fit, agrees far better with the prediction."""
    given = np.nanmean(list(dice_per_tissue(prediction, reference).values()))
    for other in conventions_that_fit(values):
        if other == convention:
            continue
        better = np.nanmean(list(dice_per_tissue(prediction, to_feta(values, other)).values()))
        if better >= given + LIKELIER_CONVENTION_GAIN:
            warnings.warn(
                f"{source}: read in the {convention!r} label convention the reference agrees with the prediction at a mean Dice of "
                f"{given:.2f}, in the {other!r} convention at {better:.2f}: is it in that one? (--convention {other})",
                stacklevel=3,
            )


def with_tissue_means(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with, for each case and metric, a row of tissue ``"mean"``: the case's mean over the tissues of
    :data:`fss.labels.TISSUE_ORDER` (NaN skipped; an infinite HD95 keeps it infinite).

    A case is what a row says in every column other than ``tissue`` and ``value`` (``case`` and ``metric``
    here, also ``model`` and ``dataset`` in :func:`fss.evaluation.evaluate`'s table). Rows of tissue
    ``"mean"`` already there are made again.
    """
    kept = table[table.tissue != "mean"]
    keys = [column for column in table.columns if column not in ("tissue", "value")]
    tissues = kept[kept.tissue.isin(TISSUE_ORDER)]
    means = tissues.groupby(keys, sort=False, dropna=False).value.mean().reset_index().assign(tissue="mean")
    return pd.concat([kept, means[table.columns]], ignore_index=True)


def mean_over_cases(table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """The one reduction of fss's tables of metrics: per group of ``by``, metric and tissue, the mean over the cases.

    Tissue ``"mean"`` is the mean over the cases of each case's mean over its tissues
    (:func:`with_tissue_means`): the mean Dice of a case, averaged. NaN (a tissue absent from both maps) is
    skipped; an infinite HD95 (a tissue missed or invented) keeps the mean infinite, so that it is seen.

    Parameters
    ----------
    table : pandas.DataFrame
        Long, one row per case, tissue and metric: :data:`SCORE_COLUMNS`, :data:`fss.evaluation.RESULT_COLUMNS` or
        an experiment's results.
    by : sequence of str
        Columns of ``table`` to keep apart (``("model",)``, ``("dataset", "model")``); NaN is a group of its own.

    Returns
    -------
    pandas.DataFrame
        Columns ``*by``, ``metric``, ``tissue``, ``value``; groups in the order they first appear.
    """
    keys = [*by, "metric", "tissue"]
    return with_tissue_means(table).groupby(keys, sort=False, dropna=False).value.mean().reset_index()


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`mean_over_cases` of a table of :func:`score_label_maps`, as rows tissues (then ``mean``) and columns metrics."""
    means = mean_over_cases(table)
    return means.pivot(index="tissue", columns="metric", values="value").reindex(index=[*TISSUE_ORDER, "mean"], columns=list(METRICS))
