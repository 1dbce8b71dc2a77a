"""Resolution stage: blur to a random isotropic resolution, resample there, add noise, resample back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import ResolutionConfig
from fss.synth.draws import StageDraw, bernoulli, seeds_from, uniform

BLUR_CONSTANT = math.log(5) / math.pi
"""Gaussian standard deviation per unit of thickness/spacing ratio, before the random factor in [0.85, 1.15]."""


@dataclass(frozen=True, eq=False)
class ResolutionDraw(StageDraw):
    """``preserve`` (B,) bool: keep the input resolution; ``resolution`` (B,) mm; ``blur_factor`` (B, 3) in
    [0.85, 1.15]; ``noise_std`` (B,) on the 0-300 scale; ``noise_seed`` (B,); ``native_noise_grid`` (B,): how
    much finer the grid is on which images that keep their resolution get their noise."""

    preserve: torch.Tensor
    resolution: torch.Tensor
    blur_factor: torch.Tensor
    noise_std: torch.Tensor
    noise_seed: torch.Tensor
    native_noise_grid: torch.Tensor


def draw_resolution(config: ResolutionConfig, batch_size: int, generator: torch.Generator) -> ResolutionDraw | None:
    """Draw the acquisition of each sample, or None when the stage is off."""
    if not config.enabled:
        return None
    b = batch_size
    preserve = bernoulli(generator, (b,), config.preserve_resol)
    resolution = uniform(generator, (b,), config.min_resampling_iso_res, config.max_resampling_iso_res)
    blur_factor = uniform(generator, (b, 3), 0.85, 1.15)
    noise_std = uniform(generator, (b,), config.noise_std_min, config.noise_std_max)
    native_noise_grid = torch.full((b,), config.native_noise_grid, dtype=torch.float64)
    return ResolutionDraw(preserve, resolution, blur_factor, noise_std, seeds_from(generator, b), native_noise_grid)


def blur_sigmas(resolution: float, blur_factor: torch.Tensor, spacing: torch.Tensor) -> list[float]:
    """Gaussian standard deviation (voxels) per axis for a ``resolution`` mm acquisition of ``spacing`` mm voxels.

    No blur along an axis whose voxels are already as large as the resolution.
    """
    return [float(f) * BLUR_CONSTANT * resolution / float(s) if resolution > float(s) else 0.0 for f, s in zip(blur_factor, spacing)]


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
    torch.Tensor, (B, 1, D, H, W): ``image`` itself, each sample blurred, resampled to the drawn
    resolution, made noisy (clipped at 0) and resampled back; where the resolution is kept, not
    blurred, and the round trip goes through a grid ``native_noise_grid`` times finer (none at 1).
    """
    shape = tuple(image.shape[2:])
    for b in range(len(image)):
        volume = image[b : b + 1]
        resolution = float(params.resolution[b])
        if not bool(params.preserve[b]):
            volume = gaussian_blur(volume, blur_sigmas(resolution, params.blur_factor[b], spacings[b]))
            grid = tuple(max(2, round(n * float(s) / resolution)) for n, s in zip(shape, spacings[b]))
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
    """Voxel size (true mm) that each drawn acquisition gives an input of ``spacing`` mm, and whether it blurs.

    Parameters
    ----------
    params : ResolutionDraw
    spacing : float
        Input voxel size (mm).
    scale : float
        True millimetres per millimetre of the draws: 1 for fss; ``REFERENCE_MM`` models the
        reference, whose millimetres and "kept" grid are that much finer than it believes.

    Returns
    -------
    size : torch.Tensor, (B,) float64
        The drawn resolution, or the kept grid's voxel size (``spacing * scale``) where the resolution is kept.
    blurred : torch.Tensor, (B,) bool
        The acquisition is coarser than the input (only then is the image blurred).
    """
    size = torch.where(params.preserve, spacing * scale, params.resolution * scale)
    return size, ~params.preserve & (params.resolution * scale > spacing)
