"""Domain-shift stress tests: seeded, realistic degradations of a real image at three severities.

Used to measure robustness: a model is evaluated on each shifted version of an image whose
labels are known (the labels stay as they are: the anatomy does not move, only its picture
changes). Kinds, with the parameters of severities 1 (mild), 2 (moderate) and 3 (severe) in
:data:`SEVERITIES`:

- ``thick_slices``: acquisition with 2, 3 or 4.5 mm slices along the last (inferior-superior)
  axis, as the stacks before super-resolution: Gaussian slice profile (FWHM = thickness),
  sampled every thickness, interpolated back linearly;
- ``resolution``: isotropic 1.1, 1.5 or 2 mm acquisition (same model on every axis);
- ``noise``: Rician noise with signal-to-noise ratio 20, 10 or 5 (foreground mean over sigma);
- ``bias``: smooth multiplicative field, exp of N(0, s) on about 4 nodes per axis, s = 0.2, 0.4, 0.6
  (within the CRL 31-week brain, seed 0, the 5th-95th percentile range of the field is about 0.83-1.05, 0.69-1.1
  and 0.58-1.16);
- ``gamma``: intensities scaled to [0, 1] raised to the power 1.5, 2 or 3;
- ``contrast``: another sequence or field strength. Intensities (scaled to [0, 1] by the
  maximum) go through a smooth random transfer curve: a monotone cubic (PCHIP) through six
  evenly spaced knots, each moved at random by up to ``jitter``. At severity 1 (jitter 0.08,
  less than half the knots' spacing) the curve keeps rising, so tissues keep their order and
  only their spacing changes (another scanner, another echo time); at severity 2 (0.3)
  neighbouring tissues may swap; at severity 3 the curve falls (1 - u, jittered by 0.08), so the
  order is inverted: cerebrospinal fluid becomes darker than white matter, as in a
  T1-weighted image. The curve acts on intensities only;
- ``motion``: what super-resolution leaves after fetal motion (:mod:`fss.synth.motion`): 3 mm
  slabs along the last axis moved within their plane, shifts of standard deviation 0.4, 0.8 or
  1.6 mm and rotations of 1, 2 or 4 degrees per interleaved pass, passes scaled by 1 +- 0.02, 0.04 or 0.08
  between the passes;
- ``low_field``: a 0.55 T-like acquisition, three changes together: softer contrast (the
  foreground's deviations from its mean scaled by 0.85, 0.7 or 0.55), thicker slices (3, 4 or
  5 mm, as ``thick_slices``) and lower SNR (15, 10 or 6, Rician).

:func:`clinical_stack` is another kind of shift: it changes the grid too. It re-acquires a
whole-head volume as one clinical stack (thick slices along one axis, finer in-plane voxels, on
the stack's own grid), brain-masked with a mask a little wider or narrower than the brain and
cropped with random margins, as the single stacks that clinics segment without super-resolution.

``contrast`` and ``low_field`` change intensities of the foreground only: voxels near 0 (the
edge of a skull-stripped brain, the background) fade to their own value, so that the
background stays black and no bright rim appears where the brain meets it.

Example
-------
>>> import numpy as np
>>> image = np.random.default_rng(0).random((32, 32, 32)).astype(np.float32)
>>> stress(image, (0.8, 0.8, 0.8), "thick_slices", 3).shape
(32, 32, 32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.affines import voxel_sizes
from nibabel.processing import resample_from_to
from scipy import ndimage
from scipy.interpolate import PchipInterpolator
from scipy.spatial.transform import Rotation

from fss.synth.bias import bias_field
from fss.synth.motion import slab_motion

SEVERITIES: dict[str, tuple[dict[str, float], dict[str, float], dict[str, float]]] = {
    "thick_slices": ({"slice_mm": 2.0}, {"slice_mm": 3.0}, {"slice_mm": 4.5}),
    "resolution": ({"resolution_mm": 1.1}, {"resolution_mm": 1.5}, {"resolution_mm": 2.0}),
    "noise": ({"snr": 20.0}, {"snr": 10.0}, {"snr": 5.0}),
    "bias": ({"log_std": 0.2}, {"log_std": 0.4}, {"log_std": 0.6}),
    "gamma": ({"exponent": 1.5}, {"exponent": 2.0}, {"exponent": 3.0}),
    "contrast": ({"jitter": 0.08, "inverted": 0.0}, {"jitter": 0.3, "inverted": 0.0}, {"jitter": 0.08, "inverted": 1.0}),
    "motion": (
        {"slab_mm": 3.0, "shift_mm": 0.4, "angle_deg": 1.0, "gain": 0.02},
        {"slab_mm": 3.0, "shift_mm": 0.8, "angle_deg": 2.0, "gain": 0.04},
        {"slab_mm": 3.0, "shift_mm": 1.6, "angle_deg": 4.0, "gain": 0.08},
    ),
    "low_field": (
        {"slice_mm": 3.0, "snr": 15.0, "contrast": 0.85},
        {"slice_mm": 4.0, "snr": 10.0, "contrast": 0.7},
        {"slice_mm": 5.0, "snr": 6.0, "contrast": 0.55},
    ),
}
"""The parameters of each kind at severities 1, 2 and 3 (see the module's documentation)."""

CLINICAL_SLICES_MM = (3.0, 4.5, 6.0)
"""Slice thicknesses (and spacings, mm) of the clinical stacks an evaluation draws (:func:`clinical_stack`)."""
CLINICAL_INPLANE_MM = (0.5, 0.8)
"""Range of a clinical stack's in-plane voxel size (mm), drawn uniformly."""
CLINICAL_MASK_MM = (-1.0, 2.0)
"""Range of how much wider (positive) or narrower (negative) than the brain a clinical stack's mask is (mm): a mask that cuts
more than about a voxel of visible brain would be corrected in a clinic, one a few voxels wide is often kept."""
CLINICAL_CROP_MM = (2.0, 20.0)
"""Range of the margin (mm) left around the mask on each side of a clinical stack's field of view."""

ACROSS_SLICES = ("thick_slices", "motion", "low_field")
"""The kinds that act along the last (inferior-superior) axis, across slices: best seen on a coronal or sagittal slice."""
FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))
CONTRAST_KNOTS = 6
EDGE_PERCENTILE = 5
"""Foreground voxels below this percentile of the foreground fade from changed to unchanged intensities."""


def describe(kind: str, severity: int) -> str:
    """Short text of a kind's parameters at a severity, e.g. ``'slice_mm 3, snr 10, contrast 0.7'``."""
    return ", ".join(f"{name} {value:g}" for name, value in _parameters(kind, severity).items())


def _parameters(kind: str, severity: int) -> dict[str, float]:
    if kind not in SEVERITIES:
        raise ValueError(f"unknown stress {kind!r}; choose one of {sorted(SEVERITIES)}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity}")
    return SEVERITIES[kind][severity - 1]


def _acquire(volume: torch.Tensor, spacing: Sequence[float], resolution: Sequence[float]) -> torch.Tensor:
    """Blur with a Gaussian of FWHM ``resolution`` (mm per axis; edges replicated), sample at that step, interpolate back."""
    shape = tuple(volume.shape[2:])
    sigmas = [FWHM_TO_SIGMA * r / s if r > s else 0.0 for r, s in zip(resolution, spacing)]
    blurred = torch.from_numpy(ndimage.gaussian_filter(volume[0, 0].numpy(), sigmas, mode="nearest", truncate=3.0))[None, None]
    low = tuple(max(2, round(n * s / r)) if r > s else n for n, s, r in zip(shape, spacing, resolution))
    sampled = F.interpolate(blurred, size=low, mode="trilinear", align_corners=True)
    return F.interpolate(sampled, size=shape, mode="trilinear", align_corners=True)


def _rician(volume: torch.Tensor, snr: float, generator: torch.Generator) -> torch.Tensor:
    """Magnitude of the image plus complex Gaussian noise of sigma = foreground mean / ``snr``."""
    foreground = volume[volume > 0]
    sigma = float(foreground.mean()) / snr if foreground.numel() else 0.0
    real = volume + sigma * torch.randn(volume.shape, generator=generator)
    imaginary = sigma * torch.randn(volume.shape, generator=generator)
    return torch.sqrt(real**2 + imaginary**2)


def _on_foreground(volume: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """``changed`` inside the foreground, fading to ``volume`` itself below its 5th percentile (and at 0)."""
    foreground = volume[volume > 0]
    if foreground.numel() == 0:
        return volume
    edge = float(torch.quantile(foreground[:: max(1, foreground.numel() // 1_000_000)], EDGE_PERCENTILE / 100))
    weight = (volume / max(edge, 1e-12)).clamp(0, 1)
    return volume + weight * (changed - volume)


def _transfer_curve(jitter: float, inverted: bool, generator: torch.Generator) -> PchipInterpolator:
    """Random smooth curve [0, 1] -> [0, 1]: through knots ``u`` (or ``1 - u``) each moved by up to ``jitter``."""
    knots = np.linspace(0, 1, CONTRAST_KNOTS)
    moves = (2 * torch.rand(CONTRAST_KNOTS, generator=generator, dtype=torch.float64) - 1).numpy() * jitter
    values = np.clip((1 - knots if inverted else knots) + moves, 0.02, 1.0)
    return PchipInterpolator(knots, values)


def stress(image: np.ndarray, spacing: Sequence[float], kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """A shifted version of ``image``.

    Parameters
    ----------
    image : np.ndarray, (X, Y, Z)
        Intensities on a RAS+ grid (non-negative), e.g. normalised to [0, 1].
    spacing : (3,) floats
        Voxel size in mm.
    kind : str
        A key of :data:`SEVERITIES`.
    severity : int
        1, 2 or 3.
    seed : int
        For the random kinds (noise, bias, contrast, motion, low_field); the others are deterministic.

    Returns
    -------
    np.ndarray, (X, Y, Z) float32, on the same grid, non-negative.
    """
    p = _parameters(kind, severity)
    volume = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    shape = tuple(volume.shape[2:])
    generator = torch.Generator().manual_seed(seed)
    top = float(volume.max()) or 1.0
    if kind == "thick_slices":
        out = _acquire(volume, spacing, (spacing[0], spacing[1], p["slice_mm"]))
    elif kind == "resolution":
        out = _acquire(volume, spacing, (p["resolution_mm"],) * 3)
    elif kind == "noise":
        out = _rician(volume, p["snr"], generator)
    elif kind == "bias":
        out = volume * bias_field(4 / max(shape), p["log_std"], seed, shape, torch.device("cpu"))[None]
    elif kind == "gamma":
        out = (volume / top) ** p["exponent"] * top
    elif kind == "contrast":
        curve = _transfer_curve(p["jitter"], bool(p["inverted"]), generator)
        remapped = torch.from_numpy(curve((volume / top).clamp(0, 1).numpy()).astype(np.float32)) * top
        out = _on_foreground(volume, remapped)
    elif kind == "motion":
        out = slab_motion(volume, spacing, p["slab_mm"], p["shift_mm"], p["angle_deg"], p["gain"], seed)
    else:  # low_field
        foreground = volume[volume > 0]
        mean = float(foreground.mean()) if foreground.numel() else 0.0
        softer = _on_foreground(volume, mean + p["contrast"] * (volume - mean))
        out = _rician(_acquire(softer, spacing, (spacing[0], spacing[1], p["slice_mm"])), p["snr"], generator)
    return out.clamp_(min=0)[0, 0].numpy()


def stress_views(image: np.ndarray, spacing: Sequence[float], kinds: Sequence[str], seed: int = 0) -> dict[str, list[tuple[str, np.ndarray]]]:
    """A middle slice of ``image`` clean and under each kind of stress at severities 1, 2 and 3, for :func:`fss.viz.plot_stresses`.

    Parameters
    ----------
    image : np.ndarray, (X, Y, Z)
        Intensities scaled to [0, 1] (:func:`fss.io.normalize_intensities`), RAS-oriented.
    spacing : (3,) floats
        Voxel size in mm.
    kinds : names in :data:`SEVERITIES`
    seed : int
        Seed of the stresses' random draws.

    Returns
    -------
    dict of kind to four (title, slice) pairs
        ``"clean"`` first, then ``"<severity>: <parameters>"`` (:func:`describe`, one per line). The kinds in
        :data:`ACROSS_SLICES` on a coronal slice, the others on an axial one; anterior or superior up.
    """

    def view(volume: np.ndarray, kind: str) -> np.ndarray:
        middle = volume[:, volume.shape[1] // 2, :] if kind in ACROSS_SLICES else volume[:, :, volume.shape[2] // 2]
        return np.rot90(middle).copy()  # a copy: a view would keep the whole stressed volume alive

    return {
        kind: [
            ("clean", view(image, kind)),
            *((f"{s}: " + describe(kind, s).replace(", ", "\n"), view(stress(image, spacing, kind, s, seed=seed), kind)) for s in (1, 2, 3)),
        ]
        for kind in kinds
    }


def _turned_about_centre(image: nib.spatialimages.SpatialImage, degrees: float, axis: int) -> np.ndarray:
    """(4, 4) affine of ``image``'s grid turned by ``degrees`` about world axis ``axis`` through the field of view's centre."""
    affine = np.asarray(image.affine, float)
    centre = affine @ np.r_[(np.asarray(image.shape[:3]) - 1) / 2, 1.0]
    angle = math.radians(degrees)
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(4)
    rotation[[i, i, j, j], [i, j, i, j]] = [math.cos(angle), -math.sin(angle), math.sin(angle), math.cos(angle)]
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre[:3], centre[:3]
    return back @ rotation @ to_centre @ affine


def _resampled(image: nib.spatialimages.SpatialImage, placed_by: np.ndarray, shape: Sequence[int], affine: np.ndarray, mode: str) -> nib.Nifti1Image:
    """``image``'s voxels, placed in the world by the affine ``placed_by``, resampled onto the grid (``shape``, ``affine``):
    trilinear in float32 (``mode="linear"``) or nearest-neighbour in their own dtype (``"nearest"``), 0 outside."""
    data = np.asarray(image.dataobj)
    source = nib.Nifti1Image(data.astype(np.float32) if mode == "linear" else data, placed_by)
    return resample_from_to(source, (tuple(shape), affine), order=1 if mode == "linear" else 0, mode="constant", cval=0)


def turn(image: nib.spatialimages.SpatialImage, degrees: float, axis: int = 0, mode: str = "linear") -> nib.Nifti1Image:
    """The same anatomy on a grid turned by ``degrees`` about a world axis through the field of view's centre.

    The scan is resampled (trilinear, or nearest for label maps) onto the turned grid: in world
    space nothing moves, so a segmentation of the turned copy, resampled back onto the
    original grid, can be compared with the segmentation of the original voxel by voxel. Parts
    of the turned grid outside the original field of view are 0. Segmentation reorients a scan
    to its closest RAS axes first, so a turn of 45 degrees or more reaches the network as a
    smaller one: :func:`turn_anatomy` turns the brain within the grid instead.

    Parameters
    ----------
    image : nibabel image, (X, Y, Z)
    degrees : float
        Rotation angle; positive turns counter-clockwise seen from the positive axis.
    axis : int
        World axis of the rotation: 0 (x, left-right: a nod), 1 (y) or 2 (z).
    mode : {"linear", "nearest"}
        Trilinear (images) or nearest-neighbour (label maps) resampling, by nibabel.

    Returns
    -------
    nibabel.Nifti1Image, same shape, affine turned, float32 (linear) or the input's dtype (nearest).
    """
    return _resampled(image, image.affine, image.shape[:3], _turned_about_centre(image, degrees, axis), mode)


def turn_anatomy(image: nib.spatialimages.SpatialImage, degrees: float, axis: int = 0, mode: str = "linear") -> nib.Nifti1Image:
    """The anatomy turned by ``degrees`` about a world axis through the field of view's centre, on the same grid.

    As a fetus lies at any angle in the scanner while the scan's grid follows the scanner: the
    brain's axes leave the grid's. Turn the labels with ``mode="nearest"`` to score a segmentation
    of the turned image. Parts of the turned anatomy that leave the field of view are lost, and
    the field of view's corners that it uncovers are 0.

    Parameters
    ----------
    image, degrees, axis, mode
        As :func:`turn` takes them (axis 1, anterior-posterior, is a roll; axis 2 a turn of the head).

    Returns
    -------
    nibabel.Nifti1Image, same shape and affine as ``image``, float32 (linear) or the input's dtype (nearest).
    """
    return _resampled(image, _turned_about_centre(image, degrees, axis), image.shape[:3], image.affine, mode)


def another_grid(
    image: nib.spatialimages.SpatialImage,
    degrees: Sequence[float],
    voxel_mm: Sequence[float],
    shape: Sequence[int],
    mode: str = "linear",
) -> nib.Nifti1Image:
    """The same anatomy resampled onto another scanner's grid, centred on the field of view of ``image``.

    Parameters
    ----------
    image : nibabel image, (X, Y, Z)
    degrees : (3,) floats
        The grid's turn, as rotations about the world x, y and z axes (extrinsic, in that order).
    voxel_mm : (3,) floats
        The grid's voxel sizes (mm) along its axes before the turn; a negative size runs that axis the other way (an
        RAS image turned to LPS by ``(-a, -b, c)``).
    shape : (3,) ints
    mode : {"linear", "nearest"}
        Trilinear (images) or nearest-neighbour (label maps) resampling, by nibabel.

    Returns
    -------
    nibabel.Nifti1Image, ``shape``, float32 (linear) or the input's dtype (nearest); 0 outside the field of view of ``image``.
    """
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix() @ np.diag(voxel_mm)
    centre = image.affine[:3, :3] @ ((np.asarray(image.shape[:3]) - 1) / 2) + image.affine[:3, 3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return _resampled(image, image.affine, shape, affine, mode)


def clinical_stack(
    image: nib.spatialimages.SpatialImage,
    labels: nib.spatialimages.SpatialImage,
    brain: nib.spatialimages.SpatialImage,
    axis: int,
    slice_mm: float,
    seed: int | Sequence[int] = 0,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    """The anatomy of a whole-head volume as one clinical stack, on the stack's own grid.

    The stack has ``slice_mm`` slices along ``axis`` of the image's grid and square in-plane
    voxels drawn from :data:`CLINICAL_INPLANE_MM`. The image is blurred by the acquisition
    (Gaussian profiles of FWHM ``slice_mm`` across the slices and of the in-plane voxel size within
    them, where they exceed the image's voxels) and sampled linearly at the stack's voxels; the
    labels are sampled at the same points (nearest neighbour). The stack is then brain-masked as
    a clinic would: ``brain`` made wider or narrower by a margin drawn from
    :data:`CLINICAL_MASK_MM` (so that some brain is cut, or some skull kept), and its field of
    view is the mask's box with margins drawn from :data:`CLINICAL_CROP_MM` on each side.

    Parameters
    ----------
    image, labels, brain : nibabel images on one grid
        A whole-head scan, its label map and its brain mask (non-zero inside).
    axis : int
        Axis of the image's grid across the slices (0, 1 or 2).
    slice_mm : float
        Slice thickness and spacing (mm).
    seed : int or sequence of int
        For the draws (:class:`numpy.random.Generator`).

    Returns
    -------
    stack : nibabel.Nifti1Image, float32
        Zero outside the mask.
    stack_labels : nibabel.Nifti1Image, the labels' dtype, on the stack's grid
        Not masked: the brain that a narrow mask cuts keeps its labels.
    drawn : dict
        ``inplane_mm``, ``mask_margin_mm`` and ``crop_mm`` ((3, 2) margins before and after each axis).
    """
    rng = np.random.default_rng(seed)
    inplane = float(rng.uniform(*CLINICAL_INPLANE_MM))
    margin = float(rng.uniform(*CLINICAL_MASK_MM))
    crop = rng.uniform(*CLINICAL_CROP_MM, size=(3, 2))
    spacing = voxel_sizes(image.affine)
    target = np.full(3, inplane)
    target[axis] = slice_mm
    inside = np.asarray(brain.dataobj) > 0
    if margin >= 0:
        mask = ndimage.distance_transform_edt(~inside, sampling=spacing) <= margin
    else:
        mask = ndimage.distance_transform_edt(inside, sampling=spacing) > -margin
    where = np.argwhere(mask)
    start = where.min(0) - crop[:, 0] / spacing  # in the image's voxels
    end = where.max(0) + crop[:, 1] / spacing
    shape = tuple(int(n) + 1 for n in np.floor((end - start) * spacing / target))
    grid = np.asarray(image.affine, float) @ np.block([[np.diag(target / spacing), start[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    sigmas = [FWHM_TO_SIGMA * t / s if t > s else 0.0 for t, s in zip(target, spacing)]
    blurred = ndimage.gaussian_filter(np.asarray(image.dataobj, np.float32), sigmas, mode="nearest", truncate=3.0)
    sampled = resample_from_to(nib.Nifti1Image(blurred, image.affine), (shape, grid), order=1, mode="constant", cval=0)
    kept = resample_from_to(nib.Nifti1Image(mask.astype(np.uint8), image.affine), (shape, grid), order=0, mode="constant", cval=0)
    stack = np.asarray(sampled.dataobj, np.float32) * (np.asarray(kept.dataobj) > 0)
    stack_labels = resample_from_to(labels, (shape, grid), order=0, mode="constant", cval=0)
    drawn = {"inplane_mm": inplane, "mask_margin_mm": margin, "crop_mm": crop.round(2).tolist()}
    return nib.Nifti1Image(stack, grid), nib.Nifti1Image(np.asarray(stack_labels.dataobj), grid), drawn
