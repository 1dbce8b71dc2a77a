"""Public fetal brain data: checksummed fetchers for the atlases and the reference example.

Every file is listed in ``fss/registry.txt`` under the key
``<repository>/<path in repository>`` with its sha256 and a download URL pinned
to a commit. Files are looked for in one folder, laid out by those keys:

1. the ``data_dir`` argument, else
2. the ``FSS_DATA`` environment variable (for example a read-only mirror), else
3. a per-user cache (``pooch.os_cache("fss")``).

A file found there is used only if its sha256 matches; a missing one is
downloaded into that folder and checked before use.

Example
-------
>>> [record] = fetch_crl_atlas(ages=[30])  # doctest: +SKIP
>>> record.image.name, record.convention, record.gestational_age  # doctest: +SKIP
('srr.nii.gz', 'atlas', 30)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pooch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import nibabel as nib

ENV_VAR = "FSS_DATA"

CRL_ATLAS_CITATION = (
    "Gholipour A, et al. A normative spatiotemporal MRI atlas of the fetal brain for automatic "
    "segmentation and analysis of early brain growth. Scientific Reports 7, 476 (2017). "
    "Segmentations refined by Fidon L, Aertsen M, et al. A Dempster-Shafer approach to "
    "trustworthy AI with application to fetal brain MRI segmentation. "
    "arXiv:2204.02779 (2022)."
)
WU_ATLAS_CITATION = (
    "Wu J, et al. Age-specific structural fetal brain atlases construction and cortical "
    "development quantification for Chinese population. NeuroImage 241, 118412 (2021). "
    "Segmentations refined by Fidon L, Aertsen M, et al. A Dempster-Shafer approach to "
    "trustworthy AI with application to fetal brain MRI segmentation. "
    "arXiv:2204.02779 (2022)."
)
REFERENCE_CITATION = (
    "Zalevskyi V, et al. Improving cross-domain brain tissue segmentation in fetal MRI with "
    "synthetic data. MICCAI 2024. Label map derived from the CRL atlas: " + CRL_ATLAS_CITATION
)
CRL_LICENCE = (
    "CRL fetal brain atlas licence: non-commercial research and education only; acknowledge "
    "CRL and cite Gholipour et al., Scientific Reports 2017; no re-posting without permission."
)
ATLAS_REPOSITORY = "trustworthy-ai-fetal-brain-segmentation"
ATLAS_FOLDER = f"{ATLAS_REPOSITORY}/data/fetal_brain_atlases"
REFERENCE_FOLDER = "FetalSynthSeg/data"


class ChecksumError(ValueError):
    """A data file's sha256 differs from the registry: the file is never used."""


class DataUnavailableError(OSError):
    """A data file is neither in the data folder nor downloadable."""


@dataclass(frozen=True)
class RegistryEntry:
    """One public file: its key (``<repository>/<path>``), sha256 and pinned URL."""

    key: str
    sha256: str
    url: str


@dataclass(frozen=True)
class Record:
    """One fetched subject: where its files are and how to use and credit them.

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``"crl-GA30"``.
    family : str
        ``"crl"``, ``"wu"`` or ``"reference"``.
    gestational_age : int
        Gestational age in weeks.
    labels : Path
        Tissue label map (NIfTI).
    convention : str
        Label convention of ``labels``, a key of :data:`fss.labels.CONVENTIONS`.
    image : Path or None
        T2-weighted super-resolution image (NIfTI), when published.
    mask : Path or None
        Brain mask (NIfTI), when published.
    skull_stripped : bool
        Whether the image shows the brain only.
    licence, citation : str
        Terms of use and the papers to cite; print them wherever the data are shown.
    seeds : dict
        ``{K: {M: path}}`` published seed maps for K subclasses of meta-label M.
    """

    name: str
    family: str
    gestational_age: int
    labels: Path
    convention: str
    image: Path | None = None
    mask: Path | None = None
    skull_stripped: bool = True
    licence: str = ""
    citation: str = ""
    seeds: dict[int, dict[int, Path]] = field(default_factory=dict)

    def attribution(self) -> str:
        """Licence and citation text, ready to print."""
        return f"{self.name}: {self.licence}\n  Cite: {self.citation}"

    def feta_labels(self) -> nib.Nifti1Image:
        """The label map in the FeTA convention: a nibabel image, int16 values 0-7, on the file's grid."""
        import nibabel as nib
        import numpy as np

        from fss.io import load_nifti
        from fss.labels import to_feta

        source = load_nifti(self.labels)
        return nib.Nifti1Image(to_feta(np.asarray(source.dataobj), self.convention), source.affine)


@dataclass(frozen=True)
class AtlasFamily:
    """A family of atlas volumes, one per gestational age, in the atlas repository."""

    name: str
    folder: str
    ages: tuple[int, ...]
    skull_stripped: bool
    licence: str
    citation: str

    def keys(self, age: int) -> dict[str, str]:
        """Registry keys of the image, labels and mask at ``age`` weeks."""
        base = f"{ATLAS_FOLDER}/{self.folder.format(age=age)}"
        return {part: f"{base}/{file}" for part, file in (("image", "srr.nii.gz"), ("labels", "parcellation.nii.gz"), ("mask", "mask.nii.gz"))}


FAMILIES: dict[str, AtlasFamily] = {
    "crl": AtlasFamily("crl", "Neurotypical_Gholipour2017/HarvardSTA{age}_Study1", tuple(range(21, 39)), True, CRL_LICENCE, CRL_ATLAS_CITATION),
    "wu": AtlasFamily(
        "wu",
        "Neurotypical_Wu2021/Chinese{age}_Study1",
        tuple(range(22, 35)),
        False,
        "No licence is stated by the source repository; use for research with citation of both papers.",
        WU_ATLAS_CITATION,
    ),
}


@lru_cache(maxsize=1)
def registry() -> dict[str, RegistryEntry]:
    """All known public files, keyed ``<repository>/<path>`` (read from ``fss/registry.txt``)."""
    entries = {}
    text = resources.files("fss").joinpath("registry.txt").read_text()
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, digest, url = line.split()
            entries[key] = RegistryEntry(key, digest.removeprefix("sha256:"), url)
    return entries


def data_home(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$FSS_DATA``, else the per-user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(pooch.os_cache("fss"))


def fetch_file(key: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path to the verified local copy of one registry file, downloading it if absent.

    Raises
    ------
    KeyError
        If ``key`` is not in the registry.
    ChecksumError
        If the local (or downloaded) file's sha256 differs from the registry.
    DataUnavailableError
        If the file is absent and cannot be downloaded (no network, read-only folder).
    """
    try:
        entry = registry()[key]
    except KeyError:
        raise KeyError(f"{key!r} is not a known data file (see fss/registry.txt)") from None
    home = data_home(data_dir)
    target = home / key
    if target.exists():
        actual = pooch.file_hash(str(target))
        if actual != entry.sha256:
            raise ChecksumError(
                f"{target}: sha256 {actual} differs from the registered {entry.sha256}; the file is "
                "corrupted or was changed, so it is not used. Delete it to download a fresh copy."
            )
        return target
    try:
        pooch.retrieve(entry.url, f"sha256:{entry.sha256}", fname=target.name, path=target.parent)
    except ValueError as error:
        raise ChecksumError(f"{entry.url}: the downloaded file failed its sha256 check ({error})") from error
    except OSError as error:
        raise DataUnavailableError(
            f"{key} is not in {home} and could not be downloaded from {entry.url} ({error}). "
            f"Connect to the network, or set {ENV_VAR} to a folder that holds a copy laid out as "
            "<repository>/<path>."
        ) from error
    return target


def fetch_files(keys: Iterable[str], data_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Path]:
    """Fetch several registry files; a progress bar over files when ``progress``."""
    keys = list(keys)
    return {key: fetch_file(key, data_dir) for key in tqdm(keys, desc="data", unit="file", disable=not progress)}


def _fetch_atlas(family: AtlasFamily, ages: Iterable[int] | None, data_dir, progress: bool) -> list[Record]:
    ages = family.ages if ages is None else tuple(int(a) for a in ages)
    unknown = sorted(set(ages) - set(family.ages))
    if unknown:
        raise ValueError(f"the {family.name} atlas has no gestational age {unknown}; available: {family.ages[0]}-{family.ages[-1]} weeks")
    keys = [family.keys(age) for age in ages]
    paths = fetch_files([k for parts in keys for k in parts.values()], data_dir, progress)
    return [
        Record(
            name=f"{family.name}-GA{age}",
            family=family.name,
            gestational_age=age,
            labels=paths[parts["labels"]],
            convention="atlas",
            image=paths[parts["image"]],
            mask=paths[parts["mask"]],
            skull_stripped=family.skull_stripped,
            licence=family.licence,
            citation=family.citation,
        )
        for age, parts in zip(ages, keys)
    ]


def fetch_crl_atlas(ages: Iterable[int] | None = None, data_dir: str | os.PathLike | None = None, progress: bool = False) -> list[Record]:
    """CRL spatio-temporal fetal brain atlas (Gholipour et al. 2017), refined labels.

    Parameters
    ----------
    ages : iterable of int, optional
        Gestational ages in weeks (21-38); default all 18.
    data_dir : path, optional
        Data folder (see the module docstring).
    progress : bool
        Show a progress bar over files.

    Returns
    -------
    list of Record
        One per age: skull-stripped T2w image, labels in the ``"atlas"``
        convention, brain mask; 135 x 189 x 155 voxels at 0.8 mm, RAS.
    """
    return _fetch_atlas(FAMILIES["crl"], ages, data_dir, progress)


def fetch_wu_atlas(ages: Iterable[int] | None = None, data_dir: str | os.PathLike | None = None, progress: bool = False) -> list[Record]:
    """Chinese-population fetal brain atlas (Wu et al. 2021), refined labels.

    Parameters and returns as :func:`fetch_crl_atlas`; ages 22-34 weeks. The
    images are not skull-stripped (``skull_stripped`` is False).
    """
    return _fetch_atlas(FAMILIES["wu"], ages, data_dir, progress)


def fetch_reference_example(data_dir: str | os.PathLike | None = None, progress: bool = False) -> Record:
    """The reference method's example subject ``sub-sta30`` and its published seeds.

    Returns
    -------
    Record
        ``labels``: FeTA label map of the CRL atlas at GA 30, 256^3 at 0.5 mm;
        ``seeds[K][M]``: seed maps for K = 1..4 subclasses and meta-labels M = 1..4.
        The T2w image is not published with it (``image`` is None): use
        ``fetch_crl_atlas([30])``.
    """
    stem = "sub-sta30_rec-irtk_T2w_dseg"
    labels_key = f"{REFERENCE_FOLDER}/sub-sta30/anat/{stem}.nii.gz"
    seed_keys = {
        (k, m): f"{REFERENCE_FOLDER}/derivatives/seeds/subclasses_{k}/sub-sta30/anat/{stem}_mlabel_{m}.nii.gz"
        for k in range(1, 5)
        for m in range(1, 5)
    }
    paths = fetch_files([labels_key, *seed_keys.values()], data_dir, progress)
    seeds: dict[int, dict[int, Path]] = {}
    for (k, m), key in seed_keys.items():
        seeds.setdefault(k, {})[m] = paths[key]
    return Record(
        name="sub-sta30",
        family="reference",
        gestational_age=30,
        labels=paths[labels_key],
        convention="feta",
        licence=CRL_LICENCE,
        citation=REFERENCE_CITATION,
        seeds=seeds,
    )


def fetch_all(data_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Path]:
    """Fetch and verify every file in the registry."""
    return fetch_files(registry(), data_dir, progress)
