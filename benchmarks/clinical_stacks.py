"""Models on the clinical-like test set: the Wu ages as single thick-slice stacks, brain-masked, on their own grids.

Each Wu age (whole head) is re-acquired as one stack with 3, 4.5 and 6 mm slices across each
axis of its grid (:func:`fss.evaluation.clinical_cases`, :func:`fss.stress.clinical_stack`),
segmented by each model with :func:`fss.infer.segment` as ``fss segment`` would, and scored
against the Wu labels brought to the stack's grid: the Dice of each tissue, the whole brain's Dice
(every tissue against every labelled voxel: does the segmentation cover the brain?) and the
share of the labelled voxels where the stack is 0 (tissue painted into the masked background).

Run: python benchmarks/clinical_stacks.py [--models fss-synth-cpu fss-real-cpu] [--ages 22 ... 34] [--out outputs/clinical_stacks.tsv]
     (about 2 s per stack and model on 2 CPU cores: 117 stacks per model at every age)
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fss import datasets, pretrained
from fss.checkpoint import load_checkpoint
from fss.device import describe_device
from fss.evaluation import clinical_cases
from fss.infer import segment
from fss.metrics import dice, dice_per_tissue, labelled_outside_image
from fss.paths import atomic_path


def score(models: dict, ages: list[int], seed: int) -> pd.DataFrame:
    """One row per model and stack: its thickness and axis, each tissue's Dice, ``brain`` and ``outside`` (0-1)."""
    cases = clinical_cases(ages, seed=seed)
    rows = []
    for case in tqdm(cases, desc="clinical stacks", unit="stack"):
        image, labels = case.load()
        data = np.asarray(image.dataobj)
        for name, model in models.items():
            prediction = np.asarray(segment(image, model, device="cpu")[0].dataobj)
            rows.append(
                {
                    "model": name,
                    "case": case.name,
                    "slice_mm": case.stack[1],
                    "axis": case.stack[0],
                    **dice_per_tissue(prediction, labels),
                    "brain": dice(prediction > 0, labels > 0),
                    "outside": labelled_outside_image(prediction, data),
                }
            )
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, over all stacks and per thickness: the mean of each tissue's Dice and the mean of each stack's mean Dice
    (as :func:`fss.metrics.mean_over_cases` averages), the whole brain's Dice (mean and minimum) and the share labelled
    outside the image (mean and maximum, %)."""
    tissues = [c for c in table.columns if c not in ("model", "case", "slice_mm", "axis", "brain", "outside")]
    rows = []
    for model, by_model in table.groupby("model", sort=False):
        for slices, group in [("all", by_model), *by_model.groupby("slice_mm")]:
            means = group[tissues].mean()
            rows.append(
                {
                    "model": model,
                    "slices mm": slices,
                    "stacks": len(group),
                    "mean Dice": round(group[tissues].mean(axis=1).mean(), 3),
                    **means.round(3).to_dict(),
                    "brain Dice (min)": f"{group.brain.mean():.3f} ({group.brain.min():.3f})",
                    "outside % (max)": f"{100 * group.outside.mean():.1f} ({100 * group.outside.max():.1f})",
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=pretrained.available(), help="packaged model names or checkpoint paths")
    parser.add_argument("--ages", nargs="+", type=int, default=list(datasets.FAMILIES["wu"].ages))
    parser.add_argument("--seed", type=int, default=0, help="for the stacks' draws")
    parser.add_argument("--out", default="outputs/clinical_stacks.tsv", help="every stack's scores")
    args = parser.parse_args()
    models = {name: pretrained.load(name) if name in pretrained.available() else load_checkpoint(name, "cpu") for name in args.models}
    print(f"\n{describe_device(torch.device('cpu'))}, torch {torch.__version__}, Wu ages {args.ages}, seed {args.seed}\n")
    table = score(models, args.ages, args.seed)
    with atomic_path(Path(args.out), overwrite=True) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    print(summary(table).to_string(index=False))
    print(f"\nevery stack's scores: {args.out}")


if __name__ == "__main__":
    main()
