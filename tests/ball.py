"""A toy brain (ellipsoidal shells of CSF, cortex and white matter) and a tiny training setup for it.

Shared by the training and inference tests; the shells are defined in world millimetres, so the
same toy brain can be drawn on any voxel grid.
"""

import nibabel as nib
import numpy as np

from fss.seeds import make_seeds
from fss.training_config import TrainConfig
from fss.training_data import Volume

SPACING = 1.6
AFFINE = np.diag([SPACING, SPACING, SPACING, 1.0])
CENTRE_MM = np.full(3, 15.5 * SPACING)
SHELLS_MM = (22.4, 19.2, 14.4)  # outer radii of labels 1 (CSF), 2 (cortex), 3 (white matter)
AXES = np.array([1.0, 1.15, 0.95])  # stretch of the ellipsoids along x, y, z
MEANS = np.array([0, 250, 110, 160], float)  # T2w-like intensity of each label


def ball_labels(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Labels (int16, ``shape``) of the toy brain on the voxel grid ``affine`` (voxel centres)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    radius = np.sqrt((((world - CENTRE_MM) / AXES) ** 2).sum(-1))
    labels = np.zeros(shape, np.int16)
    for label, outer in enumerate(SHELLS_MM, start=1):
        labels[radius < outer] = label
    return labels


def ball_image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A T2w-like image of ``labels``: each label's mean intensity plus Gaussian noise (std 8), background 0."""
    rng = np.random.default_rng(seed)
    image = (MEANS[labels] + rng.normal(0, 8, labels.shape)).clip(0).astype(np.float32)
    image[labels == 0] = 0
    return image


def ball_volume(name: str = "ball", seed: int = 0, spacing: float = SPACING) -> Volume:
    """The toy brain at ``spacing`` mm (32^3 voxels at 1.6 mm, the same field of view at others), with its seeds."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    side = round(32 * SPACING / spacing)
    affine[:3, 3] = CENTRE_MM - spacing * (side - 1) / 2
    labels = ball_labels((side,) * 3, affine)
    image = ball_image(labels, seed)
    seeds = make_seeds(nib.Nifti1Image(image, affine), nib.Nifti1Image(labels, affine), max_subclasses=4, seed=0)
    return Volume(name, image / image.max(), labels, affine, spacing, seeds)


def tiny_config(**changes) -> TrainConfig:
    """A configuration that learns the toy brain in a few hundred CPU iterations."""
    values = dict(
        mode="synthetic",
        iterations=400,
        batch_size=2,
        crop_shape=(32, 32, 32),
        spacing=SPACING,
        channels=(8, 16, 32),
        learning_rate=0.01,
        warmup=10,
        generator="reference",
        validation_every=100,
        device="cpu",
        seed=0,
    )
    return TrainConfig(**{**values, **changes})
