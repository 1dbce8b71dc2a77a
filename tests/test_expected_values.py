"""What each generator stage, stress, metric and inference step computes, against a value found another way.

Shape and range checks pass for a stage that computes the wrong number; these tests pin the
number itself on tiny volumes: from a closed form, by hand, or with scipy or numpy. Shapes are
not multiples of the network's stride, so that the padding paths run.
"""

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

import fss.infer
import fss.stress
from fss.checkpoint import save_checkpoint
from fss.infer import predict_working, segment
from fss.io import normalize_intensities
from fss.metrics import evaluate
from fss.optimization import dice_ce_loss
from fss.seeds import MAX_FIT_VOXELS, fit_subclasses
from fss.synth.bias import BiasDraw, bias_field
from fss.synth.contrast import ContrastDraw, apply_contrast
from fss.synth.gamma import GammaDraw, apply_gamma
from fss.synth.generator import finish
from fss.synth.resolution import BLUR_CONSTANT, blur_sigmas, gaussian_blur
from fss.synth.spatial import integrate_velocity
from fss.unet import UNet


def test_velocity_integration_gives_the_closed_form_flow_of_a_linear_field():
    """v = (a p2, b p0, 0) flows to u = (a p2, b p0 + a b p2 / 2, 0) in unit time (A is nilpotent)."""
    shape = (9, 10, 11)
    a, b = 0.1, 0.1
    p = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    velocity = torch.zeros(1, 3, *shape)
    velocity[0, 0], velocity[0, 1] = a * p[2], b * p[0]
    displacement = integrate_velocity(velocity, shape, steps=7)[0]
    expected = torch.stack([a * p[2], b * p[0] + a * b * p[2] / 2, torch.zeros(shape)])
    inside = (slice(None), slice(0, 7), slice(0, 9))  # where every intermediate position stays inside the grid
    torch.testing.assert_close(displacement[inside], expected[inside], atol=2e-3, rtol=0)


def test_blur_sigma_is_in_voxels_of_each_axis_and_zero_where_the_voxels_are_coarser():
    sigmas = blur_sigmas(3.0, torch.tensor([1.0, 1.0, 1.15]), torch.tensor([1.0, 1.5, 3.0]))
    assert sigmas == pytest.approx([BLUR_CONSTANT * 3.0, BLUR_CONSTANT * 2.0, 0.0])
    assert BLUR_CONSTANT == pytest.approx(0.5123, abs=1e-4)  # log(5) / pi


def test_gaussian_blur_of_a_point_has_the_variance_asked_along_its_axis_only():
    volume = torch.zeros(1, 1, 41, 9, 9, dtype=torch.float64)
    volume[0, 0, 20, 4, 4] = 1.0
    blurred = gaussian_blur(volume.clone(), [2.5, 0.0, 0.0])[0, 0]
    profile = blurred[:, 4, 4]
    position = torch.arange(41, dtype=torch.float64) - 20
    assert float(profile.sum()) == pytest.approx(1.0)
    assert float((profile * position**2).sum()) == pytest.approx(2.5**2, rel=0.02)  # a kernel cut at 3 sigma
    assert float(blurred.sum() - profile.sum()) == pytest.approx(0.0, abs=1e-12)


def test_contrast_draws_each_seed_value_from_its_own_gaussian():
    seed_map = torch.zeros(1, 40, 40, 40, dtype=torch.uint8)
    seed_map[0, 20:] = 12
    means, stds = torch.zeros(1, 64, dtype=torch.float64), torch.ones(1, 64, dtype=torch.float64)
    means[0, 0], stds[0, 0], means[0, 12], stds[0, 12] = 40.0, 3.0, 180.0, 12.0
    image = apply_contrast(seed_map, ContrastDraw(means, stds, torch.tensor([7])))[0, 0]
    for value, mean, std in ((0, 40.0, 3.0), (12, 180.0, 12.0)):
        drawn = image[seed_map[0] == value].double()
        assert float(drawn.mean()) == pytest.approx(mean, abs=4 * std / math.sqrt(drawn.numel()))
        assert float(drawn.std()) == pytest.approx(std, rel=0.03)
    relabelled = apply_contrast(seed_map // 12 * 5, ContrastDraw(means, stds, torch.tensor([7])), relabel=torch.tensor([[0, 1, 2, 3, 4, 12]]))
    torch.testing.assert_close(relabelled[0, 0], image)  # codes 0 and 5 stand for seed values 0 and 12


def test_gamma_raises_the_intensity_on_the_0_300_scale_to_the_drawn_power():
    image = torch.tensor([0.0, 30.0, 150.0, 300.0]).view(1, 1, 4, 1, 1)
    out = apply_gamma(image.clone(), GammaDraw(torch.tensor([math.log(2.0)])))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 3.0, 75.0, 300.0]))


def test_bias_multiplies_once_by_the_exponential_of_the_drawn_coarse_field():
    shape = (7, 8, 9)
    draw = BiasDraw(scale=torch.tensor([0.3]), std=torch.tensor([0.4]), seed=torch.tensor([123]))
    params = {"gamma": None, "bias": draw, "motion": None, "resolution": None, "flip": None}
    image = finish(torch.ones(1, 1, *shape), params, torch.ones(1, 3))[0]
    coarse = torch.randn((1, 1, 3, 3, 3), generator=torch.Generator().manual_seed(123)) * 0.4  # ceil(0.3 * n) nodes
    field = torch.exp(F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True))[0]
    torch.testing.assert_close(image, field / field.max())
    assert float(bias_field(0.3, 0.4, 123, shape, torch.device("cpu"))[0, 0, 0, 0]) == pytest.approx(math.exp(float(coarse[0, 0, 0, 0, 0])), rel=1e-6)


def test_mixture_is_fitted_on_a_random_subset_of_a_region_stored_in_order():
    rng = np.random.default_rng(0)
    n = MAX_FIT_VOXELS + 5_000  # the first MAX_FIT_VOXELS values hold one population only
    values = np.concatenate([rng.normal(50, 2, n), rng.normal(150, 2, n)])
    assignment, mixture = fit_subclasses(values, 2, seed=0)
    np.testing.assert_allclose(mixture.means, [50, 150], atol=0.5)
    assert (assignment[:n] == 0).all() and (assignment[n:] == 1).all()


def test_normalisation_maps_the_percentiles_of_the_voxels_above_zero_to_0_and_1():
    rng = np.random.default_rng(0)
    image = np.zeros((11, 13, 7), np.float32)
    image[2:9, 3:10, 1:6] = rng.uniform(100, 400, (7, 7, 5))
    low, high = np.percentile(image[image > 0], [0.5, 99.5])
    expected = np.clip((image - low) / (high - low), 0, 1)
    np.testing.assert_allclose(normalize_intensities(image).numpy(), expected, atol=1e-5)


class Pointwise(torch.nn.Module):
    """A 'network' whose logits at each voxel depend on that voxel's input only: (x, -x, 0, ...)."""

    multiple = 4

    def forward(self, x):
        return torch.cat([x, -x, torch.zeros_like(x).expand(-1, 6, -1, -1, -1)], dim=1)


def test_prediction_on_an_odd_shape_comes_back_voxel_for_voxel_after_the_padding():
    image = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (13, 10, 7)).astype(np.float32))
    probabilities = predict_working(Pointwise(), image, "cpu")
    logits = torch.cat([image[None], -image[None], torch.zeros(6, *image.shape)])
    torch.testing.assert_close(probabilities, torch.softmax(logits, dim=0))


def test_segment_works_at_the_spacing_the_checkpoint_records(tmp_path, monkeypatch):
    data = np.zeros((40, 40, 40), np.float32)
    data[10:30, 10:30, 10:30] = 100.0  # a 20 mm cube of 1 mm voxels
    seen = []

    def spy(model, image, *args, **kwargs):
        seen.append(tuple(image.shape))
        return torch.softmax(torch.zeros(8, *image.shape), dim=0)

    monkeypatch.setattr(fss.infer, "predict_working", spy)
    for spacing in (2.0, 4.0):
        stem = tmp_path / f"at-{spacing}"
        save_checkpoint(UNet(channels=(4, 8)), stem, {"spacing_mm": spacing})
        segment(nib.Nifti1Image(data, np.eye(4)), stem, device="cpu", margin_mm=8.0)
    # the cube and 8 mm either side: 36 mm, in voxels of 2 mm (18) and 4 mm (9, rounded up to the network's multiple of 2)
    assert seen == [(18, 18, 18), (10, 10, 10)]


def test_hd95_of_files_is_in_millimetres_of_their_voxels(tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    reference = np.zeros((20, 20, 12), np.int16)
    reference[5:15, 5:15, 3:9] = 3
    prediction = np.roll(reference, 2, axis=2)  # two 2 mm voxels along the last axis
    paths = []
    for name, labels in (("p", prediction), ("r", reference)):
        nib.save(nib.Nifti1Image(labels, affine), tmp_path / f"{name}.nii.gz")
        paths.append(tmp_path / f"{name}.nii.gz")
    table = evaluate([paths[0]], [paths[1]])
    row = table[(table.tissue == "WM") & (table.metric == "hd95")]
    assert float(row.value.iloc[0]) == pytest.approx(4.0)


def test_loss_is_cross_entropy_plus_one_minus_the_mean_soft_dice_of_the_foreground():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 3, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 5, 3), generator=generator)
    p = torch.softmax(logits, dim=1).numpy()
    onehot = np.stack([(labels.numpy() == c) for c in range(3)], axis=1)
    cross_entropy = -np.log(np.take_along_axis(p, labels.numpy()[:, None], axis=1)).mean()
    soft_dice = [(2 * (p[:, c] * onehot[:, c]).sum() + 1e-5) / (p[:, c].sum() + onehot[:, c].sum() + 1e-5) for c in (1, 2)]
    assert float(dice_ce_loss(logits, labels)) == pytest.approx(cross_entropy + 1 - np.mean(soft_dice), rel=1e-5)


@pytest.mark.parametrize(("kind", "expected"), [("thick_slices", [0.0, 0.0, 4.5 / 0.5 / 2.35482]), ("resolution", [1.5 / 0.5 / 2.35482] * 3)])
def test_stress_blurs_with_its_fwhm_in_millimetres_as_voxels_of_each_axis(kind, expected, monkeypatch):
    sigmas = []
    real = ndimage.gaussian_filter

    def spy(volume, sigma, **kwargs):
        sigmas.append(list(sigma))
        return real(volume, sigma, **kwargs)

    monkeypatch.setattr(fss.stress.ndimage, "gaussian_filter", spy)
    image = np.zeros((12, 10, 14), np.float32)
    image[3:9, 2:8, 4:10] = 100.0
    fss.stress.stress(image, (0.5, 0.5, 0.5), kind, 3 if kind == "thick_slices" else 2)
    assert sigmas[0] == pytest.approx(expected, rel=1e-4)
