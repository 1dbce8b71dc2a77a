"""Contrast stage: a random Gaussian intensity distribution for every seed label (a lookup table, no loop over labels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fss.synth.config import ContrastConfig
from fss.synth.draws import StageDraw, bernoulli, seeds_from, uniform

N_SEED_VALUES = 64
"""Seed values 0..63 index the lookup tables (seeds use ``10 * M + j`` <= 43)."""


@dataclass(frozen=True, eq=False)
class ContrastDraw(StageDraw):
    """``means`` and ``stds`` (B, 64): the Gaussian of each seed value (0-300 scale); ``noise_seed`` (B,)
    for the per-voxel draws."""

    means: torch.Tensor
    stds: torch.Tensor
    noise_seed: torch.Tensor


def draw_contrast(config: ContrastConfig, batch_size: int, generator: torch.Generator) -> ContrastDraw | None:
    """Draw per-sample intensity tables, or None when the stage is off.

    The background mean (seed value 0) is 0 with probability ``background_zero_probability``.
    """
    if not config.enabled:
        return None
    shape = (batch_size, N_SEED_VALUES)
    means = uniform(generator, shape, config.mean_min, config.mean_max)
    stds = uniform(generator, shape, config.std_min, config.std_max)
    zero_background = bernoulli(generator, (batch_size,), config.background_zero_probability)
    means[:, 0] = torch.where(zero_background, 0.0, means[:, 0])
    return ContrastDraw(means, stds, seeds_from(generator, batch_size))


def apply_contrast(seed_map: torch.Tensor, params: ContrastDraw, relabel: torch.Tensor | None = None) -> torch.Tensor:
    """Draw each voxel from its seed label's Gaussian, clipped at 0.

    Parameters
    ----------
    seed_map : torch.Tensor, (B, D, H, W), integer
        Seed values (0..63), or other values that ``relabel`` maps to seed values.
    params : ContrastDraw
    relabel : torch.Tensor, (B, V), optional
        The seed value of each of the V values that ``seed_map`` holds (e.g. packed voxel codes),
        so that a voxel's Gaussian is found with one lookup.

    Returns
    -------
    torch.Tensor, (B, 1, D, H, W) float32
    """
    device = seed_map.device
    batch = len(seed_map)
    means, stds = params.means.float(), params.stds.float()
    if relabel is not None:
        relabel = relabel.long()
        means, stds = means.gather(1, relabel), stds.gather(1, relabel)
    lookup = seed_map.long() + means.shape[1] * torch.arange(batch, device=device).view(batch, 1, 1, 1)
    image = means.to(device).flatten()[lookup]
    spread = stds.to(device).flatten()[lookup]
    for b, seed in enumerate(params.noise_seed.tolist()):
        noise = torch.randn(seed_map.shape[1:], generator=torch.Generator(device).manual_seed(seed), device=device)
        image[b].addcmul_(spread[b], noise)
    return image.clamp_(min=0)[:, None]
