"""Scoring models as users meet them: each scan segmented on its own grid, as ``fss segment`` does.

Validation during training (:func:`fss.train.validate`) scores on the working grid, where the
network predicts; the numbers a user gets come after the probabilities are mapped back onto the
scan's grid (:func:`fss.infer.segment`), which is what is scored here.

- :func:`atlas_cases` lists the cases of an evaluation (held-out CRL ages, the Wu atlas with
  and without its brain mask, CRL ages under each stress of :mod:`fss.stress`), and
  :func:`clinical_cases` the Wu ages re-acquired as clinical stacks; each is loaded only when
  scored.
- :func:`evaluate` segments every case with every model and measures every tissue
  (:func:`fss.metrics.tissue_metrics`): the long table notebook 04 writes as ``metrics.tsv``.
- :func:`with_stress_columns`, :func:`tissue_table` and :func:`drops_from_clean` read that table.
- :func:`turned_agreement` segments copies of a scan on turned grids and compares them with the
  segmentation of the scan itself; :func:`turned_brains` turns the brain within the scan's grid
  and scores each copy against the labels turned with it.
- :func:`crl_dice` is the short form for one model: Dice per tissue of CRL ages.

Example
-------
>>> from fss.checkpoint import load_checkpoint
>>> scores = crl_dice(load_checkpoint("outputs/03_training/run/best", "cpu"), ages=(23, 27, 31, 35))  # doctest: +SKIP
>>> scores.mean(axis=1)  # mean Dice over the seven tissues, per age  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from nibabel.processing import resample_from_to
from tqdm.auto import tqdm

from fss import datasets
from fss.checkpoint import model_and_metadata
from fss.infer import TURNED_BRAIN_WARNING, segment
from fss.io import load_nifti
from fss.labels import TISSUE_ORDER
from fss.metrics import SCORE_COLUMNS, brain_turn_degrees, dice_per_tissue, labelled_outside_image, mean_over_cases, tissue_metrics
from fss.pretrained import NOTEBOOK_03
from fss.stress import CLINICAL_SLICES_MM, clinical_stack, stress, turn, turn_anatomy
from fss.unet import UNet

CRL_HELD_OUT = "CRL (held out)"
WU_WHOLE_HEAD = "Wu 2021, whole head"
WU_BRAIN_MASK = "Wu 2021, brain mask"
STRESS_PREFIX = "stress: "
"""Datasets of :func:`atlas_cases`: the clean ones, and ``"stress: <kind>"`` for each stress."""
CLINICAL_STACKS = "Wu 2021, clinical stacks"
"""The Wu ages re-acquired as single clinical stacks (:func:`clinical_cases`, :func:`fss.stress.clinical_stack`)."""
CLEAN_DATASETS = (CRL_HELD_OUT, WU_BRAIN_MASK, WU_WHOLE_HEAD)
"""The clean datasets, in the order tables show them."""
RESULT_COLUMNS = ["model", "dataset", *SCORE_COLUMNS]
"""Columns of the table :func:`evaluate` returns: :data:`fss.metrics.SCORE_COLUMNS` with the model and the dataset in front."""
OUTSIDE_IMAGE = "labelled_outside_image"
"""The metric of :func:`evaluate` (tissue ``all``) that gives the share (0-1) of a case's labelled voxels where its image is
0 (:func:`fss.metrics.labelled_outside_image`): tissue painted into a masked background."""

READY_MADE = "ready-made"
"""What :func:`trained_checkpoint` (notebook 04's ``trained_dir``) takes for notebook 03's checkpoint that fss ships."""

Model = str | os.PathLike | tuple[UNet, dict]
"""A checkpoint path, or (model, metadata) from :func:`fss.checkpoint.load_checkpoint`."""


@dataclass(frozen=True)
class Case:
    """One case of an evaluation: an atlas volume, brain-masked or stressed as its dataset says.

    ``name`` is the volume's name, followed by ``severity <n>`` under a stress, or by the slices of
    a clinical stack (``stack``: the axis across them and their thickness in mm).
    """

    dataset: str
    name: str
    record: datasets.Record
    mask: bool = False
    stress: str | None = None
    severity: int | None = None
    seed: int = 0
    stack: tuple[int, float] | None = None

    def load(self) -> tuple[nib.Nifti1Image, np.ndarray]:
        """The scan on its own grid and its FeTA labels (X, Y, Z) on the same grid."""
        image = load_nifti(self.record.image)
        if self.stack is not None:
            axis, slice_mm = self.stack
            draws = (self.seed, self.record.gestational_age, axis, round(slice_mm * 10))
            stack, labels, _ = clinical_stack(image, self.record.feta_labels(), load_nifti(self.record.mask), axis, slice_mm, seed=draws)
            return stack, np.asarray(labels.dataobj)
        if not self.mask and self.stress is None:
            return image, np.asarray(self.record.feta_labels().dataobj)
        data = np.asarray(image.dataobj, dtype=np.float32)
        if self.mask:
            data = data * (np.asarray(load_nifti(self.record.mask).dataobj) > 0)
        if self.stress is not None:
            data = stress(data, voxel_sizes(image.affine), self.stress, self.severity, seed=self.seed)
        return nib.Nifti1Image(data, image.affine), np.asarray(self.record.feta_labels().dataobj)


def atlas_cases(
    crl_ages: Sequence[int] = (),
    wu_ages: Sequence[int] = (),
    stress_ages: Sequence[int] = (),
    stresses: Sequence[str] = (),
    severities: Sequence[int] = (),
    wu_whole_head: bool = True,
    seed: int = 0,
) -> list[Case]:
    """The cases of an evaluation, in this order: CRL ages (clean), Wu ages (whole head if ``wu_whole_head``, then
    brain-masked), CRL ``stress_ages`` under each of ``stresses`` (names in :data:`fss.stress.SEVERITIES`) at each of
    ``severities`` (1-3), drawn from ``seed``."""
    cases = [Case(CRL_HELD_OUT, r.name, r) for r in datasets.fetch_crl_atlas(ages=crl_ages)] if crl_ages else []
    for record in datasets.fetch_wu_atlas(ages=wu_ages) if wu_ages else []:
        if wu_whole_head:
            cases.append(Case(WU_WHOLE_HEAD, record.name, record))
        cases.append(Case(WU_BRAIN_MASK, record.name, record, mask=True))
    for record in datasets.fetch_crl_atlas(ages=stress_ages) if stress_ages and stresses and severities else []:
        for kind in stresses:
            for severity in severities:
                cases.append(Case(STRESS_PREFIX + kind, f"{record.name} severity {severity}", record, stress=kind, severity=severity, seed=seed))
    return cases


def clinical_cases(
    wu_ages: Sequence[int], slices_mm: Sequence[float] = CLINICAL_SLICES_MM, axes: Sequence[int] = (0, 1, 2), seed: int = 0
) -> list[Case]:
    """The clinical-like test set: each Wu age (whole head) as a single stack with slices of each of ``slices_mm`` across
    each of ``axes`` of its grid, brain-masked and cropped as :func:`fss.stress.clinical_stack` draws from ``seed``.

    The Wu atlas chose nothing in fss (no checkpoint, recipe or setting), so these are test cases.
    """
    cases = []
    for record in datasets.fetch_wu_atlas(ages=wu_ages) if wu_ages else []:
        for slice_mm in slices_mm:
            for axis in axes:
                name = f"{record.name} {slice_mm:g} mm slices across axis {axis}"
                cases.append(Case(CLINICAL_STACKS, name, record, seed=seed, stack=(axis, float(slice_mm))))
    return cases


def trained_checkpoint(path: str | os.PathLike) -> tuple[Path, str]:
    """The checkpoint that ``path`` stands for, and how it was found.

    ``path`` is notebook 03's output folder (its ``summary.json`` names the checkpoint it chose), a
    training run's folder, or one notebook 03 stopped before its summary (the run's ``best``, the
    checkpoint validation chose, as notebook 03 takes it), a checkpoint (a path without suffix,
    or either of its files), or :data:`READY_MADE` for the checkpoint of notebook 03 that fss ships
    (:data:`fss.pretrained.NOTEBOOK_03`).

    Raises
    ------
    FileNotFoundError
        Naming ``path`` and what it should hold, when it is none of these.
    """
    if str(path) == READY_MADE:
        return NOTEBOOK_03, "notebook 03's ready-made checkpoint, shipped with fss (its defaults, seed 0)"
    path = Path(path)
    summary = path / "summary.json"
    if summary.is_file():
        return Path(json.loads(summary.read_text())["checkpoint"]), f"chosen by {summary}"
    for run in (path, path / "run"):
        if (run / "best.safetensors").is_file():
            return run / "best", f"the best checkpoint of the training run in {run} (no summary.json: stopped before its end?)"
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if stem.with_suffix(".safetensors").is_file():
        return stem, "a checkpoint"
    raise FileNotFoundError(
        f"{path}: neither notebook 03's output folder (summary.json), a training run's folder (best.safetensors) "
        f"nor a checkpoint (.safetensors with its .json): give one of them, or {READY_MADE!r} for the checkpoint fss ships"
    )


def evaluate(models: Mapping[str, Model], cases: Sequence[Case], device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Every model's segmentation of every case, on the case's own grid, measured per tissue.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RESULT_COLUMNS`: one row per model, case, tissue (FeTA short names) and
        metric (``dice``, ``hd95`` in mm, ``volume_similarity``), and per model and case the share of
        labelled voxels where the image is 0 (tissue ``all``, metric :data:`OUTSIDE_IMAGE`). What segmentation warns of
        is warned again, naming the case and the model.
    """
    rows = []
    for model_name, model in models.items():
        loaded = model_and_metadata(model, device)
        for case in tqdm(cases, desc=model_name, unit="case", disable=not progress):
            image, labels = case.load()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                prediction, _ = segment(image, loaded, device=device)
            for warning in caught:  # passed on with the case they are about
                warnings.warn(f"{case.dataset}, {case.name} ({model_name}): {warning.message}", warning.category, stacklevel=2)
            predicted = np.asarray(prediction.dataobj)
            table = tissue_metrics(predicted, labels, voxel_sizes(image.affine))
            outside = {"tissue": "all", "metric": OUTSIDE_IMAGE, "value": labelled_outside_image(predicted, np.asarray(image.dataobj))}
            table = pd.concat([table, pd.DataFrame([outside])], ignore_index=True)
            rows.append(table.assign(model=model_name, dataset=case.dataset, case=case.name))
    return pd.concat(rows, ignore_index=True)[RESULT_COLUMNS] if rows else pd.DataFrame(columns=RESULT_COLUMNS)


def with_stress_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A table of :func:`evaluate` with ``stress`` (the kind) and ``severity`` columns, empty for clean datasets."""
    return table.assign(
        stress=table.dataset.str.extract(f"^{STRESS_PREFIX}(.+)$", expand=False),
        severity=pd.to_numeric(table.case.str.extract(r"severity (\d)", expand=False)),
    )


def tissue_table(results: pd.DataFrame, index: Sequence[str], metric: str) -> pd.DataFrame:
    """One metric's :func:`fss.metrics.mean_over_cases`: rows ``index`` (columns of ``results``, sorted), a column per
    tissue, then ``mean`` (the mean over the cases of each case's mean over its tissues)."""
    means = mean_over_cases(results[results.metric == metric], by=index)
    table = means.set_index([*index, "tissue"]).value.unstack("tissue").sort_index()
    return table[[*(t for t in TISSUE_ORDER if t in table.columns), "mean"]].rename_axis(columns="tissue")


def drops_from_clean(results: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Mean Dice (:func:`fss.metrics.mean_over_cases`) of each model on the clean CRL images of the stressed ages, and
    under each stress and severity.

    Returns
    -------
    clean : pandas.Series, indexed by model
    stressed : pandas.Series, indexed by (model, stress, severity)
        ``clean - stressed`` is the drop from clean: positive numbers are losses.

    Raises
    ------
    ValueError
        If a stressed age has no clean CRL case in ``results``.
    """
    dice = with_stress_columns(results[results.metric == "dice"])
    stressed = dice[dice.stress.notna()]
    ages = set(stressed.case.str.extract(r"^(\S+) severity", expand=False))
    clean_cases = dice[(dice.dataset == CRL_HELD_OUT) & dice.case.isin(ages)]
    missing = sorted(ages - set(clean_cases.case))
    if missing:
        raise ValueError(f"the clean images of {missing} were not evaluated: every stressed age must also be a CRL age of the evaluation")
    by_stress = mean_over_cases(stressed.assign(severity=stressed.severity.astype(int)), by=["model", "stress", "severity"])
    clean = mean_over_cases(clean_cases, by=["model"])
    return (
        clean[clean.tissue == "mean"].set_index("model").value.sort_index(),
        by_stress[by_stress.tissue == "mean"].set_index(["model", "stress", "severity"]).value.sort_index(),
    )


def turned_agreement(
    record: datasets.Record, models: Mapping[str, Model], degrees: Sequence[float], device: str = "cpu", progress: bool = True
) -> pd.DataFrame:
    """How much each model's segmentation of a scan changes when the scan's grid is turned.

    The scan is resampled onto grids turned by each of ``degrees`` about each world axis
    (:func:`fss.stress.turn`); each copy is segmented and its labels are resampled (nearest
    neighbour) back onto the original grid, where they are compared with the segmentation of
    the scan itself, inside the voxels both grids cover.

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``degrees``, ``axis`` (x, y or z), ``agreement`` (mean Dice over the
        tissues against the plain segmentation) and ``labels through the grids`` (the same for
        the reference labels sent through the turned grid and back: the floor that resampling
        alone sets).
    """
    image = load_nifti(record.image)
    reference = record.feta_labels()
    field_of_view = nib.Nifti1Image(np.ones(image.shape, np.int16), image.affine)
    loaded = {name: model_and_metadata(model, device) for name, model in models.items()}

    def back_to_original(labels: nib.spatialimages.SpatialImage) -> np.ndarray:
        return np.asarray(resample_from_to(labels, image, order=0).dataobj)

    plain = {name: np.asarray(segment(image, model, device=device)[0].dataobj) for name, model in loaded.items()} if degrees else {}
    rows = []
    turns = [(d, axis) for d in degrees for axis in range(3)]
    for turned_degrees, axis in tqdm(turns, desc="turned copies", unit="copy", disable=not progress):
        turned = turn(image, turned_degrees, axis)
        inside = back_to_original(turn(field_of_view, turned_degrees, axis, mode="nearest")) > 0
        labels_back = back_to_original(turn(reference, turned_degrees, axis, mode="nearest"))
        resampling = np.mean(list(dice_per_tissue(labels_back * inside, np.asarray(reference.dataobj) * inside).values()))
        for name, model in loaded.items():
            back = back_to_original(segment(turned, model, device=device)[0])
            agreement = np.mean(list(dice_per_tissue(back * inside, plain[name] * inside).values()))
            row = {"model": name, "degrees": turned_degrees, "axis": "xyz"[axis], "agreement": agreement}
            rows.append({**row, "labels through the grids": resampling})
    return pd.DataFrame(rows, columns=["model", "degrees", "axis", "agreement", "labels through the grids"])


def turned_brains(
    image: nib.spatialimages.SpatialImage,
    labels: nib.spatialimages.SpatialImage,
    models: Mapping[str, Model],
    degrees: Sequence[float],
    device: str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """How each model segments a brain turned within the scan's grid, as a fetus lies at any angle in the scanner.

    The anatomy of ``image`` and its FeTA ``labels`` is turned by each of ``degrees`` about each world axis on the same
    grid (:func:`fss.stress.turn_anatomy`); each copy, and the scan itself (``degrees`` 0, axis ``-``), is segmented as
    ``fss segment`` does and scored against the labels turned with it.

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``axis`` (``-``, x, y or z), ``degrees``, ``dice`` (mean over the tissues), ``turn_read``
        (the brain's turn read from the segmentation, :func:`fss.metrics.brain_turn_degrees`) and ``warned`` (whether
        segmentation warned of a turned brain: ``turn_read`` above :data:`fss.infer.TURNED_BRAIN_DEGREES`). Other
        warnings of segmentation are passed on.
    """
    loaded = {name: model_and_metadata(model, device) for name, model in models.items()}
    turns = [(0.0, None), *((float(d), axis) for d in degrees for axis in range(3))]
    rows = []
    for angle, axis in tqdm(turns, desc="turned brains", unit="turn", disable=not progress):
        scan = image if axis is None else turn_anatomy(image, angle, axis)
        truth = np.asarray((labels if axis is None else turn_anatomy(labels, angle, axis, mode="nearest")).dataobj)
        for name, model in loaded.items():
            with warnings.catch_warnings(record=True) as caught:  # the turn is on purpose: its warning is a column of the table
                warnings.simplefilter("always")
                segmentation = segment(scan, model, device=device)[0]
            for other in (w for w in caught if not str(w.message).startswith(TURNED_BRAIN_WARNING)):
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
            dice = float(np.nanmean(list(dice_per_tissue(np.asarray(segmentation.dataobj), truth).values())))
            row = {"model": name, "axis": "-" if axis is None else "xyz"[axis], "degrees": angle, "dice": dice}
            warned = any(str(w.message).startswith(TURNED_BRAIN_WARNING) for w in caught)
            rows.append({**row, "turn_read": brain_turn_degrees(segmentation), "warned": warned})
    return pd.DataFrame(rows, columns=["model", "axis", "degrees", "dice", "turn_read", "warned"])


def crl_dice(checkpoint: Model, ages: Sequence[int], device: str = "cpu") -> pd.DataFrame:
    """Per-tissue Dice of the checkpoint's segmentations of CRL atlas ages, on the atlas's own 0.8 mm grid.

    Parameters
    ----------
    checkpoint : path, or (model, metadata) from :func:`fss.checkpoint.load_checkpoint`
    ages : sequence of int
        Gestational ages (weeks) of the CRL atlas.
    device : str
        Where the network runs.

    Returns
    -------
    pandas.DataFrame: one row per volume (its name), one column per FeTA tissue (``eCSF`` ... ``BS``).
    """
    loaded = model_and_metadata(checkpoint, device)
    rows = {}
    for case in atlas_cases(crl_ages=ages):
        image, labels = case.load()
        prediction, _ = segment(image, loaded, device=device)
        rows[case.name] = dice_per_tissue(np.asarray(prediction.dataobj), labels)
    return pd.DataFrame.from_dict(rows, orient="index")
