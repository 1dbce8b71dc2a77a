"""Bias-field stage: a smooth multiplicative field, exp of a coarse Gaussian field upsampled to the output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import BiasConfig
from fss.synth.draws import StageDraw, seeds_from, uniform


@dataclass(frozen=True, eq=False)
class BiasDraw(StageDraw):
    """``scale`` (B,): size of the coarse grid as a fraction of the output size; ``std`` (B,): standard deviation
    of the field's logarithm; ``seed`` (B,): of the coarse field."""

    scale: torch.Tensor
    std: torch.Tensor
    seed: torch.Tensor


def draw_bias(config: BiasConfig, batch_size: int, generator: torch.Generator) -> BiasDraw | None:
    """Each sample's bias field, or None when the stage is off."""
    if not config.enabled:
        return None
    scale = uniform(generator, (batch_size,), config.bf_scale_min, config.bf_scale_max)
    std = uniform(generator, (batch_size,), config.bf_std_min, config.bf_std_max)
    return BiasDraw(scale, std, seeds_from(generator, batch_size))


def bias_field(scale: float, std: float, seed: int, output_shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """(1, *output_shape) positive field: exp of N(0, std) on ``scale * output size`` nodes (at least 2), upsampled."""
    coarse_shape = [max(2, math.ceil(scale * n)) for n in output_shape]
    coarse = torch.randn((1, 1, *coarse_shape), generator=torch.Generator().manual_seed(seed)) * std
    return F.interpolate(coarse.to(device), size=tuple(output_shape), mode="trilinear", align_corners=True)[0].exp_()


def apply_bias(image: torch.Tensor, params: BiasDraw) -> torch.Tensor:
    """Multiply each sample of ``image`` (B, 1, D, H, W) by its bias field, in place."""
    draws = zip(params.scale.tolist(), params.std.tolist(), params.seed.tolist())
    for b, (scale, std, seed) in enumerate(draws):
        image[b].mul_(bias_field(scale, std, seed, tuple(image.shape[2:]), image.device))
    return image
