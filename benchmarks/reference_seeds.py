"""fss's seeds against the seeds that the reference implementation published for the same anatomy.

The reference published seeds for ``sub-sta30``: the CRL atlas at 30 weeks, resampled to 0.5 mm and
fitted on its own copy of the T2w image. fss fits the 0.8 mm atlas itself (``make_seeds``, as
notebook 01 and ``fss seeds`` do). The reference's seeds are resampled onto the 0.8 mm grid (nearest
neighbour, through world coordinates), its subclasses put in order of their mean intensity in fss's
image, and compared (``fss.seeds.compare_seeds``): the share of each meta-label that each subclass
takes, and how often a voxel gets the same subclass from both. Written up in docs/fidelity.md.

Run: python benchmarks/reference_seeds.py   (about 10 s)
"""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np

from fss import datasets
from fss.io import load_nifti
from fss.labels import to_feta
from fss.seeds import compare_seeds, load_seeds, make_seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-subclasses", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="of the mixtures' fits")
    args = parser.parse_args(argv)
    [record] = datasets.fetch_crl_atlas(ages=[30])
    image, atlas_labels = load_nifti(record.image), load_nifti(record.labels)
    labels = nib.Nifti1Image(to_feta(np.asarray(atlas_labels.dataobj), record.convention), atlas_labels.affine)
    seeds = make_seeds(image, labels, max_subclasses=args.max_subclasses, seed=args.seed)
    reference = datasets.fetch_reference_example()
    fractions, agreement = compare_seeds(seeds, load_seeds(reference.labels.parents[2], reference.name), np.asarray(image.dataobj, dtype=np.float32))
    print(fractions.round(3).to_string(index=False), end="\n\n")
    print(agreement.round(3).to_string(index=False), end="\n\n")
    split = fractions[fractions.K > 1]
    worst = split.loc[split.difference.abs().idxmax()]
    same = agreement[agreement.K > 1]["same subclass"]
    print(
        f"K=2..{args.max_subclasses}: the subclass fractions differ by {100 * split.difference.abs().mean():.1f} percentage points on "
        f"average, at most {100 * abs(worst.difference):.1f} ({worst['meta-label']}, K={worst.K}, subclass {worst.subclass}); a voxel "
        f"gets the same subclass from both in {100 * same.mean():.0f}% of cases on average ({100 * same.min():.0f}% to {100 * same.max():.0f}%)."
    )


if __name__ == "__main__":
    main()
