"""Finding images and label maps in a BIDS folder (``sub-*/[ses-*/]anat/*_T2w.nii.gz``), and the tables written beside them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fss.paths import atomic_path, locked

NIFTI_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class BidsImage:
    """One T2-weighted image of a BIDS dataset.

    Attributes
    ----------
    subject : str
        Subject label with its ``sub-`` prefix.
    image : Path
        The ``*_T2w.nii.gz`` file.
    labels : Path or None
        Its label map, when one is found (see :func:`find_t2w_images`).
    """

    subject: str
    image: Path
    labels: Path | None

    @property
    def stem(self) -> str:
        """File name of the image without ``.nii.gz``."""
        return self.image.name.removesuffix(NIFTI_SUFFIX)


def _label_candidates(image: Path, folder: Path) -> list[Path]:
    stem = image.name.removesuffix(NIFTI_SUFFIX)
    return [folder / f"{stem}_dseg{NIFTI_SUFFIX}", folder / f"{stem.removesuffix('_T2w')}_dseg{NIFTI_SUFFIX}"]


def _check_label_source(root: Path, labels_from: str) -> Path:
    """The folder ``root / labels_from``, if it exists and is not a dataset of fss's own segmentations."""
    source = root / labels_from
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder of label maps")
    description = source / "dataset_description.json"
    if description.exists():
        try:
            generated = [g.get("Name") for g in json.loads(description.read_text()).get("GeneratedBy", [])]
        except (json.JSONDecodeError, AttributeError, TypeError) as error:
            raise ValueError(f"{description} is not a readable dataset description") from error
        if "fss" in generated:
            raise ValueError(f"{source} holds segmentations made by fss; seeds need reference label maps (manual or from another pipeline)")
    return source


def find_t2w_images(root: str | os.PathLike, labels_from: str | None = None) -> list[BidsImage]:
    """Every ``sub-*/[ses-*/]anat/*_T2w.nii.gz`` under ``root``, with its label map if any.

    A label map is ``<image stem>_dseg.nii.gz`` or ``<stem without _T2w>_dseg.nii.gz``, beside
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
    images = sorted([*root.glob(f"sub-*/anat/*_T2w{NIFTI_SUFFIX}"), *root.glob(f"sub-*/ses-*/anat/*_T2w{NIFTI_SUFFIX}")])
    images = [image for image in images if not image.name.startswith(".")]
    if not images:
        raise FileNotFoundError(f"{root}: no sub-*/[ses-*/]anat/*_T2w{NIFTI_SUFFIX} images")
    found = []
    for image in images:
        folder = image.parent if source is None else source / image.parent.relative_to(root)
        labels = next((p for p in _label_candidates(image, folder) if p.exists()), None)
        found.append(BidsImage(image.relative_to(root).parts[0], image, labels))
    return found


def update_table(path: Path, rows: list[dict], key: str) -> None:
    """Add ``rows`` to the TSV at ``path`` (created if missing), replacing the rows with the same ``key``.

    The write is atomic, and the read and write happen under an exclusive lock on the table's
    folder, so that processes updating one table at once keep each other's rows.
    """
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent):
        table = pd.DataFrame(rows)
        if path.exists():
            previous = pd.read_csv(path, sep="\t")
            table = pd.concat([previous[~previous[key].isin(table[key])], table], ignore_index=True)
        with atomic_path(path, overwrite=True) as temporary:
            table.to_csv(temporary, sep="\t", index=False)
