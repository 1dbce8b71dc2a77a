"""How much a model's Dice depends on the empty field of view around the brain: the held-out CRL ages segmented on
the model's working grid whole (as validation during training does) and cut to the box that ``fss segment`` cuts
(the voxels above zero with an 8 mm margin).

The network normalises its features over its whole input (instance norm), so the empty voxels around the brain
change what it computes; a model trained on crops that are mostly brain may lose Dice on the whole field of view.
Dice per age and tissue mean, on the working grid, against the labels resampled there (nearest neighbour).

Run: python benchmarks/field_of_view.py [--models fss-synth-cpu fss-real-cpu] [--checkpoints RUN/last ...]
"""

import argparse

import numpy as np
import pandas as pd

from fss import datasets, pretrained
from fss.checkpoint import load_checkpoint
from fss.infer import predict_working, working_box
from fss.io import WorkingGrid, load_nifti, normalize_as_recorded
from fss.metrics import dice_per_tissue

AGES = (23, 27, 31, 35)


def scores(model, metadata: dict, record) -> dict[str, float]:
    """Mean Dice of the seven tissues on ``record``'s working grid: ``whole`` field of view and ``brain box``."""
    scan = load_nifti(record.image)
    full = WorkingGrid.from_image(scan, metadata["spacing_mm"])
    image = full.to_working(np.asarray(scan.dataobj, dtype=np.float32))
    labels = full.to_working(np.asarray(record.feta_labels().dataobj), "nearest")
    normalization = metadata.get("normalization")
    box, boxed = working_box(full, image, model.multiple, normalization)
    found = {}
    for where, (volume, reference) in {
        "whole": (normalize_as_recorded(image, normalization), labels),
        "brain box": (boxed, full.cut(labels, box)),
    }.items():
        predicted = predict_working(model, volume).argmax(0)
        found[where] = float(np.mean(list(dice_per_tissue(predicted.numpy(), reference.numpy()).values())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=pretrained.available(), help="packaged models")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="checkpoints written by fss train (e.g. RUN/last)")
    args = parser.parse_args()
    loaded = {**{name: pretrained.load(name, "cpu") for name in args.models}, **{path: load_checkpoint(path, "cpu") for path in args.checkpoints}}
    records = datasets.fetch_crl_atlas(ages=list(AGES))
    rows = []
    for name, (model, metadata) in loaded.items():
        model.eval()
        for record in records:
            rows.append({"model": name, "case": record.name, **scores(model, metadata, record)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmean over the ages:")
    print(table.groupby("model", sort=False)[["whole", "brain box"]].mean().to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
