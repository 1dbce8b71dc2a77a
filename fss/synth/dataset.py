"""Feeding training: a ``torch.utils.data`` stream for loader workers, and batches drawn on the GPU.

Every sample's seed is derived from (base seed, worker or rank, step), so workers and
ranks never repeat each other, and a run can be re-made or resumed from its step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from fss.synth.draws import derive_seed
from fss.synth.generator import Generator, Sample


class SyntheticStream(IterableDataset):
    """Endless single samples for a ``DataLoader`` (CPU generators, any number of workers).

    Worker w draws its n-th sample from ``derive_seed(seed, w, n)``.

    Yields
    ------
    (image, labels) : ``(1, D, H, W)`` float32 and ``(D, H, W)`` int64
    """

    def __init__(self, generator: Generator, seed: int = 0):
        self.generator = generator
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        step = 0
        while True:
            sample = self.generator.sample(1, derive_seed(self.seed, worker, step))
            yield sample.image[0], sample.labels[0]
            step += 1


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
