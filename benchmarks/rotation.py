"""Why a turned scan seemed to lose a quarter of its Dice, and what turning really costs.

Three measurements on a brain-masked Wu 2021 atlas volume (another population than training),
with the packaged model:

1. *affine only*: the voxels stay, the affine is turned by ``--degrees``. The model sees the very
   same array, so its labels are voxel for voxel those of the plain volume; compared with the
   plain segmentation in world space they disagree only because the anatomy itself was turned,
   and the reference labels sent through the same comparison disagree just as much;
2. *grid turned* (``fss.stress.turn``): the anatomy stays in world space, the image is resampled
   onto a turned grid, so the model sees a rotated brain: its agreement with the plain
   segmentation in world space is what rotation costs;
3. *anti-aliasing*: whether blurring the 0.8 mm input before the 1.6 mm working grid (which
   samples every other voxel) changes Dice on held-out volumes.

Run: python benchmarks/rotation.py [--degrees 5 11.5 15] [--age 30]
"""

import argparse

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from nibabel.processing import resample_from_to
from scipy import ndimage

from fss import datasets, pretrained
from fss.infer import segment
from fss.io import load_nifti
from fss.metrics import dice_per_tissue
from fss.stress import turn


def mean_dice(a: np.ndarray, b: np.ndarray, inside: np.ndarray | None = None) -> float:
    if inside is not None:
        a, b = a * inside, b * inside
    return float(np.nanmean(list(dice_per_tissue(a, b).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--degrees", type=float, nargs="+", default=[5.0, 11.5, 15.0])
    parser.add_argument("--age", type=int, default=30)
    args = parser.parse_args()
    model = pretrained.load()
    [record] = datasets.fetch_wu_atlas([args.age])
    image = load_nifti(record.image)
    data = np.asarray(image.dataobj, np.float32) * (np.asarray(load_nifti(record.mask).dataobj) > 0)
    to_pir = ornt_transform(io_orientation(image.affine), axcodes2ornt("PIR"))  # another voxel order, as the original report
    plain = nib.Nifti1Image(data, image.affine).as_reoriented(to_pir)
    reference = record.feta_labels().as_reoriented(to_pir)
    ones = nib.Nifti1Image(np.ones(plain.shape, np.int16), plain.affine)
    ours = np.asarray(segment(plain, model, device="cpu")[0].dataobj)
    truth = np.asarray(reference.dataobj)
    print(f"{record.name} brain-masked, PIR, packaged model {pretrained.DEFAULT}: mean Dice against the reference {mean_dice(ours, truth):.3f}\n")

    def back(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Labels on the grid of ``affine`` resampled (nearest) onto the plain volume's grid, through world space."""
        return np.asarray(resample_from_to(nib.Nifti1Image(labels, affine), plain, order=0).dataobj)

    print("degrees | affine only: model / reference labels | grid turned: model / reference labels (mean Dice with the unturned, world space)")
    for degrees in args.degrees:
        turned_affine = turn(ones, degrees, axis=0, mode="nearest").affine
        affine_only = np.asarray(segment(nib.Nifti1Image(np.asarray(plain.dataobj), turned_affine), model, device="cpu")[0].dataobj)
        assert np.array_equal(affine_only, ours), "the model saw another array"
        affine_model, affine_labels = mean_dice(back(affine_only, turned_affine), ours), mean_dice(back(truth, turned_affine), truth)
        turned = turn(plain, degrees, axis=0)
        inside = back(np.asarray(turn(ones, degrees, axis=0, mode="nearest").dataobj), turned.affine) > 0
        grid_model = mean_dice(back(np.asarray(segment(turned, model, device="cpu")[0].dataobj), turned.affine), ours, inside)
        grid_labels = mean_dice(back(np.asarray(turn(reference, degrees, axis=0, mode="nearest").dataobj), turned.affine), truth, inside)
        print(f"{degrees:7.1f} | {affine_model:.3f} / {affine_labels:.3f} | {grid_model:.3f} / {grid_labels:.3f}")

    print("\nanti-aliasing before the 1.6 mm working grid (Gaussian sigma in 0.8 mm voxels): mean Dice against the reference")
    cases = [(r, True) for r in datasets.fetch_wu_atlas([22, 26, 30, 34])] + [(r, False) for r in datasets.fetch_crl_atlas([23, 27, 31, 35])]
    for sigma in (0.0, 0.5, 0.85):
        scores = {"Wu, brain mask": [], "CRL, held out": []}
        for case, masked in cases:
            scan = load_nifti(case.image)
            volume = np.asarray(scan.dataobj, np.float32)
            if masked:
                volume = volume * (np.asarray(load_nifti(case.mask).dataobj) > 0)
            blurred = (ndimage.gaussian_filter(volume, sigma, mode="nearest") if sigma else volume) * (volume > 0)
            labels = np.asarray(segment(nib.Nifti1Image(blurred, scan.affine), model, device="cpu")[0].dataobj)
            scores["Wu, brain mask" if masked else "CRL, held out"].append(mean_dice(labels, np.asarray(case.feta_labels().dataobj)))
        print(f"  sigma {sigma:4.2f}: " + ", ".join(f"{name} {np.mean(values):.3f}" for name, values in scores.items()))


if __name__ == "__main__":
    main()
