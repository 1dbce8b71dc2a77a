"""Feeding training: batches drawn on the training device.

Every batch's seed is derived from (base seed, rank, step), so ranks never repeat each other,
and a run can be re-made or resumed from its step.
"""

from __future__ import annotations

from collections.abc import Iterator

from fss.synth.draws import derive_seed
from fss.synth.generator import Generator, Sample


class SyntheticBatches:
    """Endless batches made on the generator's own device (no loader, no host-to-device copies).

    Batch t of rank r comes from ``derive_seed(seed, r, t)``; ``start`` resumes at step t.
    """

    def __init__(self, generator: Generator, batch_size: int, seed: int = 0, rank: int = 0, start: int = 0):
        self.generator = generator
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.step = start

    def __iter__(self) -> Iterator[Sample]:
        return self

    def __next__(self) -> Sample:
        sample = self.generator.sample(self.batch_size, derive_seed(self.seed, self.rank, self.step))
        self.step += 1
        return sample
