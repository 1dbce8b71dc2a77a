"""BIDS folders: finding images and label maps (``sub-*/[ses-*/]anat/*_T2w.nii[.gz]``), where fss may write, and the
description and tables of the derivative folders it writes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fss.paths import atomic_path, locked, nifti_stem
from fss.records import GENERATED_BY

NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""The file endings of NIfTI images in BIDS, compressed or not."""


@dataclass(frozen=True)
class BidsImage:
    """One T2-weighted image of a BIDS dataset.

    Attributes
    ----------
    subject : str
        Subject label with its ``sub-`` prefix.
    image : Path
        The ``*_T2w.nii.gz`` (or ``.nii``) file.
    labels : Path or None
        Its label map, when one is found (see :func:`find_t2w_images`).
    """

    subject: str
    image: Path
    labels: Path | None

    @property
    def stem(self) -> str:
        """File name of the image without ``.nii.gz`` or ``.nii``."""
        return nifti_stem(self.image)


def _label_candidates(image: Path, folder: Path) -> list[Path]:
    stem = nifti_stem(image)
    return [folder / f"{name}_dseg{suffix}" for name in (stem, stem.removesuffix("_T2w")) for suffix in NIFTI_SUFFIXES]


def _check_label_source(root: Path, labels_from: str) -> Path:
    """The folder ``root / labels_from``, if it exists and is not a dataset of fss's own segmentations."""
    source = root / labels_from
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder of label maps")
    description = _description(source)
    if description is not None and "fss" in _generators(description):
        raise ValueError(f"{source} holds segmentations made by fss; seeds need reference label maps (manual or from another pipeline)")
    return source


def find_t2w_images(root: str | os.PathLike, labels_from: str | None = None) -> list[BidsImage]:
    """Every ``sub-*/[ses-*/]anat/*_T2w.nii.gz`` (or ``.nii``) under ``root``, with its label map if any.

    A label map is ``<image stem>_dseg.nii[.gz]`` or ``<stem without _T2w>_dseg.nii[.gz]``, beside
    the image (``labels_from`` None: the raw ``anat/`` folder), or at the same place under
    ``root / labels_from`` (e.g. ``derivatives/manual``), which must not be a dataset of fss's
    own segmentations. Hidden files (such as the temporary files of an interrupted write) are
    ignored.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder or holds no such image, or ``labels_from`` is not a folder.
    ValueError
        If ``labels_from`` holds fss's own segmentations.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    source = _check_label_source(root, labels_from) if labels_from is not None else None
    patterns = [f"{folders}/*_T2w{suffix}" for folders in ("sub-*/anat", "sub-*/ses-*/anat") for suffix in NIFTI_SUFFIXES]
    images = sorted(image for pattern in patterns for image in root.glob(pattern) if not image.name.startswith("."))
    if not images:
        raise FileNotFoundError(f"{root}: no sub-*/[ses-*/]anat/*_T2w.nii.gz or .nii images")
    found = []
    for image in images:
        folder = image.parent if source is None else source / image.parent.relative_to(root)
        labels = next((p for p in _label_candidates(image, folder) if p.exists()), None)
        found.append(BidsImage(image.relative_to(root).parts[0], image, labels))
    return found


def check_table(path: Path, columns: list[str]) -> None:
    """Refuse a TSV at ``path`` that fss did not write: one whose header is not ``columns``.

    Raises
    ------
    ValueError
        Naming the file, its columns and fss's, if it exists with other columns or cannot be read as a TSV.
    """
    import pandas as pd

    if not path.exists():
        return
    try:
        header = list(pd.read_csv(path, sep="\t", nrows=0).columns)
    except (ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise ValueError(f"{path}: not a table fss wrote ({' '.join(str(error).split())}): move it away or write to another folder") from error
    if header != columns:
        raise ValueError(f"{path}: not a table fss wrote (columns {header}; fss writes {columns}): move it away or write to another folder")


def update_table(path: Path, rows: list[dict], key: str) -> None:
    """Add ``rows`` to the TSV at ``path`` (created if missing), replacing the rows with the same ``key``.

    The rows already there are kept as written (read as text). The write is atomic, and the read and
    write happen under an exclusive lock on the table's folder, so that processes updating one table
    at once keep each other's rows.

    Raises
    ------
    ValueError
        If the table at ``path`` has other columns than ``rows`` (:func:`check_table`): fss did not write it.
    """
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        table = pd.DataFrame(rows)
        check_table(path, list(table.columns))
        if path.exists():
            previous = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            table = pd.concat([previous[~previous[key].isin(table[key])], table], ignore_index=True)
        with atomic_path(path, overwrite=True) as temporary:
            table.to_csv(temporary, sep="\t", index=False)


def _description(folder: Path) -> dict | None:
    """The dataset description of ``folder``, None without one.

    Raises
    ------
    ValueError
        If it cannot be read as a JSON object.
    """
    path = folder / "dataset_description.json"
    if not path.exists():
        return None
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable dataset description") from error
    if not isinstance(description, dict):
        raise ValueError(f"{path} is not a readable dataset description")
    return description


def _generators(description: dict) -> list[str]:
    generated = description.get("GeneratedBy", [])
    return [g.get("Name", "?") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []


def check_output_place(output: str | os.PathLike) -> Path | None:
    """Raise unless fss may write ``output`` (a file or folder, existing or not) where it lies.

    The nearest dataset description at or above ``output`` decides: inside a raw BIDS dataset
    (a description whose ``DatasetType`` is not ``derivative``) fss writes only into a folder of its
    own under ``derivatives/``: one that does not exist yet or is empty (``derivatives/`` itself is
    shared by every pipeline, never an output); inside a derivative dataset, only when fss generated
    it. Outside any dataset, anywhere.

    Returns
    -------
    Path or None
        The folder under a raw dataset's ``derivatives/`` that ``output`` lies in and fss is to create:
        :func:`claim_output_place` gives it fss's description, so that fss knows it as its own later.

    Raises
    ------
    ValueError
        Naming the dataset and where to write instead.
    """
    target = Path(output).resolve()
    for folder in [target, *target.parents]:
        description = _description(folder) if folder.is_dir() else None
        if description is None:
            continue
        if description.get("DatasetType", "raw") == "derivative":
            owners = _generators(description)
            if "fss" not in owners:
                raise ValueError(
                    f"{output} is inside {folder}, a derivative dataset of {', '.join(owners) or 'another pipeline'}: "
                    f"fss writes only into its own derivative folders, e.g. {folder.parent / 'fss'}"
                )
            return None
        derivatives = folder / "derivatives"
        if derivatives not in target.parents:
            if target == derivatives:
                raise ValueError(
                    f"{output} holds the derivatives of every pipeline of {folder}: write into a folder of its own, e.g. {derivatives / 'fss'}"
                )
            raise ValueError(f"{output} is inside the raw BIDS dataset {folder}: write under {derivatives}, e.g. {derivatives / 'fss'}")
        pipeline = derivatives / target.relative_to(derivatives).parts[0]
        if pipeline.is_dir() and any(pipeline.iterdir()):
            raise ValueError(
                f"{output} is inside {pipeline}, a derivative folder that fss did not create (it has no dataset description of fss): "
                f"write into a new folder, e.g. {derivatives / 'fss'}"
            )
        return pipeline
    return None


def claim_output_place(output: str | os.PathLike) -> None:
    """Check ``output``'s place (:func:`check_output_place`) and, when it lies in a new folder under a raw dataset's
    ``derivatives/``, make that folder fss's: a dataset description that names fss as its generator.

    Raises
    ------
    ValueError
        If fss may not write there.
    """
    folder = check_output_place(output)
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    description = {"Name": f"fss: {folder.name}", "BIDSVersion": "1.9.0", "DatasetType": "derivative", "GeneratedBy": [GENERATED_BY]}
    try:
        with atomic_path(folder / "dataset_description.json") as temporary:
            temporary.write_text(json.dumps(description, indent=1))
    except FileExistsError:  # another process claimed it at the same moment
        pass


def write_derivative_description(output: Path) -> None:
    """The files that make ``output`` a BIDS derivative of fss: description, label table, and what validators should skip.

    Raises
    ------
    ValueError
        If ``output`` is not a place fss may write (:func:`check_output_place`).
    """
    import pandas as pd

    from fss.labels import TISSUES

    check_output_place(output)
    names = ("dataset_description.json", "dseg.tsv", ".bidsignore")
    if _description(output) is None and any((output / name).exists() for name in names):
        found = next(output / name for name in names if (output / name).exists())
        raise ValueError(f"{found} was not written by fss (no dataset description of fss beside it); fss never replaces it")
    previous = _description(output) or {}  # fss's own, or none: keep what a user added to it (Authors, SourceDatasets, ...)
    others = [g for g in previous.get("GeneratedBy") or [] if isinstance(g, dict) and g.get("Name") != "fss"]
    description = {
        "Name": "fss segmentations",
        "BIDSVersion": "1.9.0",
        **previous,
        "DatasetType": "derivative",
        "GeneratedBy": [GENERATED_BY, *others],
    }
    table = pd.DataFrame(
        {
            "index": [t.value for t in TISSUES],
            "name": [t.short for t in TISSUES],
            "description": [t.name for t in TISSUES],
            "color": [t.color for t in TISSUES],
        }
    )
    files = {
        "dataset_description.json": json.dumps(description, indent=1),
        "dseg.tsv": table.to_csv(sep="\t", index=False),
        ".bidsignore": "volumes.tsv\n*_qc.png\n*_probseg.nii.gz\n",
    }
    for name, text in files.items():
        if (output / name).exists() and (output / name).read_text() == text:
            continue  # unchanged: a re-run leaves the file, and its time stamp, alone
        with atomic_path(output / name, overwrite=True) as temporary:
            temporary.write_text(text)
