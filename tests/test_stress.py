import nibabel as nib
import numpy as np
import pytest
from ball import ball_image, ball_labels
from nibabel.processing import resample_from_to
from scans import ellipsoid
from scipy import ndimage

from fss.stress import FWHM_TO_SIGMA, SEVERITIES, another_grid, clinical_stack, describe, stress, turn, turn_anatomy

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


def test_turn_anatomy_turns_the_brain_within_the_same_grid():
    upright = ellipsoid()  # semi-axes 30, 36, 24 mm along x, y, z
    turned = turn_anatomy(upright, 90.0, axis=2, mode="nearest")  # a quarter turn about z: the long axis from y to x
    assert np.array_equal(turned.affine, upright.affine) and turned.shape == upright.shape
    assert turned.get_data_dtype() == np.int16
    extent = [np.ptp(np.nonzero(np.asarray(image.dataobj))[a]) * 1.5 for image in (upright, turned) for a in range(3)]
    assert np.allclose(extent[:3], [58.5, 70.5, 46.5], atol=1.6) and np.allclose(extent[3:], [70.5, 58.5, 46.5], atol=1.6)
    assert np.array_equal(np.asarray(turn_anatomy(upright, 0.0, mode="nearest").dataobj), np.asarray(upright.dataobj))


def test_another_grid_keeps_the_anatomy_in_world_space_on_the_grid_it_describes():
    upright = ellipsoid()  # 64^3 voxels of 1.5 mm centred on the origin
    flipped = another_grid(upright, (0, 0, 0), (-1.5, -1.5, 1.5), (64, 64, 64), mode="nearest")
    assert np.array_equal(np.asarray(flipped.dataobj), np.asarray(upright.dataobj)[::-1, ::-1])  # the same voxels, x and y reversed
    assert "".join(nib.aff2axcodes(flipped.affine)) == "LPS"
    turned = another_grid(upright, (15, -10, 20), (0.9, 0.9, 2.2), (130, 170, 56), mode="nearest")
    assert np.allclose(nib.affines.voxel_sizes(turned.affine), (0.9, 0.9, 2.2))
    assert np.allclose(nib.affines.apply_affine(turned.affine, (np.array(turned.shape) - 1) / 2), 0)  # centred where the image is
    back = np.asarray(resample_from_to(turned, upright, order=0).dataobj)
    assert (back == 3).sum() == pytest.approx((np.asarray(upright.dataobj) == 3).sum(), rel=0.05)  # the ellipsoid, in world space


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_clinical_stack_has_its_slices_across_the_axis_and_its_labels_where_the_anatomy_is(axis):
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # 1 mm voxels, x flipped: the stack keeps the image's orientation
    affine[:3, 3] = [40.0, -20.0, 5.0]
    toy = np.eye(4)
    toy[:3, 3] = -6.0
    labels = ball_labels((62, 66, 60), toy)  # the toy brain on 1 mm voxels, with room around it
    head = np.where(labels > 0, ball_image(labels), 60.0).astype(np.float32)  # a "skull" of intensity 60 around the brain
    image, label_map = nib.Nifti1Image(head, affine), nib.Nifti1Image(labels, affine)
    brain = nib.Nifti1Image((labels > 0).astype(np.uint8), affine)
    stack, stack_labels, drawn = clinical_stack(image, label_map, brain, axis, 4.5, seed=(3, axis))
    sizes = np.sqrt((stack.affine[:3, :3] ** 2).sum(axis=0))
    expected = np.full(3, drawn["inplane_mm"])
    expected[axis] = 4.5
    np.testing.assert_allclose(sizes, expected)
    assert 0.5 <= drawn["inplane_mm"] <= 0.8 and -1.0 <= drawn["mask_margin_mm"] <= 2.0
    assert np.sign(stack.affine[0, 0]) == -1 and stack_labels.shape == stack.shape
    # each stack voxel's label is the source label at the same point of the world (nearest source voxel)
    rng = np.random.default_rng(0)
    voxels = rng.integers(0, stack.shape, size=(200, 3))
    position = nib.affines.apply_affine(np.linalg.inv(affine) @ stack.affine, voxels)
    source = np.rint(position).astype(int)
    inside = np.all((source >= 0) & (source < labels.shape), axis=1) & (np.abs(np.abs(position - source) - 0.5) > 1e-3).all(axis=1)
    found = np.asarray(stack_labels.dataobj)[tuple(voxels[inside].T)]
    np.testing.assert_array_equal(found, labels[tuple(source[inside].T)])
    # masked: zero farther from the brain than the widest mask, the image inside the brain deeper than the narrowest cuts
    intensity = np.asarray(stack.dataobj)[tuple(voxels[inside].T)]
    outside, depth = ndimage.distance_transform_edt(labels == 0), ndimage.distance_transform_edt(labels > 0)
    far, deep = outside[tuple(source[inside].T)] > 2.0 + 1.0, depth[tuple(source[inside].T)] > 1.0 + 1.0  # margin, and a voxel
    assert far.any() and deep.any() and (intensity[far] == 0).all() and (intensity[deep] > 0).all()
    # the field of view is the mask's box and its margins: it holds the whole brain, and not the whole head
    assert (np.asarray(stack_labels.dataobj) > 0).sum() * np.prod(sizes) == pytest.approx((labels > 0).sum(), rel=0.15)


def test_a_clinical_stack_blurs_across_its_slices_with_the_slice_profile():
    """A sinusoid of wavelength L through a Gaussian profile of FWHM w keeps exp(-2 pi^2 sigma^2 / L^2) of its amplitude."""
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    z_mm = np.arange(200) * 0.5
    head = np.broadcast_to(100 + 50 * np.sin(2 * np.pi * z_mm / 24.0), (40, 40, 200)).astype(np.float32)
    ones = nib.Nifti1Image(np.ones(head.shape, np.uint8), affine)
    stack, _, _ = clinical_stack(nib.Nifti1Image(head, affine), nib.Nifti1Image(np.zeros(head.shape, np.int16), affine), ones, 2, 6.0, seed=1)
    i, j = np.rint(nib.affines.apply_affine(np.linalg.inv(stack.affine), [10.0, 10.0, 0.0])[:2]).astype(int)  # the middle of the volume
    z = nib.affines.apply_affine(stack.affine, np.stack([np.full(stack.shape[2], i), np.full(stack.shape[2], j), np.arange(stack.shape[2])], 1))[:, 2]
    values = np.asarray(stack.dataobj)[i, j]
    keep = (z > 15) & (z < 85)  # away from the volume's ends
    design = np.stack([np.ones(keep.sum()), np.sin(2 * np.pi * z[keep] / 24.0), np.cos(2 * np.pi * z[keep] / 24.0)], 1)
    _, a, b = np.linalg.lstsq(design, values[keep], rcond=None)[0]
    sigma_mm = 6.0 * FWHM_TO_SIGMA
    assert np.hypot(a, b) == pytest.approx(50 * np.exp(-2 * np.pi**2 * sigma_mm**2 / 24.0**2), rel=0.02)
