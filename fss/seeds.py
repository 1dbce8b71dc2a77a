"""Intensity-subclass seed maps: the step before synthesis.

Each meta-label (1 CSF, 2 grey matter, 3 white matter, 4 non-brain; see
:data:`fss.labels.META_LABELS`) is split into K intensity subclasses by a
Gaussian mixture fitted to the real image's intensities inside it, for
K = 1..K_max. A seed layer holds ``10 * M + j`` inside meta-label M, where j
(0..K-1) numbers the subclasses by increasing mean intensity, and 0 elsewhere.
At generation time each meta-label draws its own K, and the layers are summed
into one seed map (:func:`compose_seed_map`).

Files follow the reference method's layout under a dataset root::

    derivatives/seeds/subclasses_K/sub-X/anat/<stem>_mlabel_M.nii.gz

Example
-------
>>> import numpy as np, nibabel as nib
>>> rng = np.random.default_rng(0)
>>> labels = np.zeros((20, 20, 20), np.int16); labels[5:15, 5:15, 5:15] = 3
>>> image = np.where(labels > 0, rng.normal(100, 5, labels.shape), 0).astype(np.float32)
>>> seeds = make_seeds(nib.Nifti1Image(image, np.eye(4)), nib.Nifti1Image(labels, np.eye(4)), max_subclasses=2)
>>> sorted(np.unique(compose_seed_map(seeds, {3: 2})).tolist())
[0, 30, 31]
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to
from sklearn.mixture import GaussianMixture

from fss.io import SEGMENTATION_DESCRIPTION, check_image_argument, described_as, load_nifti, save_nifti
from fss.labels import META_LABELS, conventions_that_fit, to_feta, to_meta_labels
from fss.paths import claimed, is_plain_name

MIN_VOXELS_PER_SUBCLASS = 20
"""A region needs this many voxels per subclass; smaller regions get fewer subclasses."""

MAX_FIT_VOXELS = 20_000
"""Mixtures are fitted on at most this many voxels of a region (a seeded random subset), then applied to all."""

SEEDS_FOLDER = Path("derivatives") / "seeds"

MAX_SUBCLASSES = 9
"""The most subclasses per meta-label: seed values ``10 * M + j`` (``j < K``) stay within meta-label M's tens."""


@dataclass(frozen=True)
class Mixture:
    """A fitted 1-D Gaussian mixture, components sorted by increasing mean (image intensity units)."""

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray


@dataclass
class Seeds:
    """Seed layers of one subject.

    Attributes
    ----------
    layers : dict
        ``layers[K][M]``: uint8 array, shape (X, Y, Z), values ``10 * M + j``
        (j = 0..K-1) inside meta-label M and 0 elsewhere. A meta-label whose
        region is empty (non-brain in a skull-stripped image) is absent.
    affine : (4, 4) array
        Voxel-to-world affine (mm) of the label map's grid.
    mixtures : dict
        ``mixtures[K][M]``: the fitted :class:`Mixture` (empty for loaded seeds).
    subject, stem : str
        Subject label (``sub-X``) and file name stem, for seeds read from or written to files.
    """

    layers: dict[int, dict[int, np.ndarray]]
    affine: np.ndarray
    mixtures: dict[int, dict[int, Mixture]] = field(default_factory=dict)
    subject: str = ""
    stem: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the layers."""
        return next(iter(next(iter(self.layers.values())).values())).shape

    @property
    def subclass_counts(self) -> list[int]:
        """The available K, ascending."""
        return sorted(self.layers)

    @property
    def meta_labels(self) -> list[int]:
        """Meta-labels present (in every K), ascending."""
        return sorted(set.intersection(*(set(layer) for layer in self.layers.values())))


def meta_label_regions(image: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Boolean masks of the non-empty meta-labels.

    Parameters
    ----------
    image : np.ndarray, shape (X, Y, Z)
        Intensities.
    labels : np.ndarray, shape (X, Y, Z)
        FeTA label map.

    Returns
    -------
    dict
        ``{M: mask}``; meta-label 4 is ``image > 0`` outside the label map.
    """
    meta = to_meta_labels(labels)
    meta[(labels == 0) & (image > 0)] = 4
    return {m: meta == m for m in META_LABELS if np.any(meta == m)}


T2W_ORDER = (1, 3, 2)
"""Meta-labels from brightest to darkest inside the brain of a T2-weighted fetal scan: CSF, white matter, grey matter."""


def in_t2w_order(image: np.ndarray, labels: np.ndarray) -> bool:
    """Whether the median intensities of ``image`` inside the meta-labels of FeTA ``labels`` follow :data:`T2W_ORDER`
    (false when one of them is empty), as they do when the label map is read in its own convention."""
    meta = to_meta_labels(labels)
    if not all(np.any(meta == m) for m in T2W_ORDER):
        return False
    medians = [float(np.median(image[meta == m])) for m in T2W_ORDER]
    return medians[0] > medians[1] > medians[2]


def warn_of_a_likelier_convention(image: np.ndarray, labels: np.ndarray, convention: str, source: str) -> None:
    """Warn when ``labels``, read in ``convention``, put the T2-weighted ``image``'s tissues out of their order
    (:func:`in_t2w_order`) while another convention that its values fit puts them in it: the wrong convention
    would make seeds (and images drawn from them) of tissues swapped with each other."""
    if in_t2w_order(image, to_feta(labels, convention)):
        return
    for other in conventions_that_fit(labels):
        if other != convention and in_t2w_order(image, to_feta(labels, other)):
            warnings.warn(
                f"{source}: read in the {convention!r} label convention, the image inside CSF, white and grey matter is not in a "
                f"T2-weighted scan's order (CSF brightest, then white matter, then grey matter); in the {other!r} convention it is: "
                f"is it in that one? (--convention {other})",
                stacklevel=3,
            )
            return


def fit_subclasses(values: np.ndarray, k: int, seed: int = 0, name: str = "region") -> tuple[np.ndarray, Mixture]:
    """Split intensities into ``k`` subclasses with a Gaussian mixture.

    Parameters
    ----------
    values : np.ndarray, shape (N,)
        Intensities of one region.
    k : int
        Number of subclasses wanted; fewer are fitted (with a warning) when the
        region has fewer than ``MIN_VOXELS_PER_SUBCLASS * k`` voxels or fewer
        than ``k`` distinct values.
    seed : int
        Fixes the subset used for fitting and the mixture's initialisation.
    name : str
        Region name for the warning.

    Returns
    -------
    assignment : np.ndarray, shape (N,), uint8
        Subclass index of each value, 0 = lowest mean.
    mixture : Mixture
        The fitted components, sorted by mean.
    """
    values = np.asarray(values, dtype=np.float64)
    fitted = max(1, min(k, values.size // MIN_VOXELS_PER_SUBCLASS, np.unique(values).size))
    if fitted < k:
        warnings.warn(f"{name}: {values.size} voxels allow only {fitted} of {k} subclasses", stacklevel=2)
    if fitted == 1:
        return np.zeros(values.size, np.uint8), Mixture(np.array([values.mean()]), np.array([values.std()]), np.ones(1))
    rng = np.random.default_rng(seed)
    subset = values if values.size <= MAX_FIT_VOXELS else rng.choice(values, MAX_FIT_VOXELS, replace=False)
    mixture = GaussianMixture(fitted, init_params="k-means++", n_init=3, random_state=seed).fit(subset[:, None])
    means = mixture.means_[:, 0]
    order = np.argsort(means)
    rank = np.empty(fitted, dtype=np.uint8)
    rank[order] = np.arange(fitted)
    assignment = rank[mixture.predict(values[:, None])]
    stds = np.sqrt(mixture.covariances_.reshape(fitted))
    return assignment, Mixture(means[order], stds[order], mixture.weights_[order])


def _check_same_grid(image: nib.spatialimages.SpatialImage, labels: nib.spatialimages.SpatialImage) -> None:
    same_affine = np.allclose(image.affine, labels.affine, atol=1e-4)
    if image.shape != labels.shape or not same_affine:
        raise ValueError(
            f"image and labels are on different grids (shapes {image.shape} and {labels.shape}"
            f"{'' if same_affine else ', different affines'}); resample one onto the other first"
        )


def make_seeds(
    image: str | os.PathLike | nib.spatialimages.SpatialImage,
    labels: str | os.PathLike | nib.spatialimages.SpatialImage,
    max_subclasses: int = 4,
    seed: int = 0,
) -> Seeds:
    """Seed layers for K = 1..``max_subclasses`` from an image and its FeTA label map.

    Parameters
    ----------
    image : path or nibabel image, shape (X, Y, Z)
        T2-weighted intensities (any scale), read by :func:`fss.io.load_nifti`.
    labels : path or nibabel image, shape (X, Y, Z)
        FeTA label map on the same grid (convert others with :func:`fss.labels.to_feta`).
    max_subclasses : int
        Largest K.
    seed : int
        Same seed, same seeds.

    Returns
    -------
    Seeds

    Raises
    ------
    TypeError
        Naming it, for an ``image`` or ``labels`` that is neither a path nor a nibabel image.
    ValueError
        If image and labels are on different grids, labels are not FeTA, or either is not a usable volume (see
        :func:`fss.io.load_nifti`: NaN voxels, for one).
    """
    check_image_argument(image, "image")
    check_image_argument(labels, "labels")
    image, labels = load_nifti(image), load_nifti(labels)
    _check_same_grid(image, labels)
    if not 1 <= max_subclasses <= MAX_SUBCLASSES:
        raise ValueError(
            f"max_subclasses must be between 1 and {MAX_SUBCLASSES} (seed values 10 * M + j must stay below 10 * (M + 1)), got {max_subclasses}"
        )
    intensities = np.asarray(image.dataobj, dtype=np.float32)
    feta = to_feta(np.asarray(labels.dataobj), "feta")
    if not feta.any():
        raise ValueError("the label map is empty (all background): there are no tissues to make seeds from")
    regions = meta_label_regions(intensities, feta)
    seeds = Seeds({}, np.asarray(labels.affine, float))
    for k in range(1, max_subclasses + 1):
        seeds.layers[k], seeds.mixtures[k] = {}, {}
        for m, region in regions.items():
            fit_seed = int(np.random.SeedSequence([seed, m, k]).generate_state(1)[0])
            name = f"{META_LABELS[m][0]} (meta-label {m}), K={k}"
            assignment, mixture = fit_subclasses(intensities[region], k, seed=fit_seed, name=name)
            layer = np.zeros(feta.shape, np.uint8)
            layer[region] = 10 * m + assignment
            seeds.layers[k][m], seeds.mixtures[k][m] = layer, mixture
    return seeds


def compose_seed_map(seeds: Seeds, ks: Mapping[int, int]) -> np.ndarray:
    """One seed map: the sum of the layer with ``ks[M]`` subclasses of each meta-label M.

    Parameters
    ----------
    seeds : Seeds
    ks : mapping
        ``{M: K}`` for every meta-label present in ``seeds``.

    Returns
    -------
    np.ndarray, shape (X, Y, Z), uint8
    """
    missing = [m for m in seeds.meta_labels if m not in ks]
    if missing:
        raise ValueError(f"choose K for meta-labels {missing}")
    composed = np.zeros(seeds.shape, np.uint8)
    for m in seeds.meta_labels:
        if ks[m] not in seeds.layers:
            raise ValueError(f"no seeds with K={ks[m]} (available: {seeds.subclass_counts})")
        composed += seeds.layers[ks[m]][m]
    return composed


def compare_seeds(ours: Seeds, theirs: Seeds, image: np.ndarray, meta_labels: tuple[int, ...] = (1, 2, 3)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How far two seed maps of one anatomy agree: ``theirs`` resampled onto ``ours``' grid, subclasses put in order.

    ``theirs`` is resampled by nearest neighbour through world coordinates, and its subclasses of each
    meta-label are renumbered in the order of their mean intensity in ``image`` (on ``ours``' grid), as
    ours are numbered; the comparison is made at every K that ``ours`` has.

    Parameters
    ----------
    ours, theirs : Seeds
    image : np.ndarray, (X, Y, Z)
        The intensities ``ours`` were fitted on.
    meta_labels : tuple of int
        The meta-labels compared (non-brain, 4, depends on how much of the head each image kept).

    Returns
    -------
    fractions : pandas.DataFrame
        Per K, meta-label and subclass: the share of the meta-label's voxels in that subclass, ``ours`` and
        ``reference`` (``theirs``), and their ``difference``.
    agreement : pandas.DataFrame
        Per K and meta-label: the share of voxels in the meta-label of both that get the same subclass
        (``same subclass``).
    """
    rows, agreements = [], []
    for k in ours.subclass_counts:
        for m in meta_labels:
            mine = ours.layers[k][m]
            other = nib.Nifti1Image(theirs.layers[k][m], theirs.affine)
            resampled = np.asarray(resample_from_to(other, (mine.shape, ours.affine), order=0).dataobj)
            their_means = [image[resampled == 10 * m + j].mean() if np.any(resampled == 10 * m + j) else np.inf for j in range(k)]
            rank = np.argsort(np.argsort(their_means))
            their_ranked = rank[np.where(resampled > 0, resampled - 10 * m, 0)]
            both = (mine > 0) & (resampled > 0)
            agreements.append({"K": k, "meta-label": META_LABELS[m][0], "same subclass": np.mean(mine[both] - 10 * m == their_ranked[both])})
            for j in range(k):
                rows.append(
                    {
                        "K": k,
                        "meta-label": META_LABELS[m][0],
                        "subclass": j,
                        "ours": np.mean(mine[mine > 0] == 10 * m + j),
                        "reference": np.mean(their_ranked[resampled > 0] == j),
                    }
                )
    fractions = pd.DataFrame(rows)
    fractions["difference"] = fractions.ours - fractions.reference
    return fractions, pd.DataFrame(agreements)


def _subject_folder(subject: str) -> str:
    """``sub-<label>`` for ``subject`` given with or without its prefix; the label must be a BIDS label (letters and digits)."""
    label = subject.removeprefix("sub-")
    if not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise ValueError(f"subject {subject!r}: a BIDS subject label holds only letters and digits (e.g. sub-01)")
    return f"sub-{label}"


def _file_stem(stem: str) -> str:
    """``stem`` itself, if it is a plain file name (no folder part: a stem cannot lead out of the seeds folder)."""
    if not is_plain_name(stem):
        raise ValueError(f"stem {stem!r}: a file name without folders is expected (e.g. sub-01_T2w)")
    return stem


def seed_path(root: str | os.PathLike, subject: str, stem: str, k: int, m: int) -> Path:
    """Where the layer with K subclasses of meta-label M of ``subject`` lives under dataset ``root``."""
    return Path(root) / SEEDS_FOLDER / f"subclasses_{k}" / _subject_folder(subject) / "anat" / f"{_file_stem(stem)}_mlabel_{m}.nii.gz"


def labels_path(root: str | os.PathLike, subject: str, stem: str) -> Path:
    """Where :func:`write_seeds` keeps the FeTA label map that goes with the seeds (read by the generator)."""
    return Path(root) / SEEDS_FOLDER / _subject_folder(subject) / "anat" / f"{_file_stem(stem)}.nii.gz"


SEEDS_DESCRIPTION = "fss seeds"
"""The NIfTI header description of the seed layers and label maps that :func:`save_seeds` and :func:`write_seeds` write, by
which an interrupted run's files are known as fss's own."""


def _written_by_fss_seeds(path: Path) -> bool:
    """Whether the header of the NIfTI file ``path`` says that fss wrote it as seeds (:data:`SEEDS_DESCRIPTION`)."""
    try:
        image = nib.load(path)
    except Exception:  # nibabel raises many types for files it cannot read: not fss's
        return False
    return described_as(image, SEEDS_DESCRIPTION)


def save_seeds(seeds: Seeds, root: str | os.PathLike, subject: str, stem: str, overwrite: bool = False) -> list[Path]:
    """Write every layer as uint8 NIfTI in the reference layout (atomic writes), described as :data:`SEEDS_DESCRIPTION`.

    Parameters
    ----------
    seeds : Seeds
    root : path
        Dataset root; files go under ``root/derivatives/seeds/``.
    subject : str
        Subject label, with or without ``sub-``.
    stem : str
        File name stem, usually the label map's name without ``.nii.gz``.
    overwrite : bool
        Replace existing files; otherwise an existing file raises FileExistsError.

    Returns
    -------
    list of Path
    """
    written = []
    for k, layers in seeds.layers.items():
        for m, layer in layers.items():
            written.append(save_nifti(layer, seeds.affine, seed_path(root, subject, stem, k, m), overwrite=overwrite, description=SEEDS_DESCRIPTION))
    return written


SEED_FILE = re.compile(r"subclasses_(\d+)/.*_mlabel_(\d+)\.nii(\.gz)?$")


def load_seeds(root: str | os.PathLike, subject: str, stem: str | None = None) -> Seeds:
    """Load the seed layers of ``subject`` from dataset ``root`` (values kept as they are).

    Parameters
    ----------
    root : path
        Dataset root holding ``derivatives/seeds/``.
    subject : str
        Subject label, with or without ``sub-``.
    stem : str, optional
        File name stem; needed only when the subject has seeds of several images.

    Raises
    ------
    FileNotFoundError
        If no seed file exists for the subject.
    ValueError
        If several stems exist and none was chosen, layers disagree on the grid,
        or they hold values other than ``10 * M + j`` (j < K) and 0.
    """
    folder = Path(root) / SEEDS_FOLDER
    files = sorted(folder.glob(f"subclasses_*/{_subject_folder(subject)}/**/{stem or '*'}_mlabel_*.nii*"))
    if not files:
        raise FileNotFoundError(f"no seeds for {_subject_folder(subject)} under {folder}")
    stems = sorted({path.name.rsplit("_mlabel_", 1)[0] for path in files})
    if len(stems) > 1:
        raise ValueError(f"{_subject_folder(subject)} has seeds of several images {stems}; choose one with stem=")
    layers: dict[int, dict[int, np.ndarray]] = {}
    first = nib.load(files[0])
    for path in files:
        match = SEED_FILE.search(path.as_posix())
        k, m = int(match.group(1)), int(match.group(2))
        layer = nib.load(path)
        if layer.shape != first.shape or not np.allclose(layer.affine, first.affine, atol=1e-4):
            raise ValueError(f"{path}: grid differs from {files[0]}")
        values = np.asarray(layer.dataobj)
        allowed = [0] + [10 * m + j for j in range(k)]
        unexpected = np.setdiff1d(np.unique(values), allowed)
        if unexpected.size:
            raise ValueError(f"{path}: values {unexpected.tolist()} are not seeds of meta-label {m} with K={k} (expected {allowed})")
        layers.setdefault(k, {})[m] = values.astype(np.uint8)
    return Seeds(layers, np.asarray(first.affine, float), subject=_subject_folder(subject), stem=stems[0])


def _already_written(expected: list[Path], subject: str, overwrite: bool) -> bool:
    """Whether all of a subject's files ``expected`` exist (and ``overwrite`` is false): nothing to do.

    Raises
    ------
    FileExistsError
        When only some exist, one of them not written by fss seeds, and ``overwrite`` is false.

    Warns
    -----
    UserWarning
        When only some exist, all fss's (an interrupted run): they are made again.
    """
    existing = [path for path in expected if path.exists()]
    if not existing or overwrite:
        return False
    if len(existing) == len(expected):
        return True
    foreign = [path for path in existing if not _written_by_fss_seeds(path)]
    if foreign:
        raise FileExistsError(
            f"{len(existing)} of {len(expected)} seed files of {subject} exist and {foreign[0]} was not written by fss seeds; "
            "move it away, or pass overwrite=True (--overwrite) to replace it"
        )
    warnings.warn(f"{len(existing)} of {len(expected)} seed files of {subject} were left by an interrupted run: made again", stacklevel=3)
    return False


def write_seeds(
    image: str | os.PathLike,
    labels: str | os.PathLike,
    root: str | os.PathLike,
    subject: str,
    stem: str,
    convention: str = "feta",
    max_subclasses: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> list[Path]:
    """Make and save the seeds of one image / label map pair (what ``fss seeds`` does per subject).

    Beside the seeds, the label map converted to FeTA is written to :func:`labels_path`,
    so that the seeds folder holds everything the generator needs.

    Parameters
    ----------
    image, labels : path or nibabel image
        T2w image and its label map (NIfTI, same grid).
    root : path
        Dataset root; files go under ``root/derivatives/seeds/``.
    subject, stem : str
        Subject label and file name stem of the seed files.
    convention : str
        Label convention of ``labels`` (converted to FeTA).
    max_subclasses, seed : int
        As in :func:`make_seeds`.
    overwrite : bool
        Redo seeds that exist.

    Returns
    -------
    list of Path
        Files written (label map first); empty when all of them existed already (skipped). When only
        some existed, all written by fss (an interrupted run: the label map is written last), the
        subject is made again and they are replaced.

    Raises
    ------
    FileExistsError
        If only some of the files exist, one of them not written by fss (its header does not say
        :data:`SEEDS_DESCRIPTION`), and ``overwrite`` is false; or while another process writes the
        seeds of the same subject.
    ValueError
        If ``labels`` is a segmentation that ``fss segment`` wrote (its header says so: :data:`fss.io.SEGMENTATION_DESCRIPTION`).

    Warns
    -----
    UserWarning
        When another label convention fits the image far better (:func:`warn_of_a_likelier_convention`), and when an
        interrupted run's files are made again.
    """
    labels_path(root, subject, stem)  # a subject or stem that would lead out of the folder is refused before any work
    labels_file, image, labels = labels, load_nifti(image), load_nifti(labels)
    if described_as(labels, SEGMENTATION_DESCRIPTION):
        raise ValueError(
            f"{labels_file} is a segmentation made by fss (its header says so); seeds need reference label maps (manual or another pipeline's)"
        )
    _check_same_grid(image, labels)
    values = np.asarray(labels.dataobj)
    source = "the label map" if isinstance(labels_file, nib.spatialimages.SpatialImage) else os.fspath(labels_file)
    warn_of_a_likelier_convention(np.asarray(image.dataobj), values, convention, source)
    feta = nib.Nifti1Image(to_feta(values, convention), labels.affine)
    regions = meta_label_regions(np.asarray(image.dataobj), np.asarray(feta.dataobj))
    expected = [labels_path(root, subject, stem)]
    expected += [seed_path(root, subject, stem, k, m) for k in range(1, max_subclasses + 1) for m in regions]
    if _already_written(expected, subject, overwrite):
        return []
    seeds = make_seeds(image, feta, max_subclasses=max_subclasses, seed=seed)  # every refusal comes before anything is written
    with claimed(expected[0]) as mine:  # a subject's seed files and label map come from one process
        if not mine:
            raise FileExistsError(f"another process is writing the seeds of {subject} ({expected[0].parent}); wait for it to end")
        if not overwrite and all(path.exists() for path in expected):  # written by another process while this one fitted
            return []
        written = save_seeds(seeds, root, subject, stem, overwrite=True)
        # the label map last: once it is there, the subject is complete
        label_map = save_nifti(np.asarray(feta.dataobj), feta.affine, expected[0], overwrite=True, description=SEEDS_DESCRIPTION)
    return [label_map, *written]
