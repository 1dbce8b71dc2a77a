"""Domain-shift stress tests: seeded, realistic degradations of a real image at three severities.

Used to measure robustness: a model is evaluated on each shifted version of an image whose
labels are known (the labels stay as they are, since nothing moves). Kinds and severities
(1 mild, 2 moderate, 3 severe):

- ``thick_slices``: acquisition with 2, 3 or 4.5 mm slices along the last (inferior-superior)
  axis, as the stacks before super-resolution: Gaussian slice profile (FWHM = thickness),
  sampled every thickness, interpolated back linearly;
- ``resolution``: isotropic 1.1, 1.5 or 2 mm acquisition (same model on every axis);
- ``noise``: Rician noise with signal-to-noise ratio 20, 10 or 5 (foreground mean over sigma);
- ``bias``: smooth multiplicative field, exp of N(0, s) on about 4 nodes per axis, s = 0.2, 0.4, 0.6
  (within the CRL 31-week brain, seed 0, the 5th-95th percentile range of the field is about 0.83-1.05, 0.69-1.1
  and 0.58-1.16);
- ``gamma``: intensities scaled to [0, 1] raised to the power 1.5, 2 or 3.

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

import numpy as np
import torch
import torch.nn.functional as F

from fss.synth.bias import bias_field
from fss.synth.resolution import gaussian_blur

SEVERITIES: dict[str, tuple[float, float, float]] = {
    "thick_slices": (2.0, 3.0, 4.5),
    "resolution": (1.1, 1.5, 2.0),
    "noise": (20.0, 10.0, 5.0),
    "bias": (0.2, 0.4, 0.6),
    "gamma": (1.5, 2.0, 3.0),
}
"""The parameter of each kind at severities 1, 2 and 3 (mm, mm, SNR, log-field std, exponent)."""

FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))


def _acquire(volume: torch.Tensor, spacing: Sequence[float], resolution: Sequence[float]) -> torch.Tensor:
    """Blur with a Gaussian of FWHM ``resolution`` (mm per axis), sample at that step, interpolate back."""
    shape = tuple(volume.shape[2:])
    sigmas = [FWHM_TO_SIGMA * r / s if r > s else 0.0 for r, s in zip(resolution, spacing)]
    blurred = gaussian_blur(volume, sigmas)
    low = tuple(max(2, round(n * s / r)) if r > s else n for n, s, r in zip(shape, spacing, resolution))
    sampled = F.interpolate(blurred, size=low, mode="trilinear", align_corners=True)
    return F.interpolate(sampled, size=shape, mode="trilinear", align_corners=True)


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
        For the random kinds (noise, bias); the others are deterministic.

    Returns
    -------
    np.ndarray, (X, Y, Z) float32, on the same grid.
    """
    if kind not in SEVERITIES:
        raise ValueError(f"unknown stress {kind!r}; choose one of {sorted(SEVERITIES)}")
    if severity not in (1, 2, 3):
        raise ValueError(f"severity must be 1, 2 or 3, got {severity}")
    value = SEVERITIES[kind][severity - 1]
    volume = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    shape = tuple(volume.shape[2:])
    generator = torch.Generator().manual_seed(seed)
    if kind == "thick_slices":
        out = _acquire(volume, spacing, (spacing[0], spacing[1], value))
    elif kind == "resolution":
        out = _acquire(volume, spacing, (value,) * 3)
    elif kind == "noise":
        foreground = volume[volume > 0]
        sigma = float(foreground.mean()) / value if foreground.numel() else 0.0
        real = volume + sigma * torch.randn(volume.shape, generator=generator)
        imaginary = sigma * torch.randn(volume.shape, generator=generator)
        out = torch.sqrt(real**2 + imaginary**2)
    elif kind == "bias":
        out = volume * bias_field(4 / max(shape), value, seed, shape, torch.device("cpu"))[None]
    else:
        top = float(volume.max()) or 1.0
        out = (volume / top) ** value * top
    return out[0, 0].numpy()
