"""Standard augmentation of real image / label pairs, built from the generator's own stages.

The baseline that domain randomisation is measured against: the same spatial transform
(image linear, labels nearest), then gamma, bias field, blur with noise, normalisation and
flip, drawn and applied exactly as for synthetic images, but on the real intensities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fss.device import resolve_device
from fss.synth.config import GeneratorConfig
from fss.synth.draws import Seed, as_generator, integers
from fss.synth.gamma import SCALE
from fss.synth.generator import Sample
from fss.synth.spatial import read_at, sampling_positions
from fss.synth.stages import ACQUISITION_STAGES, draw_stages, finish


class Augmenter:
    """Augmented batches of real volumes.

    Parameters
    ----------
    images : sequence of arrays, each (X, Y, Z)
        Intensities normalised to [0, 1] (:func:`fss.io.normalize_intensities`).
    labels : sequence of arrays, each (X, Y, Z)
        FeTA label maps on the same grids.
    spacings : sequence of (3,) voxel sizes in mm
    config : GeneratorConfig
        Its spatial, gamma, bias, motion, resolution, mask and flip stages and output size are used.
    device : str or torch.device
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        spacings: Sequence[Sequence[float]],
        config: GeneratorConfig,
        device: str | torch.device = "auto",
    ):
        if not len(images) == len(labels) == len(spacings) > 0:
            raise ValueError("give one label map and one spacing for every image, and at least one image")
        self.config = config
        self.device = resolve_device(device)
        self.volumes = [
            torch.stack([torch.as_tensor(i, dtype=torch.float32), torch.as_tensor(label, dtype=torch.float32)])[None].to(self.device)
            for i, label in zip(images, labels)
        ]
        shapes = {tuple(v.shape[2:]) for v in self.volumes}
        if config.output_shape is None and len(shapes) > 1:
            raise ValueError(f"images have different shapes {sorted(shapes)}: set output_shape in the configuration")
        self.output_shape = tuple(config.output_shape or next(iter(shapes)))
        self._shapes = torch.tensor([v.shape[2:] for v in self.volumes], dtype=torch.int64)
        self._spacings = torch.tensor(np.array(spacings, dtype=float), dtype=torch.float64)

    def draw(self, batch_size: int = 1, seed: Seed = 0) -> dict:
        """Parameters of ``batch_size`` augmented samples (CPU tensors)."""
        generator = as_generator(seed)
        return {
            "subject": integers(generator, (batch_size,), 0, len(self.volumes) - 1),
            **draw_stages(self.config, ("spatial", *ACQUISITION_STAGES), batch_size, generator),
        }

    def apply(self, params: dict) -> Sample:
        """The augmented batch that ``params`` describe (``seed_map`` is None)."""
        subject = params["subject"]
        spacings = self._spacings[subject]
        positions = sampling_positions(params["spatial"], self.config.spatial, self.output_shape, self._shapes[subject], spacings, self.device)
        images, labels = [], []
        for b, s in enumerate(subject.tolist()):
            images.append(read_at(self.volumes[s][:, :1], positions[b : b + 1]))
            labels.append(read_at(self.volumes[s][:, 1:], positions[b : b + 1], mode="nearest"))
        image, labels = finish(torch.cat(images) * SCALE, torch.cat(labels)[:, 0].round().long(), params, spacings)
        return Sample(image, labels, None, params)

    def sample(self, batch_size: int = 1, seed: Seed = 0) -> Sample:
        """Draw and apply."""
        return self.apply(self.draw(batch_size, seed))
