"""Running a trained U-Net: on the working grid, and on a scan in its own grid (``segment``)."""

from __future__ import annotations

import math
import os
import warnings

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from fss.checkpoint import model_and_metadata, working_spacing
from fss.device import check_memory, native_bfloat16, resolve_device
from fss.io import WorkingGrid, check_image_argument, load_nifti, normalize_as_recorded
from fss.metrics import brain_turn_degrees, tissue_volumes
from fss.unet import UNet

MAX_WHOLE_VOXELS = 192**3
"""Larger working volumes are segmented by a sliding window, to bound memory."""

DEFAULT_WINDOW = 160
"""Side (voxels) of the sliding window used for volumes above :data:`MAX_WHOLE_VOXELS` unless one is given."""

BYTES_PER_WORKING_VOXEL = 4 * (2 + 2 * 8)
BYTES_PER_INPUT_VOXEL = 4 * (2 + 8 + 2) + 8 + 2
"""Estimated peak memory of :func:`segment` per voxel (bytes): on the working grid, the image
twice and the 8 class probabilities twice in float32; on the input's, the image twice, the
probabilities once and one class's two temporaries while they are mapped back (float32), the
int64 argmax and the int16 labels."""


def _forward(model: UNet, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (1, C, *S) of a (1, 1, *S) input whose sides are multiples of the model's; bfloat16 on GPUs
    that compute it natively (:func:`fss.device.native_bfloat16`), float32 elsewhere (CPUs included, for the same
    results on every CPU)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda" and native_bfloat16(x.device)):
        return torch.softmax(model(x).float(), dim=1)


def _gaussian_weights(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Window weights: a Gaussian with sigma = 1/8 of each side, so tile borders count little."""
    axes = [torch.exp(-0.5 * ((torch.arange(n, device=device) - (n - 1) / 2) / (n / 8)) ** 2) for n in shape]
    return (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).clamp(min=1e-3)


SEGMENT_MARGIN_MM = 8.0
"""Margin (mm) that :func:`segment` keeps around a scan's foreground by default: the field of view the network sees."""


def working_box(
    full: WorkingGrid, resampled: np.ndarray | torch.Tensor, multiple: int, normalization: dict | None, margin_mm: float = SEGMENT_MARGIN_MM
) -> tuple[WorkingGrid, torch.Tensor]:
    """The box of the working grid that :func:`segment` runs the network on, and its normalised image.

    Parameters
    ----------
    full : WorkingGrid
        The scan's whole working grid (:meth:`fss.io.WorkingGrid.from_image`).
    resampled : array or tensor, ``full.shape``
        The scan's intensities on it.
    multiple : int
        The network's multiple (:attr:`fss.unet.UNet.multiple`): the box's sides are multiples of it, at least two.
    normalization : dict or None
        What the checkpoint records (:func:`fss.io.normalize_as_recorded`).
    margin_mm : float
        Kept around the voxels above 0.

    Returns
    -------
    box : WorkingGrid
        The voxels above 0 with ``margin_mm`` around them.
    image : torch.Tensor, ``box.shape``
        Its intensities, normalised as in training.
    """
    box = full.around(torch.as_tensor(resampled) > 0, margin_mm=margin_mm, multiple=multiple, minimum=2 * multiple)
    return box, normalize_as_recorded(full.cut(resampled, box), normalization)


class NonFiniteOutput(ValueError):
    """The network computed NaN or infinite probabilities: its weights are not usable."""


MAX_FOREGROUND_MM = 200.0
"""A scan whose foreground spans more than this on an axis is not a fetal head (at most about 130 mm long at term):
:func:`segment` warns before the first window, with what it is about to compute."""

MAX_WINDOW_REPEATS = 125
"""How many times the sliding window may compute each voxel on average (overlap 0.5 computes it about 8 times, 0.8 about
125 times); more is refused, as a window and an overlap that would run for hours."""


def sliding_window(voxels: int, window: int | None) -> int | None:
    """The sliding window's side for a working volume of ``voxels`` voxels: ``window`` if given, else
    :data:`DEFAULT_WINDOW` above :data:`MAX_WHOLE_VOXELS`, else None (the whole volume at once)."""
    return DEFAULT_WINDOW if window is None and voxels > MAX_WHOLE_VOXELS else window


def window_starts(shape: tuple[int, ...], window: int, overlap: float) -> tuple[list[int], list[list[int]]]:
    """The sliding window's size (voxels per axis) over a volume of ``shape``, and where its windows start on each axis."""
    size = [min(window, n) for n in shape]
    step = [max(1, int(s * (1 - overlap))) for s in size]
    return size, [sorted({*range(0, n - s + 1, st), n - s}) for n, s, st in zip(shape, size, step)]


def _sliding(model: UNet, x: torch.Tensor, window: int, overlap: float = 0.5) -> torch.Tensor:
    """Probabilities of a large (1, 1, *S) input from overlapping windows, Gaussian-weighted.

    Raises
    ------
    ValueError
        If the windows would compute each voxel more than :data:`MAX_WINDOW_REPEATS` times on average.
    """
    shape = tuple(x.shape[2:])
    size, starts = window_starts(shape, window, overlap)
    windows = math.prod(len(axis) for axis in starts)
    repeats = windows * math.prod(size) / math.prod(shape)
    if repeats > MAX_WINDOW_REPEATS:
        raise ValueError(
            f"window {window} with overlap {overlap} takes {windows} windows over the {'x'.join(map(str, shape))} working grid, which computes "
            f"each voxel {repeats:.0f} times (at most {MAX_WINDOW_REPEATS}): take a larger window or a smaller overlap"
        )
    weights = _gaussian_weights(tuple(size), x.device)
    total = torch.zeros(1, model.config["n_classes"], *shape, device=x.device)
    norm = torch.zeros(shape, device=x.device)
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                region = (slice(a, a + size[0]), slice(b, b + size[1]), slice(c, c + size[2]))
                total[(slice(None), slice(None), *region)] += _forward(model, x[(slice(None), slice(None), *region)]) * weights
                norm[region] += weights
    return total / norm


@torch.no_grad()
def predict_working(
    model: UNet,
    image: np.ndarray | torch.Tensor,
    device: str | torch.device | None = None,
    tta: bool = False,
    window: int | None = None,
    overlap: float = 0.5,
) -> torch.Tensor:
    """Class probabilities of one volume already on the model's working grid.

    Parameters
    ----------
    model : UNet
    image : array or tensor, (X, Y, Z)
        Normalised intensities ([0, 1]) at the model's spacing, RAS+.
    device : torch device, optional
        Default: the model's.
    tta : bool
        Average with the prediction of the left-right flipped volume (first axis).
    window : int, optional
        Side of the sliding window (a multiple of the model's); default whole volume when it
        has at most ``MAX_WHOLE_VOXELS`` voxels, else ``DEFAULT_WINDOW``.
    overlap : float
        Fraction of the window shared by neighbouring windows, in [0, 1).

    Returns
    -------
    torch.Tensor, (n_classes, X, Y, Z) float32 on ``device``: softmax probabilities. The volume is
    padded with zeros to the model's multiple and cropped back.

    Raises
    ------
    ValueError
        If ``overlap`` or ``window`` is out of range, or (:class:`NonFiniteOutput`) the network's output is not finite.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if window is not None and (window < model.multiple or window % model.multiple):
        raise ValueError(f"window must be a positive multiple of {model.multiple} voxels, got {window}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.as_tensor(image, dtype=torch.float32, device=device)[None, None]
    pad = [(-n) % model.multiple for n in x.shape[2:]]
    padding = []
    for p in reversed(pad):
        padding += [p // 2, p - p // 2]
    x = F.pad(x, padding)
    window = sliding_window(x[0, 0].numel(), window)
    was_training = model.training
    model.eval()

    def run(volume):
        return _forward(model, volume) if window is None else _sliding(model, volume, window, overlap)

    probabilities = run(x)
    if tta:
        probabilities = (probabilities + run(x.flip(2)).flip(2)) / 2
    model.train(was_training)
    if not bool(torch.isfinite(probabilities).all()):
        raise NonFiniteOutput("the network's output is not finite (NaN or infinite): its weights are not usable, e.g. from a training that diverged")
    crop = [slice(p // 2, p // 2 + n) for p, n in zip(pad, image.shape)]
    return probabilities[0][(slice(None), *crop)]


def segment(
    image: str | os.PathLike | nib.spatialimages.SpatialImage,
    checkpoint: str | os.PathLike | tuple[UNet, dict],
    device: str | torch.device = "auto",
    tta: bool = False,
    margin_mm: float = SEGMENT_MARGIN_MM,
    window: int | None = None,
    overlap: float = 0.5,
) -> tuple[nib.Nifti1Image, torch.Tensor]:
    """Segment a scan into FeTA tissues, on the scan's own grid.

    The scan is brought to the checkpoint's working grid (RAS+, its spacing), cut to the
    foreground with a margin, normalised as in training, segmented (sliding window when large,
    optional left-right test-time augmentation), and the probabilities are mapped back exactly
    onto the input grid.

    Parameters
    ----------
    image : path or nibabel image
        A 3-D T2-weighted scan (see :func:`fss.io.load_nifti` for what is accepted).
    checkpoint : path, or (model, metadata) from :func:`fss.checkpoint.load_checkpoint`
    device : str or torch.device
    tta : bool
        Average with the left-right flipped prediction.
    margin_mm : float
        Margin kept around the foreground (voxels above 0).
    window, overlap
        Sliding window (see :func:`predict_working`); default: the whole working box when it is small enough.

    Returns
    -------
    labels : nibabel.Nifti1Image
        int16 FeTA label map, same shape and affine as the input.
    probabilities : torch.Tensor, (8, X, Y, Z)
        Class probabilities on the input grid (CPU).

    Raises
    ------
    TypeError
        Naming the argument, for an ``image`` that is neither a path nor a nibabel image, or a ``checkpoint`` that is
        neither a path nor a (model, metadata) pair.
    ValueError
        For a negative ``margin_mm``, an unusable scan (see ``load_nifti``) or one without any positive voxel, or a checkpoint
        (:class:`fss.checkpoint.CheckpointError`) that records no positive ``spacing_mm``.
    """
    if not margin_mm >= 0:
        raise ValueError(f"margin_mm must be 0 or more (mm kept around the foreground), got {margin_mm}")
    device = resolve_device(device)
    check_image_argument(image, "image")
    model, metadata = model_and_metadata(checkpoint, device)
    spacing = working_spacing(metadata, checkpoint if not isinstance(checkpoint, tuple) else "the checkpoint")
    scan = load_nifti(image)
    data = np.asarray(scan.dataobj, dtype=np.float32)
    full = WorkingGrid.from_image(scan, spacing)
    working_voxels, input_voxels = math.prod(full.resampled_shape), math.prod(full.input_shape)
    check_memory(
        BYTES_PER_WORKING_VOXEL * working_voxels + BYTES_PER_INPUT_VOXEL * input_voxels,
        "cpu",
        f"segmenting a {'x'.join(map(str, full.input_shape))} scan on a {'x'.join(map(str, full.resampled_shape))} working grid",
    )
    if data.max() == data.min():
        raise ValueError(f"the image is constant (every voxel {data.flat[0]:g}): nothing to segment")
    resampled = full.to_working(data)
    if not (resampled > 0).any():
        raise ValueError("the image has no voxel above 0: nothing to segment")
    grid, working = working_box(full, resampled, model.multiple, metadata.get("normalization"), margin_mm)
    _warn_of_a_field_larger_than_a_head(tuple(working.shape), spacing, window, overlap)
    probabilities = predict_working(model, working, device, tta=tta, window=window, overlap=overlap).cpu()
    back = grid.to_input(probabilities, "linear", fill=0)
    back[0] = 1 - back[1:].sum(0)
    labels = back.argmax(0).to(torch.int16).numpy()
    result = nib.Nifti1Image(labels, scan.affine)
    result.header.set_xyzt_units("mm")
    _warn_of_a_brain_of_no_fetal_size(result)
    _warn_of_a_brain_turned_in_its_grid(result)
    return result, back


FETAL_BRAIN_ML = (15.0, 800.0)
"""Brain volumes (ml, every tissue but the extra-axial CSF) beyond which :func:`segment` warns: a fetal brain holds about
50 ml at 20 weeks and 400 ml at term, so a segmentation outside these bounds is of something else, or of a scan with
wrong voxel sizes."""


def _warn_of_a_brain_of_no_fetal_size(labels: nib.Nifti1Image) -> None:
    """Warn when the brain that ``labels`` (FeTA) hold is outside :data:`FETAL_BRAIN_ML`."""
    brain_ml = tissue_volumes(labels)["brain_mm3"] / 1000
    low, high = FETAL_BRAIN_ML
    if not low <= brain_ml <= high:
        warnings.warn(
            f"the segmentation holds {brain_ml:.1f} ml of brain (without the extra-axial CSF), outside the {low:g}-{high:g} ml of any "
            "fetal brain: is the scan a fetal brain, with the right voxel sizes?",
            stacklevel=3,
        )


TURNED_BRAIN_DEGREES = 40.0
"""The brain's turn within the scan's grid (:func:`fss.metrics.brain_turn_degrees`, read from the segmentation) beyond
which :func:`segment` warns. Measured with ``python benchmarks/brain_orientation.py`` (the brain-masked Wu atlas at 22, 26,
30 and 34 weeks turned within its grid): upright brains read 8-14 degrees; turned by 30 degrees about any axis they read
28-39 and the packaged synthetic model loses 0.03-0.04 of its mean Dice; turned by 45 degrees they read 44-54 and it loses
0.11-0.13, by 60 degrees 0.28-0.34. The generator turns its brains by up to 20 degrees about each axis."""


TURNED_BRAIN_WARNING = "the segmented brain's axes lie about"
"""How the warning of a turned brain begins."""


def _warn_of_a_brain_turned_in_its_grid(labels: nib.Nifti1Image) -> None:
    """Warn when the brain that ``labels`` (FeTA) hold lies turned by more than :data:`TURNED_BRAIN_DEGREES` in its grid.

    The turn is read from the segmentation's shape, so a segmentation that failed (most tissues missed, as under another
    contrast) can read as turned too: the warning names both causes.
    """
    degrees = brain_turn_degrees(labels)
    if degrees > TURNED_BRAIN_DEGREES:
        warnings.warn(
            f"{TURNED_BRAIN_WARNING} {degrees:.0f} degrees from the scan's: either the brain lies turned in its grid (the models "
            f"were trained on brains turned by at most 20 degrees and lose much of their accuracy beyond {TURNED_BRAIN_DEGREES:.0f}: "
            "turn the scan so that the brain lies along its axes, e.g. by a rigid registration to an atlas, and segment it again) "
            "or the segmentation failed: look at it",
            stacklevel=3,
        )


def _warn_of_a_field_larger_than_a_head(shape: tuple[int, int, int], spacing: float, window: int | None, overlap: float) -> None:
    """Warn when the working box (``shape`` voxels of ``spacing`` mm) is larger than :data:`MAX_FOREGROUND_MM` on an axis."""
    extent = [n * spacing for n in shape]
    if max(extent) <= MAX_FOREGROUND_MM:
        return
    window = sliding_window(math.prod(shape), window)
    if window is None:
        work = "one pass of the network"
    else:
        size, starts = window_starts(shape, window, overlap)
        work = f"{math.prod(len(axis) for axis in starts)} windows of {'x'.join(map(str, size))} voxels"
    warnings.warn(
        f"the scan's foreground spans {' x '.join(f'{e:.0f}' for e in extent)} mm, more than any fetal head (about 130 mm long at "
        f"term): a whole uterus, or wrong voxel sizes? Segmenting it takes {work}; crop or mask the scan to the head first",
        stacklevel=3,
    )
