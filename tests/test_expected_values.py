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
from fss.metrics import score_label_maps
from fss.optimization import dice_ce_loss
from fss.seeds import MAX_FIT_VOXELS, fit_subclasses
from fss.synth.bias import BiasDraw, bias_field
from fss.synth.config import SpatialConfig, preset
from fss.synth.contrast import ContrastDraw, apply_contrast
from fss.synth.gamma import GammaDraw, apply_gamma
from fss.synth.mask import MaskDraw, brain_masks
from fss.synth.resolution import (
    BLUR_CONSTANT,
    ResolutionDraw,
    acquired_mm,
    acquired_voxel_size,
    apply_resolution,
    blur_sigmas,
    draw_resolution,
    gaussian_blur,
)
from fss.synth.spatial import SpatialDraw, integrate_velocity, sampling_positions
from fss.synth.stages import finish
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


def _acquisition(**parts) -> ResolutionDraw:
    """One sample's acquisition: not kept, blur factor 1, noise 10, in working voxels unless told."""
    one = {"preserve": [False], "resolution": [1.0], "blur_factor": [[1.0, 1.0, 1.0]], "noise_std": [10.0], "noise_seed": [7]}
    one.update({"native_noise_grid": [1.0], "in_voxels": [True], **parts})
    return ResolutionDraw(**{k: torch.tensor(v) if v is not None else None for k, v in one.items()})


def test_an_acquisition_in_working_voxels_blurs_by_the_voxels_it_spans_and_a_stack_along_its_slices_only():
    spacing = torch.full((3,), 1.6, dtype=torch.float64)
    isotropic = _acquisition(resolution=[2.0])
    assert acquired_mm(isotropic, 0, spacing).tolist() == pytest.approx([3.2, 3.2, 3.2])
    assert blur_sigmas(acquired_mm(isotropic, 0, spacing), isotropic.blur_factor[0], spacing) == pytest.approx([2 * BLUR_CONSTANT] * 3)
    stack = _acquisition(thick=[True], slice_axis=[1], slice_mm=[4.8], inplane=[1.0])
    assert acquired_mm(stack, 0, spacing).tolist() == pytest.approx([1.6, 4.8, 1.6])
    assert blur_sigmas(acquired_mm(stack, 0, spacing), stack.blur_factor[0], spacing) == pytest.approx([0.0, 3 * BLUR_CONSTANT, 0.0])
    in_mm = _acquisition(resolution=[2.0], in_voxels=None)
    assert acquired_mm(in_mm, 0, spacing).tolist() == pytest.approx([2.0, 2.0, 2.0])


@pytest.mark.parametrize(
    ("name", "spacing", "share"),
    [
        ("clinical", 1.6, 0.8),  # every acquisition not kept (0.8) is at least a working voxel and thicker slices blur
        ("clinical", 3.2, 0.8 * (0.5 + 0.5 * (6.5 - 3.2) / 4.0)),  # stacks of slices thinner than 3.2 mm do not blur
        ("reference", 1.6, 0.0),  # 0.35-1.06 mm is finer than the grid
        ("reference", 0.8, 0.8 * (1.0607 - 0.8) / (1.0607 - 0.3536)),
    ],
)
def test_share_of_drawn_acquisitions_that_blur_at_a_working_grid(name, spacing, share):
    draws = draw_resolution(preset(name).resolution, 40_000, torch.Generator().manual_seed(0))
    _, blurred = acquired_voxel_size(draws, spacing)
    assert float(blurred.double().mean()) == pytest.approx(share, abs=0.01)


def test_noise_drawn_on_the_acquired_grid_reaches_the_working_grid_as_linear_interpolation_weakens_it():
    """Noise of std 10 on every node of a grid half as fine, then trilinear: each voxel's variance is the product over the
    axes of (1 - t)^2 + t^2, t its fraction between two nodes; kept resolutions get it voxel by voxel."""
    shape, spacing = (40, 48, 36), torch.full((1, 3), 1.6, dtype=torch.float64)
    kept = apply_resolution(torch.full((1, 1, *shape), 100.0), _acquisition(preserve=[True]), spacing)
    assert float(kept.std()) == pytest.approx(10.0, rel=0.02)
    acquired = apply_resolution(torch.full((1, 1, *shape), 100.0), _acquisition(resolution=[2.0]), spacing)
    variance = 1.0
    for n in shape:
        t = np.arange(n) * (n // 2 - 1) / (n - 1) % 1  # align_corners: node m sits at voxel m (n - 1) / (n // 2 - 1)
        variance *= np.mean((1 - t) ** 2 + t**2)
    assert float(acquired.std()) == pytest.approx(10.0 * math.sqrt(variance), rel=0.03)
    assert float(acquired.std()) < 0.8 * 10.0


def test_brain_mask_grows_and_shrinks_the_brain_by_the_margin_in_voxels_of_each_axis():
    labels = torch.zeros(1, 11, 11, 11, dtype=torch.long)
    labels[0, 3:8, 3:8, 3:8] = 3
    spacing = torch.tensor([[1.6, 1.6, 3.2]], dtype=torch.float64)
    grown = brain_masks(labels, MaskDraw(torch.tensor([True]), torch.tensor([3.2])), spacing)
    assert int(grown.sum()) == 9 * 9 * 7  # 2, 2 and 1 voxels more on each side
    shrunk = brain_masks(labels, MaskDraw(torch.tensor([True]), torch.tensor([-1.6], dtype=torch.float64)), spacing)
    assert int(shrunk.sum()) == 3 * 3 * 5  # 1, 1 and round(0.5) = 0 voxels less
    assert bool(brain_masks(labels, MaskDraw(torch.tensor([False]), torch.tensor([-1.6], dtype=torch.float64)), spacing).all())


def test_a_masked_sample_is_zero_in_image_and_labels_beyond_the_mask():
    labels = torch.zeros(1, 9, 9, 9, dtype=torch.long)
    labels[0, 2:7, 2:7, 2:7] = 1
    params = {"gamma": None, "bias": None, "motion": None, "resolution": None, "flip": None}

    def masked(margin_mm):
        mask = MaskDraw(torch.tensor([True]), torch.tensor([margin_mm], dtype=torch.float64))
        return finish(torch.full((1, 1, 9, 9, 9), 50.0), labels.clone(), {**params, "mask": mask}, torch.ones(1, 3))

    image, grown = masked(1.0)
    inside = torch.zeros(9, 9, 9, dtype=torch.bool)
    inside[1:8, 1:8, 1:8] = True
    assert bool((image[0, 0][inside] == 1).all()) and bool((image[0, 0][~inside] == 0).all())
    assert torch.equal(grown[0], labels[0])  # the brain itself is inside its grown mask
    assert int(masked(-1.0)[1].sum()) == 3**3


def test_window_moves_beyond_the_input_by_shift_beyond_times_the_output_size():
    output, spacing = (8, 10, 12), torch.ones(1, 3, dtype=torch.float64)
    draw = SpatialDraw(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3), torch.tensor([[1.0, -1.0, 0.5]]))
    config = SpatialConfig(nonlinear=False, shift_beyond=0.25)
    positions = sampling_positions(draw, config, output, torch.tensor([[8, 14, 12]]), spacing, torch.device("cpu"))
    first = positions[0, :, 0, 0, 0].tolist()
    assert first == pytest.approx([0 + 0.25 * 8, 2 - (2 + 0.25 * 10), 0.5 * 0.25 * 12])  # room 0, 4 and 0 voxels


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
    params = {"gamma": None, "bias": draw, "motion": None, "resolution": None, "mask": None, "flip": None}
    image = finish(torch.ones(1, 1, *shape), torch.ones(1, *shape, dtype=torch.long), params, torch.ones(1, 3))[0][0]
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
    table = score_label_maps([paths[0]], [paths[1]])
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
