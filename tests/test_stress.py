import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from fss.stress import SEVERITIES, describe, stress, turn

SPACING = (0.8, 0.8, 0.8)


def phantom():
    grid = np.stack(np.meshgrid(*[np.arange(32) - 15.5] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    image = np.where(radius < 12, 0.6, 0.0) + np.where(radius < 6, 0.4, 0.0)
    image[(np.abs(grid[2]) < 1) & (radius < 10)] = 0.2  # a thin slab across the inferior-superior axis
    return image.astype(np.float32)


@pytest.mark.parametrize("kind", sorted(SEVERITIES))
def test_every_stress_keeps_the_grid_and_grows_with_severity(kind):
    image = phantom()
    changes = []
    for severity in (1, 2, 3):
        shifted = stress(image, SPACING, kind, severity, seed=1)
        assert shifted.shape == image.shape and shifted.dtype == np.float32 and np.all(np.isfinite(shifted))
        changes.append(np.abs(shifted - image).mean())
    assert 0 < changes[0] < changes[1] < changes[2], changes


@pytest.mark.parametrize("kind", sorted(SEVERITIES))
def test_every_stress_is_non_negative_and_keeps_the_black_background(kind):
    image = phantom()
    for severity in (1, 2, 3):
        shifted = stress(image, SPACING, kind, severity, seed=2)
        assert shifted.min() >= 0
        if kind not in ("noise", "low_field", "thick_slices", "resolution"):  # noise lifts the background; blur spreads into it
            assert np.abs(shifted[:3, :3, :3]).max() < 1e-6


def test_seeded_and_deterministic():
    image = phantom()
    for kind in ("noise", "bias", "contrast", "motion", "low_field"):
        np.testing.assert_array_equal(stress(image, SPACING, kind, 2, seed=3), stress(image, SPACING, kind, 2, seed=3))
        assert not np.array_equal(stress(image, SPACING, kind, 2, seed=3), stress(image, SPACING, kind, 2, seed=4))


def test_thick_slices_blur_only_through_plane():
    image = np.zeros((24, 24, 24), np.float32)
    image[8:16] = 1.0  # varies along the first axis only
    np.testing.assert_allclose(stress(image, SPACING, "thick_slices", 3), image, atol=1e-6)
    slab = np.zeros((24, 24, 24), np.float32)
    slab[:, :, 11:13] = 1.0  # thin along the slice axis: smeared by thick slices
    assert stress(slab, SPACING, "thick_slices", 3)[:, :, 11:13].mean() < 0.7


def test_rician_noise_floor_and_bad_arguments():
    image = np.zeros((20, 20, 20), np.float32)
    image[5:15, 5:15, 5:15] = 1.0
    noisy = stress(image, SPACING, "noise", 3)  # SNR 5: sigma 0.2
    background = noisy[:4].ravel()
    assert background.min() >= 0 and background.mean() == pytest.approx(0.2 * np.sqrt(np.pi / 2), rel=0.05)
    with pytest.raises(ValueError, match="unknown stress"):
        stress(image, SPACING, "blur", 1)
    with pytest.raises(ValueError, match="severity must be 1, 2 or 3"):
        stress(image, SPACING, "noise", 4)


def two_tissues():
    """A bright sphere (CSF-like, 0.9) around a darker core (white-matter-like, 0.5), black outside."""
    grid = np.stack(np.meshgrid(*[np.arange(32) - 15.5] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    image = np.where(radius < 13, 0.9, 0.0) + np.where(radius < 7, -0.4, 0.0)
    return image.astype(np.float32), radius


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrast_keeps_the_tissue_order_when_mild_and_inverts_it_when_severe(seed):
    image, radius = two_tissues()
    outer, core = (radius > 8) & (radius < 12), radius < 6
    for severity, inverted in ((1, False), (3, True)):
        shifted = stress(image, SPACING, "contrast", severity, seed=seed)
        assert (shifted[core].mean() > shifted[outer].mean()) == inverted, (severity, shifted[core].mean(), shifted[outer].mean())
        assert np.ptp(shifted[core]) < 1e-4  # one intensity in, one intensity out: a curve of intensities, no spatial change


def test_motion_moves_slabs_within_their_plane_and_keeps_their_content():
    image, _ = two_tissues()
    shifted = stress(image, SPACING, "motion", 3, seed=0)
    changed = np.abs(shifted - image).max(axis=(0, 1))
    assert changed[8:24].max() > 0.3  # slices of the sphere are moved
    # each slice is the original slice moved rigidly and scaled by its pass's gain (3 mm slabs of 0.8 mm voxels)
    ratios = shifted[:, :, 8:24].sum(axis=(0, 1)) / image[:, :, 8:24].sum(axis=(0, 1))
    gain = SEVERITIES["motion"][2]["gain"]
    assert np.all(np.minimum(np.abs(ratios - 1 - gain), np.abs(ratios - 1 + gain)) < 0.02), ratios
    assert len(np.unique(np.round(ratios, 2))) >= 2  # both passes present: intensity steps between slabs


def test_low_field_softens_contrast_and_thickens_slices():
    image, radius = two_tissues()
    outer, core = (radius > 9) & (radius < 11), radius < 5
    clean_gap = image[outer].mean() - image[core].mean()
    for severity in (1, 2, 3):
        shifted = stress(image, SPACING, "low_field", severity, seed=0)
        assert shifted[outer].mean() - shifted[core].mean() < clean_gap * SEVERITIES["low_field"][severity - 1]["contrast"] + 0.03


def test_describe_names_the_parameters():
    assert describe("low_field", 2) == "slice_mm 4, snr 10, contrast 0.7"
    with pytest.raises(ValueError, match="unknown stress"):
        describe("blur", 1)


def test_turn_keeps_the_anatomy_in_world_space():
    labels = np.zeros((30, 34, 28), np.int16)
    labels[8:20, 10:26, 6:22] = 3
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    affine[:3, 3] = [-10, 5, 2]
    original = nib.Nifti1Image(labels, affine)
    assert np.array_equal(np.asarray(turn(original, 0.0, mode="nearest").dataobj), labels)
    turned = turn(original, 12.0, axis=2, mode="nearest")
    assert not np.allclose(turned.affine, affine) and not np.array_equal(np.asarray(turned.dataobj), labels)
    back = np.asarray(resample_from_to(turned, original, order=0).dataobj)
    box = labels == 3
    assert (back[box] == 3).mean() > 0.9 and (back[~box] == 3).mean() < 0.05
