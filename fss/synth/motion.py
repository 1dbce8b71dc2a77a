"""Motion stage: what super-resolution leaves behind after fetal motion.

A fetal scan is a set of thick-slice stacks acquired in two interleaved passes (odd slices,
then even ones) while the fetus moves; super-resolution registers the slices and reconstructs
a volume, and what it does not correct remains: neighbouring slabs are slightly shifted and
turned against each other, and the two passes differ a little in intensity. This stage imposes
exactly that on a volume: the volume is cut into slabs of thickness ``slab_mm`` along its last
(inferior-superior) axis; every slab is moved rigidly within its plane (a shift and a rotation
about the slice axis: the motion of its pass plus its own jitter of half that size) and scaled
by its pass's gain, ``1 + gain`` or ``1 - gain``. Content within a slice is moved, not blurred.

The reference method has no such stage. fetalsyngen simulates the stacks and runs a
reconstruction; this stage keeps only the residual misregistration and intensity steps, at a
cost that training on a CPU can afford. It is used by the ``fetal`` preset of the generator and
by the ``motion`` stress (:mod:`fss.stress`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import MotionConfig
from fss.synth.draws import StageDraw, bernoulli, seeds_from, uniform

SAMPLED_VOXELS_PER_CHUNK = 2**20
"""Voxels moved at once by :func:`slab_motion` (whole slices; at least one): bounds its temporaries to about 50 MB."""


@dataclass(frozen=True, eq=False)
class MotionDraw(StageDraw):
    """``apply`` (B,) bool; ``slab_mm`` (B,) slab thickness in mm; ``shift_mm`` (B,) standard deviation of the
    in-plane shift of a pass, mm; ``angle_deg`` (B,) that of its rotation, degrees; ``gain`` (B,) intensity
    step between the passes; ``seed`` (B,) for the motion of every slab."""

    apply: torch.Tensor
    slab_mm: torch.Tensor
    shift_mm: torch.Tensor
    angle_deg: torch.Tensor
    gain: torch.Tensor
    seed: torch.Tensor


def draw_motion(config: MotionConfig, batch_size: int, generator: torch.Generator) -> MotionDraw | None:
    """Draw the residual motion of each sample, or None when the stage is off."""
    if not config.enabled:
        return None
    b = batch_size
    return MotionDraw(
        apply=bernoulli(generator, (b,), config.probability),
        slab_mm=uniform(generator, (b,), config.slab_mm_min, config.slab_mm_max),
        shift_mm=uniform(generator, (b,), 0.0, config.shift_mm_max),
        angle_deg=uniform(generator, (b,), 0.0, config.angle_deg_max),
        gain=uniform(generator, (b,), 0.0, config.gain_max),
        seed=seeds_from(generator, b),
    )


def slab_motion(
    volume: torch.Tensor,
    spacing: Sequence[float],
    slab_mm: float,
    shift_mm: float,
    angle_deg: float,
    gain: float,
    seed: int,
) -> torch.Tensor:
    """Residual slab-wise motion of one volume.

    Parameters
    ----------
    volume : torch.Tensor, (1, C, X, Y, Z)
        Intensities; Z is the slice axis.
    spacing : (3,) floats
        Voxel size in mm.
    slab_mm : float
        Thickness of the acquired slices (mm); slab ``s`` holds the voxels whose centre lies in
        ``[s * slab_mm, (s + 1) * slab_mm)`` along Z; slabs of even ``s`` form the first pass.
    shift_mm, angle_deg : float
        Standard deviations of a pass's in-plane shift (per axis, mm) and rotation about Z
        (degrees); each slab adds a jitter of half these.
    gain : float
        The first pass is scaled by ``1 + gain``, the second by ``1 - gain`` (signs swapped at random).
    seed : int
        Draws the motion of the passes and slabs (CPU generator).

    Returns
    -------
    torch.Tensor, (1, C, X, Y, Z), on the device of ``volume``; 0 where a slab moves in from
    outside the field of view.
    """
    _, channels, nx, ny, nz = volume.shape
    slab = torch.div((torch.arange(nz, dtype=torch.float64) + 0.5) * float(spacing[2]), slab_mm, rounding_mode="floor").long()
    n_slabs = int(slab[-1]) + 1
    generator = torch.Generator().manual_seed(int(seed))
    passes = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    jitter = torch.randn(n_slabs, 3, generator=generator, dtype=torch.float64) / 2
    sign = 1.0 if bool(torch.rand(1, generator=generator) < 0.5) else -1.0
    motion = (passes[slab % 2] + jitter[slab]) * torch.tensor([shift_mm, shift_mm, math.radians(angle_deg)], dtype=torch.float64)
    scale = 1 + sign * gain * torch.where(slab % 2 == 0, 1.0, -1.0).to(torch.float64)

    # in-plane positions (mm, about the centre of the plane) read by every slice: R(angle) p - shift
    centre = torch.tensor([(nx - 1) / 2, (ny - 1) / 2], dtype=torch.float64)
    step = torch.tensor([float(spacing[0]), float(spacing[1])], dtype=torch.float64)
    ix, iy = torch.meshgrid(torch.arange(nx, dtype=torch.float64), torch.arange(ny, dtype=torch.float64), indexing="ij")
    px, py = (ix - centre[0]) * step[0], (iy - centre[1]) * step[1]  # (X, Y) mm
    cos, sin = torch.cos(motion[:, 2]).view(-1, 1, 1), torch.sin(motion[:, 2]).view(-1, 1, 1)
    scale = scale.to(volume.dtype).to(volume.device).view(-1, 1, 1, 1)
    out = torch.empty_like(volume)
    # each slice is moved on its own, so a few at a time: the coordinates (float64) stay small
    per_chunk = max(1, SAMPLED_VOXELS_PER_CHUNK // (nx * ny))
    for start in range(0, nz, per_chunk):
        z = slice(start, start + per_chunk)
        qx = cos[z] * px - sin[z] * py - motion[z, 0].view(-1, 1, 1)  # (slices, X, Y) mm
        qy = sin[z] * px + cos[z] * py - motion[z, 1].view(-1, 1, 1)
        # grid_sample's normalised coordinates (align_corners=True); its last dimension is (along Y, along X)
        grid = torch.stack([qy / step[1] / max(centre[1], 0.5), qx / step[0] / max(centre[0], 0.5)], dim=-1)
        slices = volume[0, ..., z].permute(3, 0, 1, 2)  # (slices, C, X, Y)
        moved = F.grid_sample(slices, grid.to(volume.dtype).to(volume.device), mode="bilinear", padding_mode="zeros", align_corners=True)
        out[0, ..., z] = (moved * scale[z]).permute(1, 2, 3, 0)
    return out


def apply_motion(image: torch.Tensor, params: MotionDraw, spacings: torch.Tensor) -> torch.Tensor:
    """The motion ``params`` describe on a batch (B, C, X, Y, Z); ``spacings`` (B, 3) mm."""
    out = []
    for b in range(image.shape[0]):
        volume = image[b : b + 1]
        if bool(params.apply[b]):
            volume = slab_motion(
                volume,
                spacings[b].tolist(),
                float(params.slab_mm[b]),
                float(params.shift_mm[b]),
                float(params.angle_deg[b]),
                float(params.gain[b]),
                int(params.seed[b]),
            )
        out.append(volume)
    return torch.cat(out)
