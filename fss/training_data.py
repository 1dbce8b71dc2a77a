"""What a training run learns from: CRL atlas volumes on the working grid, and the endless stream of batches drawn from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from tqdm.auto import tqdm

from fss import datasets
from fss.infer import working_box
from fss.io import WorkingGrid, load_nifti, normalize_intensities
from fss.seeds import Seeds, load_seeds, make_seeds
from fss.synth import Generator, SynthSubject
from fss.synth.augment import Augmenter
from fss.synth.dataset import SyntheticBatches
from fss.synth.draws import derive_seed
from fss.training_config import TrainConfig


@dataclass
class Volume:
    """A CRL atlas volume on the training grid: normalised image, FeTA labels, optional seeds."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    spacing: float
    seeds: Seeds | None = None


def prepare_crl(
    ages: tuple[int, ...],
    spacing: float,
    with_seeds: bool,
    seeds_dir: str | None = None,
    seed: int = 0,
    progress: bool = False,
    box_multiple: int | None = None,
) -> list[Volume]:
    """CRL atlas volumes resampled to ``spacing`` mm (image linear, labels and seeds nearest).

    Seeds are read from ``seeds_dir`` (subjects ``sub-crlGA<age>``, as notebook 01 writes them)
    when given, else fitted on the resampled image (K = 1..4), a few seconds per volume on a
    CPU; ``progress`` shows a bar over the volumes. With ``box_multiple`` (a network's multiple),
    each volume is cut to the box that :func:`fss.infer.segment` runs that network on
    (:func:`fss.infer.working_box`), as validation needs; such volumes have no seeds.
    """
    if box_multiple and with_seeds:
        raise ValueError("volumes cut to the box that segmenting sees are for validation: they take no seeds")
    volumes = []
    records = datasets.fetch_crl_atlas(ages=ages)
    for record in tqdm(records, desc="preparing CRL volumes", unit="volume", disable=not progress):
        image = load_nifti(record.image)
        grid = WorkingGrid.from_image(image, spacing)
        intensities = grid.to_working(np.asarray(image.dataobj, dtype=np.float32))
        labels = grid.to_working(np.asarray(record.feta_labels().dataobj), "nearest").numpy()
        seeds = None
        if with_seeds and seeds_dir:
            loaded = load_seeds(seeds_dir, f"crlGA{record.gestational_age}")
            layers = {k: {m: grid.to_working(layer, "nearest").numpy() for m, layer in by_meta.items()} for k, by_meta in loaded.layers.items()}
            seeds = Seeds(layers, grid.affine)
        elif with_seeds:
            seeds = make_seeds(nib.Nifti1Image(intensities.numpy(), grid.affine), nib.Nifti1Image(labels, grid.affine), max_subclasses=4, seed=seed)
        if box_multiple:
            box, normalized = working_box(grid, intensities, box_multiple, None)
            volumes.append(Volume(record.name, normalized.numpy(), grid.cut(labels, box).numpy(), box.affine, spacing, seeds))
        else:
            volumes.append(Volume(record.name, normalize_intensities(intensities).numpy(), labels, grid.affine, spacing, seeds))
    return volumes


def training_batches(
    config: TrainConfig, training: list[Volume], device: torch.device, rank: int, start: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (image, labels) batches for the configured mode, step by step from ``start``."""
    generator_config = config.generator_config()
    synthetic = real = None
    if config.mode in ("synthetic", "mixed"):
        subjects = [SynthSubject(v.name, v.seeds, v.labels) for v in training]
        synthetic = SyntheticBatches(Generator(subjects, generator_config, device), config.batch_size, config.seed, rank, start)
    if config.mode in ("real", "mixed"):
        real = Augmenter([v.image for v in training], [v.labels for v in training], [[v.spacing] * 3 for v in training], generator_config, device)
    step = start
    while True:
        use_synthetic = config.mode == "synthetic" or (
            config.mode == "mixed" and np.random.default_rng(derive_seed(config.seed, rank, step, 1)).random() < config.synthetic_probability
        )
        if use_synthetic:
            synthetic.step = step
            batch = next(synthetic)
        else:
            batch = real.sample(config.batch_size, derive_seed(config.seed, rank, step, 2))
        yield batch.image, batch.labels
        step += 1
