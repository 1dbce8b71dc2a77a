"""Finding images and label maps in a BIDS folder (``sub-*/[ses-*/]anat/*_T2w.nii.gz``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


def _label_candidates(root: Path, image: Path) -> list[Path]:
    stem = image.name.removesuffix(NIFTI_SUFFIX)
    names = [f"{stem}_dseg{NIFTI_SUFFIX}", f"{stem.removesuffix('_T2w')}_dseg{NIFTI_SUFFIX}"]
    relative = image.parent.relative_to(root)
    folders = [image.parent, *sorted(p / relative for p in (root / "derivatives").glob("*") if p.is_dir())]
    return [folder / name for folder in folders for name in names]


def find_t2w_images(root: str | os.PathLike) -> list[BidsImage]:
    """Every ``sub-*/[ses-*/]anat/*_T2w.nii.gz`` under ``root``, with its label map if any.

    A label map is ``<image stem>_dseg.nii.gz`` or ``<stem without _T2w>_dseg.nii.gz``,
    beside the image or at the same place in a ``derivatives/<pipeline>/`` folder.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder or holds no such image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    images = sorted([*root.glob(f"sub-*/anat/*_T2w{NIFTI_SUFFIX}"), *root.glob(f"sub-*/ses-*/anat/*_T2w{NIFTI_SUFFIX}")])
    if not images:
        raise FileNotFoundError(f"{root}: no sub-*/[ses-*/]anat/*_T2w{NIFTI_SUFFIX} images")
    found = []
    for image in images:
        labels = next((p for p in _label_candidates(root, image) if p.exists()), None)
        found.append(BidsImage(image.relative_to(root).parts[0], image, labels))
    return found
