"""Small scans and BIDS folders made in the tests (no data files): inputs for segmentation and the command line."""

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation


def scan(shape=(30, 26, 14), oblique=True, seed=0):
    """A T2w-like box of random intensities 100-120 in a black field, on an oblique anisotropic grid."""
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    rotation = Rotation.from_euler("xyz", [12, -20, 5], degrees=True).as_matrix() if oblique else np.eye(3)
    affine[:3, :3] = rotation @ np.diag([-1.1, 1.3, 2.4])
    affine[:3, 3] = [20.0, -15.0, 8.0]
    data = np.zeros(shape, np.float32)
    data[5:-5, 5:-5, 3:-3] = 100 + 20 * rng.random((shape[0] - 10, shape[1] - 10, shape[2] - 6))
    return nib.Nifti1Image(data, affine)


def bids(tmp_path):
    """A raw BIDS dataset: sub-01, sub-02/ses-1 with a scan each, and sub-03 whose image is all NaN."""
    root = tmp_path / "bids"
    for subject, session in (("01", None), ("02", "1")):
        anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True)
        name = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_T2w.nii.gz"
        nib.save(scan(seed=int(subject)), anat / name)
    broken = root / "sub-03" / "anat"
    broken.mkdir(parents=True)
    bad = np.full((10, 10, 10), np.nan, np.float32)
    nib.save(nib.Nifti1Image(bad, np.eye(4)), broken / "sub-03_T2w.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.9.0", "DatasetType": "raw"}')
    return root


def label_folders(tmp_path):
    """``pred/`` and ``ref/`` under ``tmp_path``, each with the same ``sub-01_dseg.nii.gz`` (a 4-voxel cube of GM): ``(pred, ref)``."""
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 2
    folders = tmp_path / "pred", tmp_path / "ref"
    for folder in folders:
        folder.mkdir()
        nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "sub-01_dseg.nii.gz")
    return folders


def ellipsoid(semi_axes_mm=(30.0, 36.0, 24.0), spacing=1.5, side=64, value=3):
    """An upright brain-shaped ellipsoid (semi-axes along x, y, z in mm: longest front to back, shortest bottom to top)
    of ``value`` on a cube of ``side`` voxels of ``spacing`` mm centred on the origin; int16 labels (cast for an image)."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (side - 1) / 2
    index = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1).astype(float)
    world = index * spacing + affine[:3, 3]
    inside = ((world / np.asarray(semi_axes_mm)) ** 2).sum(-1) <= 1
    return nib.Nifti1Image((inside * value).astype(np.int16), affine)
