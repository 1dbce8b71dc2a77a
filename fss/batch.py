"""Segment many scans into one output: what ``fss segment`` does, for scripts and notebooks too.

:func:`segment_batch` takes image files and BIDS folders, plans one label map per image (refusing two
images that would share one, and any output that would land on an input or inside a raw dataset),
and for each image, under a claim that keeps other processes off its files: judges what is there by
fss's record of it (:mod:`fss.records`: kept, made again, or refused), segments it on its own grid
(:func:`fss.infer.segment`), writes the label map, the probability maps and the QC picture when asked,
and adds the tissue volumes to ``volumes.tsv``. An image that fails is reported and the others go on.

This module imports torch and the plotting libraries only when it segments, so that a refusal of the
plan answers at once.

Example
-------
>>> from fss import pretrained
>>> result = segment_batch(["scan.nii.gz"], "out", pretrained.load("fss-synth-cpu"), model_name="fss-synth-cpu")  # doctest: +SKIP
>>> result.table  # doctest: +SKIP
PosixPath('out/volumes.tsv')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fss import __version__
from fss.bids import check_output_place, check_table, claim_output_place, find_t2w_images, update_table, write_derivative_description
from fss.paths import claimed, is_plain_name, nifti_stem, refuse_to_overwrite_inputs
from fss.records import Request, judge, sha256, sidecar_path, write_record

VOLUMES_TABLE = "volumes.tsv"


@dataclass(frozen=True)
class Job:
    """One image to segment: ``name`` as reported (its path inside its dataset, or its file name), ``source`` the
    image, ``target`` its label map."""

    name: str
    source: Path
    target: Path


@dataclass(frozen=True)
class Extras:
    """What a segmentation writes besides its label map and record: probability maps, a QC picture."""

    probabilities: bool = False
    qc: bool = False

    def paths(self, target: Path) -> list[Path]:
        """The extra files of the label map ``target``, in the order they are written."""
        return [*([probabilities_path(target)] if self.probabilities else []), *([qc_path(target)] if self.qc else [])]


@dataclass(frozen=True)
class Plan:
    """What a batch writes, checked by :func:`plan`: its jobs, the folder of ``volumes.tsv``, the output as given, the
    extra files, and whether a BIDS folder is among the inputs (the output is then a BIDS derivative of fss)."""

    jobs: list[Job]
    folder: Path
    output: Path
    extras: Extras
    dataset: bool


@dataclass
class BatchResult:
    """What :func:`segment_batch` did: ``rows`` of ``volumes.tsv`` (image, segmentation, volumes in mm^3) of the images
    segmented or kept, the names ``kept`` from an earlier run, and ``failed`` (name: reason)."""

    table: Path
    rows: list[dict] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def qc_path(target: Path) -> Path:
    """``x_dseg_qc.png`` for the label map ``x_dseg.nii.gz``."""
    return target.parent / f"{nifti_stem(target)}_qc.png"


def probabilities_path(target: Path) -> Path:
    """``x_probseg.nii.gz`` for the label map ``x_dseg.nii.gz``."""
    return target.parent / f"{nifti_stem(target).removesuffix('_dseg')}_probseg.nii.gz"


def plan(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, extras: Extras = Extras()) -> Plan:
    """The jobs for ``inputs`` (image files and BIDS folders) and the folder of ``volumes.tsv``, checked before anything is written.

    ``output`` is a label map's file name (``.nii.gz`` or ``.nii``) for a single input file, else a folder; a BIDS
    folder's images keep their place in it (``sub-01/anat/sub-01_dseg.nii.gz``).

    Raises
    ------
    FileNotFoundError
        Naming the inputs that do not exist.
    ValueError
        When the output cannot hold the inputs: a file name for several images, two images with one label map, an
        output on an input, inside a raw BIDS dataset or another pipeline's derivative, or a ``volumes.tsv`` fss did
        not write.
    """
    output = Path(output)
    missing = [str(item) for item in inputs if not Path(item).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such file or folder; nothing was segmented")
    names_a_file = bool(output.suffix) and not output.is_dir()
    if len(inputs) == 1 and Path(inputs[0]).is_file() and names_a_file:
        if not output.name.endswith((".nii", ".nii.gz")):
            raise ValueError(f"-o {output}: fss writes NIfTI label maps; end the name in .nii.gz or .nii, or give a folder")
        jobs, folder = [Job(Path(inputs[0]).name, Path(inputs[0]), output)], output.parent
    elif names_a_file:
        raise ValueError(f"-o {output} looks like a file name, but the inputs are several images or a folder: give an output folder")
    else:
        jobs, folder = _folder_jobs([Path(item) for item in inputs], output), output
    files = [folder / VOLUMES_TABLE, *(path for job in jobs for path in [job.target, *extras.paths(job.target), sidecar_path(job.target)])]
    refuse_to_overwrite_inputs(files, [job.source for job in jobs])
    check_output_place(folder)
    from fss.metrics import VOLUME_COLUMNS

    check_table(folder / VOLUMES_TABLE, ["image", "segmentation", *VOLUME_COLUMNS])  # a table of the user's is not taken over
    return Plan(jobs, folder, output, extras, any(Path(item).is_dir() for item in inputs))


def _folder_jobs(inputs: list[Path], output: Path) -> list[Job]:
    """The jobs of image files and BIDS folders written into the folder ``output``; two images with one label map are refused."""
    jobs = []
    for item in inputs:
        if item.is_dir():
            if item.resolve() == output.resolve():
                raise ValueError(f"-o {output} is the input dataset itself: write the segmentations elsewhere, e.g. {output / 'derivatives' / 'fss'}")
            for found in find_t2w_images(item):
                relative = found.image.relative_to(item)
                jobs.append(Job(relative.as_posix(), found.image, output / relative.parent / (found.stem.removesuffix("_T2w") + "_dseg.nii.gz")))
        else:
            jobs.append(Job(item.name, item, output / f"{nifti_stem(item).removesuffix('_T2w')}_dseg.nii.gz"))
    by_target: dict[Path, list[Path]] = {}
    for job in jobs:
        by_target.setdefault(job.target.resolve(), []).append(job.source)
    clashes = [sources for sources in by_target.values() if len(sources) > 1]
    if clashes and len({source.resolve() for source in clashes[0]}) == 1:
        raise ValueError(f"{clashes[0][0]} is given {len(clashes[0])} times; give each image once")
    if clashes:
        raise ValueError(f"{', '.join(map(str, clashes[0]))} would all be written to one label map; segment them into separate folders")
    return jobs


def qc_title(name: str, model_name: str, metadata: dict, volumes: dict) -> str:
    """The QC picture's title: the image, the model and how it was trained, the date, the brain's and the eCSF's volumes
    (``volumes`` from :func:`fss.metrics.tissue_volumes`, in mm^3; shown in ml)."""
    from fss.checkpoint import describe_checkpoint

    return (
        f"{name}\n{model_name}: {describe_checkpoint(metadata)}\n{date.today().isoformat()}, "
        f"brain {volumes['brain_mm3'] / 1000:.0f} ml (without the extra-axial CSF), extra-axial CSF {volumes['eCSF_mm3'] / 1000:.0f} ml"
    )


@dataclass(frozen=True)
class _Settings:
    """How every image of a batch is segmented and what is written for it."""

    model: tuple
    model_name: str
    device: object
    options: dict  # tta, window, overlap: recorded, and passed to fss.infer.segment
    extras: Extras
    overwrite: bool


def _write_segmentation(job: Job, settings: _Settings) -> dict:
    """Segment ``job.source`` into ``job.target`` with the extra files asked for; the tissue volumes (mm^3)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from fss.infer import segment
    from fss.io import SEGMENTATION_DESCRIPTION, load_nifti, save_nifti
    from fss.metrics import tissue_volumes
    from fss.viz import plot_segmentation, save_figure

    scan = load_nifti(job.source)
    labels, probabilities = segment(scan, settings.model, device=settings.device, **settings.options)
    volumes = tissue_volumes(labels)
    description = f"{SEGMENTATION_DESCRIPTION} {__version__}"
    save_nifti(np.asarray(labels.dataobj), labels.affine, job.target, overwrite=True, description=description)
    if settings.extras.probabilities:  # (X, Y, Z, class), uint8 with slope 1/255: readers get probabilities to 0.002
        compact = np.round(probabilities.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)
        save_nifti(compact, labels.affine, probabilities_path(job.target), overwrite=True, slope=1 / 255, description=description)
    if settings.extras.qc:
        figure = plot_segmentation(scan, labels, title=qc_title(job.name, settings.model_name, settings.model[1], volumes))
        save_figure(figure, qc_path(job.target))
        plt.close(figure)
    return volumes


def _segment_job(job: Job, settings: _Settings) -> tuple[dict, bool]:
    """One image: (its tissue volumes, whether it was kept from before), as its record allows (:func:`fss.records.judge`);
    ``overwrite`` makes again what fss made before, never what it did not make.

    Raises
    ------
    ValueError
        When the output is not fss's to replace, or was made from something else and ``overwrite`` is false.
    """
    from fss.io import load_nifti
    from fss.metrics import tissue_volumes

    files = settings.extras.paths(job.target)
    request = Request(str(job.source.resolve()), sha256(job.source), settings.model[1]["weights_sha256"], settings.options)
    verdict = judge(job.target, files, request)
    if verdict.action == "kept" and not settings.overwrite:
        return tissue_volumes(load_nifti(job.target)), True
    if verdict.action == "foreign" or (verdict.action == "different" and not settings.overwrite):
        raise ValueError(verdict.reason)
    previous = verdict.record or {}
    recorded = previous.get("files", {})
    for stale in set(previous.get("planned", [])) - {job.target.name, *(f.name for f in files)}:  # fss's own files this request does not make
        path = job.target.parent / stale
        # a record edited to name a path elsewhere deletes nothing there, and a file changed since fss wrote it is not fss's
        if is_plain_name(stale) and path.is_file() and recorded.get(stale) == sha256(path):
            path.unlink()
    job.target.parent.mkdir(parents=True, exist_ok=True)
    write_record(job.target, request, files, complete=False, model_name=settings.model_name)
    try:
        volumes = _write_segmentation(job, settings)
    except BaseException:
        if not any(path.exists() for path in [job.target, *files]):  # nothing written: no record of it either
            sidecar_path(job.target).unlink()
        raise
    write_record(job.target, request, files, complete=True, model_name=settings.model_name)
    return volumes, False


def segment_batch(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    model: tuple,
    *,
    model_name: str,
    device: str | object = "auto",
    tta: bool = False,
    window: int | None = None,
    overlap: float = 0.5,
    probabilities: bool = False,
    qc: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchResult:
    """Segment image files and BIDS folders into ``output``, each image's label map with its record, and ``volumes.tsv``.

    Parameters
    ----------
    inputs : paths
        NIfTI images and BIDS folders (every T2w image in them).
    output : path
        A folder, or a label map's file name (``.nii.gz``) for a single image (:func:`plan`).
    model : (UNet, metadata)
        From :func:`fss.pretrained.load` or :func:`fss.checkpoint.load_checkpoint`.
    model_name : str
        Recorded in each sidecar and shown in the QC title: a packaged model's name or a checkpoint's path.
    device, tta, window, overlap
        As :func:`fss.infer.segment` takes them (recorded: another choice is another output).
    probabilities, qc
        Also write ``<name>_probseg.nii.gz`` (one uint8 probability per class) and ``<name>_dseg_qc.png``.
    overwrite : bool
        Make again what fss made from another input, model or options; files fss did not write are never replaced.
    progress : bool
        A progress bar over the images.

    Returns
    -------
    BatchResult
        Rows of ``volumes.tsv`` of every image segmented or kept, which were kept, which failed and why.

    Raises
    ------
    FileNotFoundError, ValueError
        When the plan is refused (:func:`plan`): then nothing is written. An image that fails later is reported in
        :attr:`BatchResult.failed` and the others go on.
    """
    planned = plan(inputs, output, Extras(probabilities, qc))
    options = {"tta": tta, "window": window, "overlap": overlap}
    return segment_planned(planned, model, model_name=model_name, device=device, options=options, overwrite=overwrite, progress=progress)


def segment_planned(
    planned: Plan, model: tuple, *, model_name: str, device: str | object, options: dict, overwrite: bool, progress: bool = True
) -> BatchResult:
    """Carry out a checked :class:`Plan` (:func:`segment_batch` without the planning, for a caller that planned before
    loading its model); ``options`` are ``tta``, ``window`` and ``overlap``."""
    from tqdm.auto import tqdm

    if planned.dataset:
        write_derivative_description(planned.output)
    claim_output_place(planned.folder)  # a new folder under a raw dataset's derivatives/ (done by the line above when a dataset is segmented)
    settings = _Settings(model, model_name, device, options, planned.extras, overwrite)
    result = BatchResult(planned.folder / VOLUMES_TABLE)
    for job in tqdm(planned.jobs, desc="segment", unit="image", disable=not progress):
        with claimed(job.target) as mine:  # the label map, its files and its row of the table come from one process
            try:
                if not mine:
                    raise FileExistsError(f"another process is segmenting into {job.target}; wait for it to end, or choose another output")
                volumes, kept = _segment_job(job, settings)
            except (ValueError, OSError) as error:
                result.failed[job.name] = str(error)
                tqdm.write(f"{job.name}: failed: {error}")
                continue
            if kept:
                result.kept.append(job.name)
                tqdm.write(f"{job.name}: {job.target} exists, made from the same input, model and options: kept")
            result.rows.append({"image": job.name, "segmentation": str(job.target.resolve()), **volumes})
            update_table(result.table, result.rows[-1:], key="segmentation")
    return result
