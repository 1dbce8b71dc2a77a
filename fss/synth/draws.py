"""Seeded random draws for parameters: always from an explicit CPU ``torch.Generator``, never global state.

Each stage returns its draws as a frozen dataclass derived from :class:`StageDraw`: CPU tensors with
a leading batch dimension B, one field per drawn quantity, and a JSON form per sample (:meth:`StageDraw.to_json`) that replays
the sample exactly.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch

Seed = int | torch.Generator


@dataclasses.dataclass(frozen=True, eq=False)
class StageDraw:
    """The parameters that one stage drew for a batch: tensors (B, ...) on the CPU; None for a part not drawn."""

    def to_json(self, b: int) -> dict:
        """Sample ``b`` as a JSON-ready dictionary (floats kept exactly); parts that were not drawn are left out."""
        return {name: value[b].tolist() for name, value in self._parts().items()}

    def select(self, index: slice) -> Self:
        """The draws of the samples in ``index``."""
        return dataclasses.replace(self, **{name: value[index] for name, value in self._parts().items()})

    @classmethod
    def from_json(cls, items: Sequence[dict]) -> Self:
        """Batched draws from per-sample dictionaries (inverse of :meth:`to_json`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items[0]) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown parameters {unknown}; expected some of {sorted(names)}")
        return cls(**{name: torch.from_numpy(np.asarray([item[name] for item in items])) for name in items[0]})  # float64, int64 or bool, as written

    def _parts(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


SEED_LIMIT = 2**64
"""Integer seeds run from 0 to ``SEED_LIMIT - 1``, as :class:`torch.Generator` and :class:`numpy.random.SeedSequence` take them."""


def as_generator(seed: Seed) -> torch.Generator:
    """A CPU generator: ``seed`` itself if it is one, else a new one seeded with it.

    Raises
    ------
    ValueError
        Naming the argument ``seed``, for anything but a generator or a whole number from 0 to ``SEED_LIMIT - 1``.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed: expected a whole number from 0 to 2**64 - 1 or a CPU torch.Generator, got {seed!r}")
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
