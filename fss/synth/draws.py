"""Seeded random draws for parameters: always from an explicit CPU ``torch.Generator``, never global state."""

from __future__ import annotations

import numpy as np
import torch

Seed = int | torch.Generator


def as_generator(seed: Seed) -> torch.Generator:
    """A CPU generator: ``seed`` itself if it is one, else a new one seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on all ``keys`` (e.g. base seed, worker, step); distinct keys give unrelated seeds."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """float64 values uniform in [low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def normal(generator: torch.Generator, shape: tuple[int, ...], std: float) -> torch.Tensor:
    """float64 values from N(0, std^2)."""
    return std * torch.randn(shape, generator=generator, dtype=torch.float64)


def bernoulli(generator: torch.Generator, shape: tuple[int, ...], probability: float) -> torch.Tensor:
    """bool values, True with ``probability``."""
    return torch.rand(shape, generator=generator, dtype=torch.float64) < probability


def integers(generator: torch.Generator, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
    """int64 values uniform in [low, high] (both included)."""
    return torch.randint(low, high + 1, shape, generator=generator)


def seeds_from(generator: torch.Generator, count: int) -> torch.Tensor:
    """(count,) int64 seeds for the per-voxel noise that is drawn later on the compute device."""
    return torch.randint(0, 2**62, (count,), generator=generator)
