import numpy as np
import pytest

from fss.stress import SEVERITIES, stress

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


def test_seeded_and_deterministic():
    image = phantom()
    for kind in ("noise", "bias"):
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
        stress(image, SPACING, "motion", 1)
    with pytest.raises(ValueError, match="severity must be 1, 2 or 3"):
        stress(image, SPACING, "noise", 4)
