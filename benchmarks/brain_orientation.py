"""What a brain turned within its scan's grid costs the models, and what the turn warning of segmentation sees.

A fetus lies at any angle in the scanner, and a scan's grid follows the scanner, not the brain:
the brain's axes may lie far from the grid's. Segmentation reorients a scan to its closest RAS
axes only, so a brain turned by more than the generator's rotations (up to 20 degrees about each
axis) reaches the network turned. This turns the brain-masked Wu 2021 atlas (another population;
it chose nothing in fss) within its own grid (:func:`fss.stress.turn_anatomy`) by each angle about
each axis, segments it with each model as ``fss segment`` does, and prints:

- the mean Dice over the tissues against the labels turned the same way (mean over ages);
- the share of segmentations that :func:`fss.infer.segment` warned of as turned;
- the brain's turn that :func:`fss.metrics.brain_turn_degrees` reads from the segmentation (what
  the warning is built on) and from the true labels.

Run: python benchmarks/brain_orientation.py [--ages 22 26 30 34] [--degrees 15 30 45 60 90] [--out outputs/brain_orientation.tsv]
     (about 1 s per segmentation on 2 CPU cores: 2 models x 4 ages x 16 turns in about 2 minutes)
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fss import datasets, pretrained
from fss.device import describe_device
from fss.evaluation import turned_brains
from fss.infer import TURNED_BRAIN_DEGREES
from fss.io import load_nifti
from fss.metrics import brain_turn_degrees
from fss.paths import atomic_path
from fss.stress import turn_anatomy


def measure(models: dict, ages: list[int], degrees: list[float]) -> pd.DataFrame:
    """:func:`fss.evaluation.turned_brains` of each brain-masked Wu age, with ``age`` and ``turn_true`` (the turn read from
    the true labels turned the same way)."""
    tables = []
    for record in tqdm(datasets.fetch_wu_atlas(ages=ages), desc="Wu ages", unit="age"):
        image = load_nifti(record.image)
        masked = nib.Nifti1Image(np.asarray(image.dataobj, np.float32) * (np.asarray(load_nifti(record.mask).dataobj) > 0), image.affine)
        table = turned_brains(masked, record.feta_labels(), models, degrees, progress=False)
        true = {("-", 0.0): brain_turn_degrees(record.feta_labels())}
        for angle in degrees:
            for axis in range(3):
                true["xyz"[axis], float(angle)] = brain_turn_degrees(turn_anatomy(record.feta_labels(), angle, axis, mode="nearest"))
        tables.append(table.assign(age=record.gestational_age, turn_true=[true[a, d] for a, d in zip(table.axis, table.degrees)]))
    return pd.concat(tables, ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """By turn (degrees, any axis): each model's mean Dice over the ages and axes, and the share of its segmentations warned of."""
    dice = table.pivot_table(index="degrees", columns="model", values="dice").round(3)
    warned = table.pivot_table(index="degrees", columns="model", values="warned").round(2)
    return dice.join(warned.add_suffix(" warned"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fss-synth-cpu", "fss-real-cpu"])
    parser.add_argument("--ages", type=int, nargs="+", default=[22, 26, 30, 34])
    parser.add_argument("--degrees", type=float, nargs="+", default=[15, 30, 45, 60, 90], help="turns besides 0")
    parser.add_argument("--out", type=Path, help="also write every row as TSV")
    args = parser.parse_args()
    models = {name: pretrained.load(name) for name in args.models}
    print(f"{describe_device(torch.device('cpu'))}; torch {torch.__version__}")
    table = measure(models, args.ages, args.degrees)
    if args.out:
        with atomic_path(args.out, overwrite=True) as path:
            table.to_csv(path, sep="\t", index=False)
    print("\nby the brain's turn within its grid, about any axis: mean Dice over the tissues, ages and axes; share warned of")
    print(summary(table).to_string())
    print(f"\nmean Dice over the tissues, mean over Wu ages {args.ages} (brain-masked), by the brain's turn within its grid:")
    print(table.pivot_table(index=["axis", "degrees"], columns="model", values="dice").round(3).to_string())
    print(f"\nshare of the segmentations warned of as turned (read above {TURNED_BRAIN_DEGREES:g} degrees):")
    print(table.pivot_table(index=["axis", "degrees"], columns="model", values="warned").round(2).to_string())
    print("\nthe brain's turn read from the segmentation (what segment warns on) and from the true labels, degrees, mean over ages:")
    print(
        table.pivot_table(index=["axis", "degrees"], columns="model", values="turn_read")
        .round(0)
        .assign(true=table.groupby(["axis", "degrees"]).turn_true.mean().round(0))
        .to_string()
    )


if __name__ == "__main__":
    main()
