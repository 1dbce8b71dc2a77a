"""Resolution stage: blur to a random acquisition (isotropic or a thick-slice stack), resample there, add noise, resample back."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import ResolutionConfig
from fss.synth.draws import StageDraw, bernoulli, integers, seeds_from, uniform

BLUR_CONSTANT = math.log(5) / math.pi
"""Gaussian standard deviation per unit of thickness/spacing ratio, before the random factor in [0.85, 1.15]."""


@dataclass(frozen=True, eq=False)
class ResolutionDraw(StageDraw):
    """``preserve`` (B,) bool: keep the input resolution; ``resolution`` (B,) isotropic voxel (mm, or working voxels where
    ``in_voxels``); ``blur_factor`` (B, 3) in [0.85, 1.15]; ``noise_std`` (B,) on the 0-300 scale; ``noise_seed`` (B,);
    ``native_noise_grid`` (B,): how much finer the grid is on which images that keep their resolution get their noise.
    Drawn only by configurations that use them (else None): ``in_voxels`` (B,) bool; ``thick`` (B,) bool: a thick-slice
    stack, whose slices are ``slice_mm`` (B,) thick along axis ``slice_axis`` (B,) and whose in-plane voxel is
    ``inplane`` (B,) (in the units of ``resolution``)."""

    preserve: torch.Tensor
    resolution: torch.Tensor
    blur_factor: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: torch.Tensor
    native_noise_grid: torch.Tensor
    in_voxels: torch.Tensor | None = None
    thick: torch.Tensor | None = None
    slice_axis: torch.Tensor | None = None
    slice_mm: torch.Tensor | None = None
    inplane: torch.Tensor | None = None


def draw_resolution(config: ResolutionConfig, batch_size: int, generator: torch.Generator) -> ResolutionDraw | None:
    """Draw the acquisition of each sample, or None when the stage is off.

    The reference's quantities are drawn first and in its order, so that configurations without
    thick slices or voxel units draw exactly what they drew before these existed.
    """
    if not config.enabled:
        return None
    b = batch_size
    preserve = bernoulli(generator, (b,), config.preserve_resol)
    resolution = uniform(generator, (b,), config.min_resampling_iso_res, config.max_resampling_iso_res)
    blur_factor = uniform(generator, (b, 3), 0.85, 1.15)
    noise_std = uniform(generator, (b,), config.noise_std_min, config.noise_std_max)
    native_noise_grid = torch.full((b,), config.native_noise_grid, dtype=torch.float64)
    draw = ResolutionDraw(preserve, resolution, blur_factor, noise_std, seeds_from(generator, b), native_noise_grid)
    if config.units == "voxels":
        draw = dataclasses.replace(draw, in_voxels=torch.ones(b, dtype=torch.bool))
    if config.thick_slice_probability > 0:
        draw = dataclasses.replace(
            draw,
            thick=bernoulli(generator, (b,), config.thick_slice_probability),
            slice_axis=integers(generator, (b,), 0, 2),
            slice_mm=uniform(generator, (b,), config.slice_mm_min, config.slice_mm_max),
            inplane=torch.full((b,), config.min_resampling_iso_res, dtype=torch.float64),
        )
    return draw


def acquired_mm(params: ResolutionDraw, b: int, spacing: torch.Tensor) -> torch.Tensor | None:
    """Voxel size (mm, per axis: (3,) float64) of sample ``b``'s acquisition of an input of ``spacing`` (3,) mm, or None
    where it keeps the input's resolution."""
    if bool(params.preserve[b]):
        return None
    unit = spacing.double() if params.in_voxels is not None and bool(params.in_voxels[b]) else torch.ones(3, dtype=torch.float64)
    if params.thick is not None and bool(params.thick[b]):
        size = float(params.inplane[b]) * unit
        axis = int(params.slice_axis[b])
        size[axis] = max(float(params.slice_mm[b]), float(size[axis]))
        return size
    return float(params.resolution[b]) * unit


def blur_sigmas(resolution: float | torch.Tensor, blur_factor: torch.Tensor, spacing: torch.Tensor) -> list[float]:
    """Gaussian standard deviation (voxels) per axis for an acquisition of ``resolution`` mm (one for every axis, or (3,)
    per axis) of ``spacing`` mm voxels.

    No blur along an axis whose voxels are already as large as the resolution.
    """
    resolution = torch.as_tensor(resolution, dtype=torch.float64).expand(3)
    return [float(f) * BLUR_CONSTANT * float(r) / float(s) if float(r) > float(s) else 0.0 for f, r, s in zip(blur_factor, resolution, spacing)]


def gaussian_blur(volume: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Separable Gaussian blur of ``volume`` (1, 1, D, H, W), edges replicated; ``sigmas`` in voxels per axis.

    Written as a sum of shifted copies, which on CPUs is several times faster than ``conv3d``
    with a one-dimensional kernel.
    """
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        weights = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
        weights = (weights / weights.sum()).tolist()
        padding = [0, 0] * 3
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius
        padded = F.pad(volume, padding, mode="replicate")
        size = volume.shape[2 + axis]
        volume = padded.narrow(2 + axis, 0, size) * weights[0]
        for shift, weight in enumerate(weights[1:], start=1):
            volume.add_(padded.narrow(2 + axis, shift, size), alpha=weight)
    return volume


def apply_resolution(image: torch.Tensor, params: ResolutionDraw, spacings: torch.Tensor) -> torch.Tensor:
    """Simulate each sample's acquisition.

    Parameters
    ----------
    image : torch.Tensor, (B, 1, D, H, W)
        Non-negative intensities (0-300 scale).
    params : ResolutionDraw
    spacings : torch.Tensor, (B, 3)
        Voxel size of each sample in mm.

    Returns
    -------
    torch.Tensor, (B, 1, D, H, W): ``image`` itself, each sample blurred along the axes where its
    acquisition (:func:`acquired_mm`) is coarser than the grid, resampled to the acquired grid, made
    noisy (clipped at 0) and resampled back; where the resolution is kept, not blurred, and the round
    trip goes through a grid ``native_noise_grid`` times finer (none at 1).
    """
    shape = tuple(image.shape[2:])
    for b in range(len(image)):
        volume = image[b : b + 1]
        acquired = acquired_mm(params, b, spacings[b])
        if acquired is not None:
            volume = gaussian_blur(volume, blur_sigmas(acquired, params.blur_factor[b], spacings[b]))
            grid = tuple(max(2, round(n * float(s) / float(a))) for n, s, a in zip(shape, spacings[b], acquired))
        else:
            grid = tuple(round(n * float(params.native_noise_grid[b])) for n in shape)
        if grid != shape:
            volume = F.interpolate(volume, size=grid, mode="trilinear", align_corners=True)
        noise = torch.randn(volume.shape, generator=torch.Generator(image.device).manual_seed(int(params.noise_seed[b])), device=image.device)
        volume = volume.add_(noise, alpha=float(params.noise_std[b])).clamp_(min=0)
        if grid != shape:
            volume = F.interpolate(volume, size=shape, mode="trilinear", align_corners=True)
        image[b : b + 1] = volume
    return image


def acquired_voxel_size(params: ResolutionDraw, spacing: float, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest side (true mm) of the voxel that each drawn acquisition gives an input of ``spacing`` mm, and whether it blurs.

    Parameters
    ----------
    params : ResolutionDraw
    spacing : float
        Input voxel size (mm), the same on every axis.
    scale : float
        True millimetres per millimetre of the draws: 1 for fss; ``REFERENCE_MM`` models the
        reference, whose millimetres and "kept" grid are that much finer than it believes.

    Returns
    -------
    size : torch.Tensor, (B,) float64
        The drawn isotropic resolution or a stack's slice thickness (at least its in-plane voxel), or the kept grid's voxel
        size (``spacing * scale``) where the resolution is kept.
    blurred : torch.Tensor, (B,) bool
        The acquisition is coarser than the input on some axis (only then is the image blurred).
    """
    unit = torch.where(params.in_voxels, torch.tensor(spacing, dtype=torch.float64), 1.0) if params.in_voxels is not None else 1.0
    acquired = params.resolution * unit
    if params.thick is not None:
        acquired = torch.where(params.thick, torch.maximum(params.slice_mm, params.inplane * unit), acquired)
    size = torch.where(params.preserve, torch.full_like(acquired, spacing), acquired) * scale
    return size, ~params.preserve & (acquired * scale > spacing)
