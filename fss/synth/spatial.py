"""Spatial stage: affine and nonlinear deformation of seeds and labels through one sampling grid, and flips.

Every output voxel gets one position in the input volume (input voxel indices):

    x = offset + A (p + u(p) - c_out) + c_out + shift

with p the output voxel, c_out the output centre, ``offset`` the integer offset that
centres the output window in the input, A the affine (rotation, shear, scaling, in
mm so that anisotropic voxels are handled) and u a smooth random displacement.
Labels and seeds are read at the rounded positions (nearest neighbour) and the image
at the same positions (linearly, or nearest with ``image_interpolation="nearest"``),
so they are always deformed identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fss.synth.config import SpatialConfig
from fss.synth.draws import StageDraw, seeds_from, uniform

INTEGRATION_DOWNSAMPLING = 4
"""The velocity field is integrated on a grid this many times coarser than the output, then upsampled:
the field is smooth (drawn on a grid of a few voxels), so nothing is lost and integration costs 1/64."""


@dataclass(frozen=True, eq=False)
class SpatialDraw(StageDraw):
    """``rotation`` (B, 3) degrees, ``shear`` (B, 3), ``scaling`` (B, 3), ``shift`` (B, 3) in [-1, 1] (fraction
    of the room the input leaves around the output window, plus ``shift_beyond``), and for the nonlinear part (None without it)
    ``nonlin_scale`` (B,), ``nonlin_std`` (B,) output voxels, ``nonlin_seed`` (B,)."""

    rotation: torch.Tensor
    shear: torch.Tensor
    scaling: torch.Tensor
    shift: torch.Tensor
    nonlin_scale: torch.Tensor | None = None
    nonlin_std: torch.Tensor | None = None
    nonlin_seed: torch.Tensor | None = None


def draw_spatial(config: SpatialConfig, batch_size: int, generator: torch.Generator) -> SpatialDraw | None:
    """Draw the spatial parameters of ``batch_size`` samples, or None when the stage is off."""
    if not config.enabled:
        return None
    b = batch_size
    affine = dict(
        rotation=uniform(generator, (b, 3), -config.max_rotation, config.max_rotation),
        shear=uniform(generator, (b, 3), -config.max_shear, config.max_shear),
        scaling=uniform(generator, (b, 3), 1 - config.max_scaling, 1 + config.max_scaling),
        shift=uniform(generator, (b, 3), -1, 1) if config.random_shift else torch.zeros(b, 3, dtype=torch.float64),
    )
    if not config.nonlinear:
        return SpatialDraw(**affine)
    scale = uniform(generator, (b,), config.nonlin_scale_min, config.nonlin_scale_max)
    std = uniform(generator, (b,), 0, config.nonlin_std_max)
    return SpatialDraw(**affine, nonlin_scale=scale, nonlin_std=std, nonlin_seed=seeds_from(generator, b))


def affine_matrices(rotation: torch.Tensor, shear: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) matrices ``R @ Sh @ S`` from rotations (degrees, about axes 0, 1, 2), shears and scalings."""
    angles = torch.deg2rad(rotation.double())
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def rotation_about(axis: int) -> torch.Tensor:
        c, s = cos[:, axis], sin[:, axis]
        i, j = [a for a in range(3) if a != axis]
        matrix = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], dim=1).reshape(-1, 3, 3).clone()
        matrix[:, i, i], matrix[:, i, j], matrix[:, j, i], matrix[:, j, j] = c, -s, s, c
        return matrix

    shearing = torch.eye(3, dtype=torch.float64).repeat(len(rotation), 1, 1)
    shearing[:, 0, 1], shearing[:, 0, 2], shearing[:, 1, 2] = shear[:, 0].double(), shear[:, 1].double(), shear[:, 2].double()
    return rotation_about(2) @ rotation_about(1) @ rotation_about(0) @ shearing @ torch.diag_embed(scaling.double())


def integration_shape(output_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Grid on which displacement fields are built and integrated (at least 2 nodes per axis)."""
    return tuple(max(2, math.ceil(n / INTEGRATION_DOWNSAMPLING)) for n in output_shape)


def velocity_fields(params: SpatialDraw, output_shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Smooth random fields, (B, 3, *integration_shape), in output voxels.

    Each sample's field is drawn on a coarse grid of ``nonlin_scale * output size`` nodes
    (at least 2) with standard deviation ``nonlin_std``, and upsampled trilinearly.
    """
    fields = []
    grid = integration_shape(output_shape)
    for scale, std, seed in zip(params.nonlin_scale.tolist(), params.nonlin_std.tolist(), params.nonlin_seed.tolist()):
        coarse_shape = [max(2, math.ceil(scale * n)) for n in output_shape]
        coarse = torch.randn((1, 3, *coarse_shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32) * std
        fields.append(F.interpolate(coarse.to(device), size=grid, mode="trilinear", align_corners=True))
    return torch.cat(fields)


def identity_grid(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """(1, *shape, 3) normalised ``grid_sample`` coordinates of the nodes themselves (x, y, z = last, middle, first axis)."""
    axes = [torch.linspace(-1, 1, n, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)[None]


def integrate_velocity(velocity: torch.Tensor, output_shape: tuple[int, int, int], steps: int) -> torch.Tensor:
    """Displacement of the flow of a stationary velocity field, by scaling and squaring.

    Parameters
    ----------
    velocity : torch.Tensor, shape (B, 3, *G)
        Velocity in output voxels per unit time, on a grid G spanning the output.
    output_shape : (3,) ints
        Output size, which sets the voxel units.
    steps : int
        Squarings; the field is first divided by ``2 ** steps``.

    Returns
    -------
    torch.Tensor, shape (B, 3, *G)
        Displacement in output voxels; the map ``p -> p + u(p)`` is invertible.
    """
    to_normalized = torch.tensor([2 / (n - 1) for n in output_shape], device=velocity.device).view(1, 3, 1, 1, 1)
    displacement = velocity * to_normalized / 2**steps
    identity = identity_grid(tuple(velocity.shape[2:]), velocity.device)
    for _ in range(steps):
        where = identity + displacement.permute(0, 2, 3, 4, 1).flip(-1)
        displacement = displacement + F.grid_sample(displacement, where, mode="bilinear", padding_mode="border", align_corners=True)
    return displacement / to_normalized


def sampling_positions(
    params: SpatialDraw | None,
    config: SpatialConfig,
    output_shape: tuple[int, int, int],
    input_shapes: torch.Tensor,
    spacings: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Where each output voxel reads the input: (B, 3, *output_shape) float32 input voxel indices.

    Parameters
    ----------
    params : SpatialDraw or None
        None means no deformation (a centred crop or pad).
    config : SpatialConfig
        For the integration settings and ``shift_beyond``.
    output_shape : (3,) ints
    input_shapes : torch.Tensor, (B, 3)
        Shape of each sample's input volume.
    spacings : torch.Tensor, (B, 3)
        Voxel size (mm) of each sample's input; the output has the same voxel size.
    device : torch.device
    """
    batch = len(input_shapes)
    grid = integration_shape(output_shape)
    out = torch.tensor(output_shape, dtype=torch.float64)
    centre_out = (out - 1) / 2
    offset = torch.div(input_shapes.double() - out, 2, rounding_mode="floor")
    axes = [torch.linspace(0, n - 1, g, device=device) for n, g in zip(output_shape, grid)]
    nodes = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]  # (1, 3, *G), output voxels
    if params is None:
        matrix = torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)
        shift = torch.zeros(batch, 3, dtype=torch.float64)
        displaced = nodes.expand(batch, -1, -1, -1, -1)
    else:
        mm = torch.diag_embed(spacings.double())
        matrix = torch.linalg.inv(mm) @ affine_matrices(params.rotation, params.shear, params.scaling) @ mm
        shift = params.shift.double() * ((input_shapes.double() - out).clamp(min=0) / 2 + config.shift_beyond * out)
        displaced = nodes
        if params.nonlin_seed is not None:
            velocity = velocity_fields(params, output_shape, device)
            if config.integrate_deformation_fields and config.n_steps_svf_integration > 0:
                velocity = integrate_velocity(velocity, output_shape, config.n_steps_svf_integration)
            displaced = nodes + velocity
    translation = (offset + centre_out + shift - (matrix @ centre_out[:, None])[..., 0]).float().to(device)
    positions = torch.einsum("bij,bj...->bi...", matrix.float().to(device), displaced.expand(batch, -1, -1, -1, -1))
    positions = positions + translation.view(batch, 3, 1, 1, 1)
    return F.interpolate(positions, size=tuple(output_shape), mode="trilinear", align_corners=True)


def _normalized_grid(positions: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``grid_sample`` coordinates (1, *S, 3) of ``positions`` (1, 3, *S) in a volume of ``shape`` voxels.

    One matrix product scales each axis to [-1, 1] and orders them x, y, z (last, middle, first
    axis), writing the channels-last grid directly.
    """
    scale = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
    for axis in range(3):
        scale[axis, 2 - axis] = 2 / (shape[axis] - 1)
    offset = torch.full((1, 3), -1.0, dtype=positions.dtype, device=positions.device)
    grid = torch.addmm(offset, positions.reshape(3, -1).T, scale)
    return grid.view(1, *positions.shape[2:], 3)


def read_at(volume: torch.Tensor, positions: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``volume`` (1, C, *V) read at one sample's ``positions`` (1, 3, *S), input voxel indices: (1, C, *S); 0 outside.

    ``grid_sample`` with ``align_corners=True``. On the CPU its 3-D kernel runs one thread per
    batch item, so the positions are cut into as many slabs as there are threads and read as a
    batch (each output voxel is computed alike, so the result does not depend on the cut).
    """
    grid = _normalized_grid(positions, tuple(volume.shape[2:]))
    depth = grid.shape[1]
    slabs = torch.get_num_threads() if volume.device.type == "cpu" else 1
    while depth % slabs:
        slabs -= 1
    channels = volume.shape[1]
    out = F.grid_sample(
        volume.expand(slabs, -1, -1, -1, -1),
        grid.reshape(slabs, depth // slabs, *grid.shape[2:]),
        mode=mode,
        padding_mode="zeros",
        align_corners=True,
    )
    return out.transpose(0, 1).reshape(1, channels, *positions.shape[2:])


def flip(volume: torch.Tensor, flips: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the samples of ``volume`` (batch first) marked in ``flips`` (B,) along ``dim``."""
    flips = flips.to(volume.device)
    if not bool(flips.any()):
        return volume
    if bool(flips.all()):
        return volume.flip(dim)
    return torch.where(flips.view(-1, *[1] * (volume.ndim - 1)), volume.flip(dim), volume)
