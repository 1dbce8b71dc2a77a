"""The generator's stages in one registry: what each draws, how it draws, how it is applied, and in which orders.

A stage is named by its field of :class:`fss.synth.config.GeneratorConfig` (its options, declared beside
them) and by its key in a sample's parameters. Adding one takes its configuration class, that field and
an entry here; :data:`STAGES`, the replay of a sample's JSON, the drawing and :func:`finish` follow from the
registry.

Two orders, kept apart on purpose:

- the order of :data:`STAGE_REGISTRY` is the order in which stages are applied (:data:`STAGES`);
- :data:`DRAW_ORDER` is the order in which they draw from the sample's random generator. A new stage
  draws last, so that adding it leaves every other stage's draws, and every sample made before it, as
  they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fss.synth.bias import BiasDraw, apply_bias, draw_bias
from fss.synth.config import FlipConfig
from fss.synth.contrast import ContrastDraw, draw_contrast
from fss.synth.draws import StageDraw, bernoulli
from fss.synth.gamma import GammaDraw, apply_gamma, draw_gamma
from fss.synth.mask import MaskDraw, brain_masks, draw_mask
from fss.synth.motion import MotionDraw, apply_motion, draw_motion
from fss.synth.resolution import ResolutionDraw, apply_resolution, draw_resolution
from fss.synth.spatial import SpatialDraw, draw_spatial, flip

Apply = Callable[[torch.Tensor, torch.Tensor, object, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(image (B, 1, D, H, W), labels (B, D, H, W), draws, spacings (B, 3) mm) -> (image, labels)``."""


@dataclass(frozen=True)
class Stage:
    """One stage of the generator.

    Attributes
    ----------
    name : str
        Its field of :class:`~fss.synth.config.GeneratorConfig` and its key in a sample's parameters.
    title : str
        What it does, in a few words, for figures.
    draws : type of StageDraw or None
        What its draws are, to replay them from a record; None: one tensor (B,).
    draw : callable
        ``(its configuration, batch size, torch.Generator) -> draws``, or None when the stage is off.
    apply : callable or None
        How :func:`finish` applies the draws (:data:`Apply`); None for the stages that make the image on the
        output grid (the deformation and the contrast), which :class:`~fss.synth.generator.Generator` applies
        itself.
    """

    name: str
    title: str
    draws: type[StageDraw] | None
    draw: Callable[[object, int, torch.Generator], object]
    apply: Apply | None = None


def _draw_flip(config: FlipConfig, batch_size: int, generator: torch.Generator) -> torch.Tensor | None:
    """(B,) bool: which samples are flipped left-right; None when the stage is off."""
    return bernoulli(generator, (batch_size,), config.probability) if config.enabled else None


def _apply_mask(image: torch.Tensor, labels: torch.Tensor, draws: MaskDraw, spacings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = brain_masks(labels, draws, spacings)
    return image * keep, labels * keep[:, 0]


STAGE_REGISTRY: tuple[Stage, ...] = (
    Stage("spatial", "spatial deformation", SpatialDraw, draw_spatial),
    Stage("contrast", "contrast: a Gaussian per seed label", ContrastDraw, draw_contrast),
    Stage("gamma", "gamma", GammaDraw, draw_gamma, lambda image, labels, draws, spacings: (apply_gamma(image, draws), labels)),
    Stage("bias", "bias field", BiasDraw, draw_bias, lambda image, labels, draws, spacings: (apply_bias(image, draws), labels)),
    Stage(
        "motion", "residual motion", MotionDraw, draw_motion, lambda image, labels, draws, spacings: (apply_motion(image, draws, spacings), labels)
    ),
    Stage(
        "resolution",
        "resolution and noise",
        ResolutionDraw,
        draw_resolution,
        lambda image, labels, draws, spacings: (apply_resolution(image, draws, spacings), labels),
    ),
    Stage("mask", "brain mask", MaskDraw, draw_mask, _apply_mask),
    Stage("flip", "left-right flip", None, _draw_flip, lambda image, labels, draws, spacings: (flip(image, draws, 2), flip(labels, draws, 1))),
)
"""Every stage after the choice of subject and subclasses, in the order they are applied."""

STAGES = tuple(stage.name for stage in STAGE_REGISTRY)
"""The stages' names in the order they are applied (``subject`` and ``subclasses`` choose their input)."""

DRAW_ORDER = ("spatial", "contrast", "gamma", "bias", "resolution", "flip", "motion", "mask")
"""The order in which the stages draw: motion and the mask came last, so that turning them on left the others' draws."""

STAGE_DRAWS: dict[str, type[StageDraw]] = {stage.name: stage.draws for stage in STAGE_REGISTRY if stage.draws is not None}
"""The draws of each stage that has more than one parameter; ``subject``, ``subclasses`` and ``flip`` are tensors."""

_BY_NAME = {stage.name: stage for stage in STAGE_REGISTRY}

ACQUISITION_STAGES = tuple(name for name in DRAW_ORDER if _BY_NAME[name].apply is not None)
"""The stages :func:`finish` applies, in :data:`DRAW_ORDER`: what real-image augmentation draws too (:mod:`fss.synth.augment`)."""


def draw_stages(config, names: tuple[str, ...], batch_size: int, generator: torch.Generator) -> dict:
    """The draws of the stages ``names`` (a part of :data:`DRAW_ORDER`, in that order) from ``config``, a
    :class:`~fss.synth.config.GeneratorConfig`: ``{name: draws or None}``."""
    return {name: _BY_NAME[name].draw(getattr(config, name), batch_size, generator) for name in names}


def finish(image: torch.Tensor, labels: torch.Tensor, params: dict, spacings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every stage that the registry applies to an image (gamma, bias, motion, resolution and noise, the brain mask, the
    flip), then normalisation by the maximum to [0, 1].

    Parameters
    ----------
    image : torch.Tensor, (B, 1, D, H, W)
        Intensities on the 0-300 scale.
    labels : torch.Tensor, (B, D, H, W)
        FeTA labels of the same voxels.
    params : dict
        Each stage's draws (None or missing: the stage is skipped).
    spacings : torch.Tensor, (B, 3)
        Voxel size (mm).

    Returns
    -------
    image : torch.Tensor, (B, 1, D, H, W) in [0, 1]
    labels : torch.Tensor, (B, D, H, W): 0 where the mask removed the image, flipped with it.
    """
    for stage in STAGE_REGISTRY:
        if stage.apply is not None and params.get(stage.name) is not None:
            image, labels = stage.apply(image, labels, params[stage.name], spacings)
    image = image / image.amax(dim=(1, 2, 3, 4), keepdim=True).clamp(min=torch.finfo(image.dtype).tiny)
    return image, labels
