"""Mask stage: the image and labels set to 0 beyond the brain grown (or shrunk) by a random margin, as in brain-masked scans."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import MaskConfig
from fss.synth.draws import StageDraw, bernoulli, uniform


@dataclass(frozen=True, eq=False)
class MaskDraw(StageDraw):
    """``apply`` (B,) bool: the sample is masked; ``margin_mm`` (B,): how far the mask reaches beyond the brain (negative:
    inside it)."""

    apply: torch.Tensor
    margin_mm: torch.Tensor


def draw_mask(config: MaskConfig, batch_size: int, generator: torch.Generator) -> MaskDraw | None:
    """Draw each sample's mask, or None when the stage is off."""
    if not config.enabled:
        return None
    return MaskDraw(
        bernoulli(generator, (batch_size,), config.probability), uniform(generator, (batch_size,), config.margin_mm_min, config.margin_mm_max)
    )


def grow(mask: torch.Tensor, voxels: list[int]) -> torch.Tensor:
    """``mask`` (1, 1, D, H, W) bool grown by ``voxels`` per axis (a box of that half-width; negative shrinks it)."""
    if all(v >= 0 for v in voxels):
        return F.max_pool3d(mask.float(), [2 * v + 1 for v in voxels], stride=1, padding=voxels) > 0
    if all(v <= 0 for v in voxels):
        return ~grow(~mask, [-v for v in voxels])
    raise ValueError(f"grow by voxels of one sign on every axis, got {voxels}")


def brain_masks(labels: torch.Tensor, params: MaskDraw, spacings: torch.Tensor) -> torch.Tensor:
    """Where each sample keeps its image and labels: (B, 1, D, H, W) bool.

    Parameters
    ----------
    labels : torch.Tensor, (B, D, H, W)
        FeTA labels; the brain is every label above 0.
    params : MaskDraw
    spacings : torch.Tensor, (B, 3)
        Voxel size (mm).

    Returns
    -------
    torch.Tensor: the brain grown by each sample's margin (rounded to whole voxels per axis) where it is masked, everywhere
    else.
    """
    keep = torch.ones((len(labels), 1, *labels.shape[1:]), dtype=torch.bool, device=labels.device)
    for b in range(len(labels)):
        if bool(params.apply[b]):
            voxels = [round(float(params.margin_mm[b]) / float(s)) for s in spacings[b]]
            keep[b : b + 1] = grow(labels[b : b + 1, None] > 0, voxels)
    return keep
