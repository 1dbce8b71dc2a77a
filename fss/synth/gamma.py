"""Gamma stage: intensity -> 300 * (intensity / 300) ** exp(N(0, gamma_std))."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss.synth.config import GammaConfig
from fss.synth.draws import StageDraw, normal

SCALE = 300.0
"""Intensity scale of the contrast stage."""


@dataclass(frozen=True, eq=False)
class GammaDraw(StageDraw):
    """``log_gamma`` (B,): the logarithm of each sample's exponent."""

    log_gamma: torch.Tensor


def draw_gamma(config: GammaConfig, batch_size: int, generator: torch.Generator) -> GammaDraw | None:
    """``log_gamma`` from N(0, gamma_std), or None when the stage is off."""
    if not config.enabled:
        return None
    return GammaDraw(normal(generator, (batch_size,), config.gamma_std))


def apply_gamma(image: torch.Tensor, params: GammaDraw) -> torch.Tensor:
    """Gamma-transform ``image`` (B, 1, D, H, W), in place.

    Intensities are non-negative, but the linear read of the contrast leaves about -1e-6 where a voxel
    of 0 meets a background above 0 (rounding): such values count as 0, which a fractional power
    would make NaN, and the normalisation by the maximum then the whole sample.
    """
    exponent = torch.exp(params.log_gamma).float().to(image.device).view(-1, 1, 1, 1, 1)
    return image.div_(SCALE).clamp_(min=0).pow_(exponent).mul_(SCALE)
