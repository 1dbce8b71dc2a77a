import dataclasses
import json

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
import torch

from fss.explorer import configured, slider_description
from fss.labels import to_meta_labels
from fss.seeds import compose_seed_map, make_seeds
from fss.synth import STAGES, Generator, GeneratorConfig, SynthSubject, load_config, motion, preset, stages, up_to_stage
from fss.synth.config import (
    PRESETS,
    REFERENCE_MM,
    BiasConfig,
    ContrastConfig,
    FlipConfig,
    GammaConfig,
    MaskConfig,
    MotionConfig,
    ResolutionConfig,
    SpatialConfig,
    StageConfig,
    SubclassConfig,
    option,
    range_options,
)
from fss.synth.contrast import apply_contrast, draw_contrast
from fss.synth.dataset import SyntheticBatches
from fss.synth.gamma import GammaDraw
from fss.synth.generator import params_from_json, params_to_json
from fss.synth.motion import slab_motion
from fss.synth.resolution import acquired_voxel_size, apply_resolution, draw_resolution
from fss.synth.spatial import draw_spatial, integrate_velocity, sampling_positions
from fss.synth.stages import ACQUISITION_STAGES, DRAW_ORDER, STAGE_DRAWS, finish
from fss.synth.views import partial_volume_views, stage_views
from fss.viz import plot_partial_volume, plot_stages

SHAPE = (24, 28, 20)
OFF = GeneratorConfig(
    spatial=SpatialConfig(enabled=False),
    contrast=ContrastConfig(enabled=False),
    gamma=GammaConfig(enabled=False),
    bias=BiasConfig(enabled=False),
    resolution=ResolutionConfig(enabled=False),
    flip=FlipConfig(enabled=False),
)


def make_subject(name="sub-a", shift=0):
    """A small asymmetric 'brain': nested FeTA tissues, an image with two populations per tissue, seeds K = 1..4."""
    rng = np.random.default_rng(shift)
    labels = np.zeros(SHAPE, np.int16)
    labels[3:21, 4:24, 3:17] = 1
    labels[5:19, 6:22, 5:15] = 2
    labels[7:17, 8:20, 6:14] = 3
    labels[8:11, 10:13, 8:11] = 4
    labels[12 + shift : 15 + shift, 15:18, 7:10] = 6
    labels[9:12, 16:19, 11:13] = 5
    labels[14:16, 9:11, 11:13] = 7
    image = (40 * labels + rng.normal(0, 5, SHAPE) + 20 * (rng.random(SHAPE) < 0.5)).astype(np.float32)
    image[labels == 0] = 0
    image[0:2] = 30 + rng.random((2, *SHAPE[1:])) * 10  # some non-brain signal
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    seeds = make_seeds(nib.Nifti1Image(image, affine), nib.Nifti1Image(labels, affine), max_subclasses=4, seed=0)
    return SynthSubject(name, seeds, labels)


@pytest.fixture(scope="module")
def subject():
    return make_subject()


def test_shapes_dtypes_and_ranges(subject):
    generator = Generator([subject], preset("reference"), device="cpu")
    sample = generator.sample(3, seed=1)
    assert sample.image.shape == (3, 1, *SHAPE) and sample.image.dtype == torch.float32
    assert sample.labels.shape == (3, *SHAPE) and sample.labels.dtype == torch.int64
    assert sample.seed_map.shape == (3, *SHAPE) and sample.seed_map.dtype == torch.uint8
    assert float(sample.image.min()) >= 0 and torch.allclose(sample.image.amax(dim=(1, 2, 3, 4)), torch.ones(3))
    assert set(sample.labels.unique().tolist()) <= set(range(8)) and len(sample.labels.unique()) >= 6


def test_smaller_output_is_a_crop(subject):
    config = GeneratorConfig(output_shape=(16, 16, 12))
    sample = Generator([subject], config, device="cpu").sample(2, seed=0)
    assert sample.image.shape == (2, 1, 16, 16, 12) and sample.labels.shape == (2, 16, 16, 12)


def test_the_output_affine_places_the_centred_window_of_the_subject(subject):
    config = dataclasses.replace(OFF, output_shape=(16, 16, 12))
    generator = Generator([subject], config, device="cpu")
    sample = generator.sample(1, seed=0)
    offset = ((24 - 16) // 2, (28 - 16) // 2, (20 - 12) // 2)
    window = tuple(slice(o, o + n) for o, n in zip(offset, (16, 16, 12)))
    assert torch.equal(sample.labels[0], torch.from_numpy(subject.labels[window].astype(np.int64)))
    expected = subject.seeds.affine.copy()
    expected[:3, 3] += subject.seeds.affine[:3, :3] @ np.array(offset)  # output voxel 0 is subject voxel `offset`
    np.testing.assert_allclose(generator.output_affine(0), expected)


def test_seeds_and_labels_are_deformed_identically(subject):
    sample = Generator([subject], preset("reference"), device="cpu").sample(4, seed=3)
    meta_of_seeds = (sample.seed_map // 10).long()
    meta_of_labels = torch.from_numpy(to_meta_labels(sample.labels.numpy()).astype(np.int64))
    brain = sample.labels > 0
    assert torch.equal(meta_of_seeds[brain], meta_of_labels[brain])
    assert set(meta_of_seeds[~brain].unique().tolist()) <= {0, 4}


def test_without_intensity_stages_the_image_is_the_deformed_label_means(subject):
    config = GeneratorConfig(
        spatial=SpatialConfig(image_interpolation="nearest"),
        contrast=ContrastConfig(std_min=0.0, std_max=0.0),
        gamma=GammaConfig(enabled=False),
        bias=BiasConfig(enabled=False),
        resolution=ResolutionConfig(enabled=False),
    )
    generator = Generator([subject], config, device="cpu")
    sample = generator.sample(2, seed=5)
    for b in range(2):
        means = sample.params["contrast"].means[b].float()
        expected = means[sample.seed_map[b].long()]
        assert torch.equal(sample.image[b, 0], expected / expected.max())
    plain = generator.apply({**sample.params, "contrast": None})
    assert torch.equal(plain.image[:, 0], sample.seed_map.float() / sample.seed_map.float().amax(dim=(1, 2, 3), keepdim=True))


def test_linear_image_is_the_source_mixture_resampled_linearly_with_partial_volume_at_edges(subject):
    config = GeneratorConfig(
        contrast=ContrastConfig(std_min=0.0, std_max=0.0, background_zero_probability=0.0),
        gamma=GammaConfig(enabled=False),
        bias=BiasConfig(enabled=False),
        resolution=ResolutionConfig(enabled=False),
        flip=FlipConfig(enabled=False),
    )
    generator = Generator([subject], config, device="cpu")
    sample = generator.sample(2, seed=5)
    positions = sampling_positions(
        sample.params["spatial"], config.spatial, SHAPE, torch.tensor([SHAPE] * 2), torch.full((2, 3), 0.8), torch.device("cpu")
    )
    for b in range(2):
        ks = dict(zip(range(1, 5), sample.params["subclasses"][b].tolist()))
        means = sample.params["contrast"].means[b]
        source = means[torch.from_numpy(compose_seed_map(subject.seeds, {m: ks[m] for m in subject.seeds.meta_labels})).long()].numpy()
        # trilinear interpolation by hand, outside the volume the background mean
        index = positions[b].double().numpy()
        low = np.floor(index).astype(int)
        expected = np.zeros(SHAPE)
        for corner in np.ndindex(2, 2, 2):
            at = low + np.array(corner).reshape(3, 1, 1, 1)
            weight = np.prod([1 - np.abs(index[a] - at[a]) for a in range(3)], axis=0)
            inside = np.all([(at[a] >= 0) & (at[a] < SHAPE[a]) for a in range(3)], axis=0)
            values = np.where(inside, source[tuple(np.clip(at[a], 0, SHAPE[a] - 1) for a in range(3))], float(means[0]))
            expected += weight * values
        image = sample.image[b, 0].double().numpy()
        np.testing.assert_allclose(image, expected / expected.max(), atol=1e-5)
        # edges carry partial volume: voxels between the two tissue levels that nearest reading never makes
        levels = np.unique(source / expected.max())
        assert np.mean(np.abs(image[..., None] - levels).min(-1) > 1e-3) > 0.05


def test_every_stage_off_is_the_identity_of_the_subject_each_sample_drew(subject):
    subjects = [subject, make_subject("sub-b", shift=2)]
    sample = Generator(subjects, OFF, device="cpu").sample(6, seed=0)
    drawn = sample.params["subject"].tolist()
    assert set(drawn) == {0, 1}, "both subjects must be drawn for the test to mean anything"
    assert not np.array_equal(subjects[0].labels, subjects[1].labels)
    for b, s in enumerate(drawn):
        assert torch.equal(sample.labels[b], torch.from_numpy(subjects[s].labels.astype(np.int64))), f"sample {b} of subject {s}"
        ks = dict(zip(range(1, 5), sample.params["subclasses"][b].tolist()))
        composed = compose_seed_map(subjects[s].seeds, {m: ks[m] for m in subjects[s].seeds.meta_labels})
        assert torch.equal(sample.seed_map[b], torch.from_numpy(composed))


def test_stages_name_every_drawn_stage_in_the_order_they_are_applied(subject):
    generator = Generator([subject], preset("fetal"), device="cpu")
    params = generator.draw(1, seed=3)
    assert set(STAGES) == set(params) - {"subject", "subclasses"}
    assert STAGES.index("motion") < STAGES.index("resolution") < STAGES.index("flip")  # motion is left by reconstruction, before the blur
    assert torch.equal(generator.apply(up_to_stage(params, "flip")).image, generator.apply(params).image)
    after_motion = up_to_stage(params, "motion")
    assert after_motion["motion"] is params["motion"] and after_motion["resolution"] is None and after_motion["flip"] is None
    assert all(up_to_stage(params, "subclasses")[stage] is None for stage in STAGES)
    with pytest.raises(ValueError, match="stage must be"):
        up_to_stage(params, "noise")


def test_same_seed_bit_identical_replay_and_json(subject):
    generator = Generator([subject, make_subject("sub-b", shift=2)], preset("reference"), device="cpu")
    first, second = generator.sample(2, seed=11), generator.sample(2, seed=11)
    assert torch.equal(first.image, second.image) and torch.equal(first.labels, second.labels)
    replayed = generator.replay(first.params)
    assert torch.equal(replayed.image, first.image)
    records = json.loads(json.dumps(params_to_json(first.params)))
    from_json = generator.replay(params_from_json(records))
    assert torch.equal(from_json.image, first.image) and torch.equal(from_json.labels, first.labels)
    assert not torch.equal(generator.sample(2, seed=12).image, first.image)


def test_fetal_preset_adds_slab_motion_and_leaves_every_other_draw_as_in_reference(subject):
    reference = Generator([subject], preset("reference"), device="cpu")
    fetal = Generator([subject], dataclasses.replace(preset("fetal"), motion=MotionConfig(enabled=True, probability=1.0)), device="cpu")
    plain, moved = reference.sample(2, seed=5), fetal.sample(2, seed=5)
    assert plain.params["motion"] is None and moved.params["motion"].apply.all()
    plain_records, moved_records = params_to_json(plain.params), params_to_json(moved.params)
    for plain_record, moved_record in zip(plain_records, moved_records):
        assert {k: v for k, v in moved_record.items() if k != "motion"} == {k: v for k, v in plain_record.items() if k != "motion"}
    assert torch.equal(plain.labels, moved.labels) and not torch.equal(plain.image, moved.image)
    records = json.loads(json.dumps(params_to_json(moved.params)))
    assert torch.equal(fetal.replay(params_from_json(records)).image, moved.image)


def test_slab_motion_moves_whole_slabs_rigidly_within_their_plane():
    volume = torch.zeros(1, 1, 20, 24, 18)
    volume[0, 0, 6:14, 8:16] = 1.0  # a bar along the slice axis
    moved = slab_motion(volume, (1.0, 1.0, 1.0), slab_mm=3.0, shift_mm=1.5, angle_deg=0.0, gain=0.0, seed=1)
    assert torch.equal(slab_motion(volume, (1.0, 1.0, 1.0), 3.0, 1.5, 0.0, 0.0, seed=1), moved)
    per_slice = moved[0, 0].sum(dim=(0, 1))
    torch.testing.assert_close(per_slice, volume[0, 0].sum(dim=(0, 1)), rtol=1e-4, atol=1e-4)  # content kept, only moved
    for start in range(0, 18, 3):  # the slices of one slab moved alike, neighbouring slabs differently
        slab = moved[0, 0, :, :, start : start + 3]
        assert torch.allclose(slab, slab[..., :1].expand_as(slab))
    assert not torch.allclose(moved[0, 0, :, :, 0], moved[0, 0, :, :, 3])
    stepped = slab_motion(volume, (1.0, 1.0, 1.0), 3.0, 0.0, 0.0, gain=0.1, seed=1)[0, 0].amax(dim=(0, 1))
    assert sorted({round(float(v), 4) for v in stepped}) == [0.9, 1.1]


@pytest.mark.parametrize("slices_per_chunk", [1, 4])
def test_slab_motion_moved_a_few_slices_at_a_time_equals_all_at_once(monkeypatch, slices_per_chunk):
    volume = torch.rand(1, 2, 10, 12, 18, generator=torch.Generator().manual_seed(0))
    arguments = ((0.9, 1.1, 1.3), 3.0, 1.5, 6.0, 0.05, 2)
    monkeypatch.setattr(motion, "SAMPLED_VOXELS_PER_CHUNK", 10**9)
    at_once = slab_motion(volume, *arguments)
    monkeypatch.setattr(motion, "SAMPLED_VOXELS_PER_CHUNK", 10 * 12 * slices_per_chunk)  # 4 does not divide 18: a short last chunk
    assert torch.equal(slab_motion(volume, *arguments), at_once)


def test_another_configuration_shares_the_packed_subjects_and_draws_as_a_new_generator(subject):
    generator = Generator([subject], preset("reference"), device="cpu")
    changed = dataclasses.replace(preset("reference"), spatial=SpatialConfig(max_rotation=40.0))
    shared = generator.with_config(changed)
    assert shared._volumes is generator._volumes and generator.config == preset("reference")
    fresh = Generator([subject], changed, device="cpu")
    assert torch.equal(shared.sample(1, seed=4).image, fresh.sample(1, seed=4).image)
    assert generator.with_config(dataclasses.replace(changed, output_shape=(16, 16, 16))).output_shape == (16, 16, 16)


def test_a_voxel_that_rounding_left_just_below_zero_does_not_make_the_gamma_stage_nan():
    # the value the linear read of the contrast left in a batch of the packaged recipe, where a voxel of 0 met a
    # background of 222.7; gamma made it NaN and the normalisation by the maximum the whole sample
    image = torch.full((1, 1, 6, 6, 6), 120.0)
    image[0, 0, 2, 3, 1] = -1.9073486328125e-06
    labels = torch.ones((1, 6, 6, 6), dtype=torch.long)
    params = {name: None for name in STAGES} | {"gamma": GammaDraw(torch.tensor([-0.0220], dtype=torch.float64))}
    finished, _ = finish(image, labels, params, torch.ones(1, 3))
    assert torch.isfinite(finished).all() and finished[0, 0, 2, 3, 1] == 0 and finished.max() == 1


def test_contrast_means_fall_inside_the_configured_range():
    config = ContrastConfig(mean_min=25.0, mean_max=225.0, std_min=5.0, std_max=25.0)
    seed_map = torch.arange(44, dtype=torch.uint8).repeat_interleave(2000).view(1, 44, 50, 40)
    generator = torch.Generator().manual_seed(0)
    means, zero_background = [], []
    for _ in range(50):
        params = draw_contrast(config, 1, generator)
        image = apply_contrast(seed_map, params)[0, 0].double()
        sums = torch.bincount(seed_map[0].long().ravel(), weights=image.ravel(), minlength=44)
        per_label = sums / torch.bincount(seed_map[0].long().ravel(), minlength=44)
        means.append(per_label[1:])
        zero_background.append(float(per_label[0]) < 20)  # half-normal of std <= 25 around 0
    means = torch.cat(means)
    assert float(means.min()) >= 25 - 1.5 and float(means.max()) <= 225 + 1.5  # a label mean of 2000 voxels
    assert float(means.min()) < 35 and float(means.max()) > 215, "draws should cover the range"
    assert 0.3 < np.mean(zero_background) < 0.7


def test_integrated_deformation_has_a_positive_jacobian():
    torch.manual_seed(0)
    shape = (64, 64, 64)
    velocity = torch.nn.functional.interpolate(torch.randn(1, 3, 4, 4, 4) * 4.0, size=(16, 16, 16), mode="trilinear", align_corners=True)
    displacement = integrate_velocity(velocity, shape, steps=8)
    spacing = [(n - 1) / (g - 1) for n, g in zip(shape, displacement.shape[2:])]
    gradients = [torch.gradient(displacement[0, i], spacing=spacing) for i in range(3)]
    jacobian = torch.stack([torch.stack(g) for g in gradients]) + torch.eye(3).view(3, 3, 1, 1, 1)
    determinant = torch.linalg.det(jacobian.permute(2, 3, 4, 0, 1))
    assert float(determinant.min()) > 0
    assert float(displacement.abs().max()) > 1, "the test field should deform noticeably"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_deforms_without_folding_space(name):
    config = preset(name).spatial
    shape, draws = (64, 80, 64), 40  # where a preset without integration folded space in 1 of 40 draws
    params = draw_spatial(config, draws, torch.Generator().manual_seed(0))
    positions = sampling_positions(params, config, shape, torch.tensor([shape] * draws), torch.full((draws, 3), 0.8), torch.device("cpu"))
    for b in range(draws):
        jacobian = torch.stack([torch.stack(torch.gradient(positions[b, i])) for i in range(3)])
        assert float(torch.linalg.det(jacobian.permute(2, 3, 4, 0, 1)).min()) > 0, f"draw {b} folds space"


def test_flip_moves_labels_with_the_image(subject):
    config = GeneratorConfig(
        spatial=SpatialConfig(enabled=False),
        gamma=GammaConfig(enabled=False),
        bias=BiasConfig(enabled=False),
        resolution=ResolutionConfig(enabled=False),
        contrast=ContrastConfig(std_min=0.0, std_max=0.0),
        flip=FlipConfig(probability=1.0),
    )
    sample = Generator([subject], config, device="cpu").sample(1, seed=0)
    assert torch.equal(sample.labels[0], torch.from_numpy(subject.labels.astype(np.int64)).flip(0))
    means = sample.params["contrast"].means[0].float()
    expected = means[sample.seed_map[0].long()]
    assert torch.allclose(sample.image[0, 0], expected / expected.max(), atol=1e-5), "image and labels must be flipped together"


def test_batches_never_repeat_and_resume_at_their_step(subject):
    generator = Generator([subject], preset("reference"), device="cpu")
    batches = SyntheticBatches(generator, batch_size=2, seed=4)
    first, second, third = next(batches), next(batches), next(batches)
    assert first.image.shape == (2, 1, *SHAPE) and not torch.equal(first.image[0], first.image[1])
    assert not torch.equal(first.image, second.image) and not torch.equal(second.image, third.image)
    resumed = SyntheticBatches(generator, batch_size=2, seed=4, start=2)
    assert torch.equal(next(resumed).image, third.image) and resumed.step == 3
    assert not torch.equal(next(SyntheticBatches(generator, 2, seed=4, rank=1)).image, first.image)


def test_configuration_yaml_round_trip_and_validation(tmp_path):
    config = GeneratorConfig(output_shape=(64, 64, 48), spatial=SpatialConfig(max_rotation=10.0))
    path = config.save(tmp_path / "synth.yaml")
    assert GeneratorConfig.load(path) == config
    assert load_config(path) == config and load_config("literal") == preset("literal")
    (tmp_path / "bad.yaml").write_text("spatial:\n  max_rotaton: 5\n")
    with pytest.raises(ValueError, match=r"unknown spatial options \['max_rotaton'\]"):
        GeneratorConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="need 0 <= mean_min <= mean_max"):
        ContrastConfig(mean_min=200.0, mean_max=100.0)
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("turbo")
    with pytest.raises(ValueError, match="image_interpolation must be one of"):
        SpatialConfig(image_interpolation="cubic")
    with pytest.raises(ValueError, match="native_noise_grid"):
        ResolutionConfig(native_noise_grid=0.5)


EXPECTED_RANGES = {
    SubclassConfig: {"min_subclasses"},
    SpatialConfig: {"nonlin_scale_min"},
    ContrastConfig: {"mean_min", "std_min"},
    GammaConfig: set(),
    BiasConfig: {"bf_scale_min", "bf_std_min"},
    ResolutionConfig: {"min_resampling_iso_res", "noise_std_min", "slice_mm_min"},
    MotionConfig: {"slab_mm_min"},
    MaskConfig: {"margin_mm_min"},
    FlipConfig: set(),
}


@pytest.mark.parametrize("stage", list(EXPECTED_RANGES), ids=lambda stage: stage.__name__)
def test_every_range_is_a_min_max_pair_checked_on_creation(stage):
    section = stage()
    ranges = range_options(section)
    assert set(ranges) == EXPECTED_RANGES[stage]
    assert not [f.name for f in dataclasses.fields(section) if isinstance(getattr(section, f.name), tuple)]  # no (low, high) tuples
    for lower, upper in ranges.items():
        assert upper in (lower.replace("_min", "_max"), lower.replace("min_", "max_"))  # named as the reference names a range
        high = getattr(section, upper)
        with pytest.raises(ValueError, match=f"{lower} <= {upper}"):
            stage(**{lower: high + 1, upper: high})
    bounds = [f.name for f in dataclasses.fields(section) if f.name.endswith("_max") or f.name.startswith("max_")]
    for bound in set(bounds) - {name for pair in ranges.items() for name in pair}:  # bounds of a size from 0
        with pytest.raises(ValueError, match=f"{bound} must not be negative"):
            stage(**{bound: -1.0})


def test_an_option_whose_range_names_no_option_or_that_is_undeclared_is_an_error_not_a_dropped_check():
    @dataclasses.dataclass(frozen=True)
    class Renamed(StageConfig):
        width_min: float = option(1.0, "narrowest", "mm", at_least=0, upper="width_max")
        widest: float = option(2.0, "widest", "mm")  # was width_max

    with pytest.raises(TypeError, match="ends its range at 'width_max', which is not an option"):
        Renamed()

    @dataclasses.dataclass(frozen=True)
    class Undeclared(StageConfig):
        width: float = 1.0

    with pytest.raises(TypeError, match=r"Undeclared.width is not declared with option\(\)"):
        Undeclared()


def test_the_registry_names_every_configured_stage_and_draws_each_once():
    configured = {f.name for f in dataclasses.fields(GeneratorConfig)} - {"output_shape", "subclasses"}
    assert set(STAGES) == configured and sorted(DRAW_ORDER) == sorted(STAGES)
    assert set(STAGE_DRAWS) == set(STAGES) - {"flip"}  # the flip is one tensor
    assert ACQUISITION_STAGES == tuple(name for name in DRAW_ORDER if name not in ("spatial", "contrast"))


def test_finish_applies_the_registered_stages_in_the_registrys_order(monkeypatch):
    applied = []

    def recording(name):
        def apply(image, labels, draws, spacings):
            applied.append((name, draws))
            return image + 1, labels

        return stages.Stage(name, name, None, lambda config, batch_size, generator: None, apply)

    monkeypatch.setattr(stages, "STAGE_REGISTRY", (recording("first"), recording("off"), recording("second")))
    image, labels = stages.finish(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 2, 2, 2), {"first": "a", "second": "b"}, torch.ones(1, 3))
    assert applied == [("first", "a"), ("second", "b")] and torch.equal(image, torch.ones(1, 1, 2, 2, 2))  # normalised at the end


def test_explorer_resolution_slider_speaks_the_presets_units():
    assert slider_description(preset("reference"), "resolution", "max_resampling_iso_res") == "worst resolution (mm)"
    assert slider_description(preset("clinical"), "resolution", "max_resampling_iso_res") == "worst resolution (voxels)"
    assert slider_description(preset("clinical"), "spatial", "max_rotation") == "rotation (deg)"


def test_explorer_slider_on_a_range_takes_its_lower_end_down():
    config = preset("reference")
    moved = configured(config, {("bias", "bf_std_max"): 0.005, ("gamma", "gamma_std"): 0.3, ("contrast", "std_max"): 40.0})
    assert (moved.bias.bf_std_min, moved.bias.bf_std_max) == (0.005, 0.005)
    assert (moved.contrast.std_min, moved.contrast.std_max) == (config.contrast.std_min, 40.0)
    assert moved.gamma.gamma_std == 0.3 and moved.spatial == config.spatial


def test_reference_preset_acquires_at_the_reference_effective_resolutions_and_literal_reads_them_as_written():
    reference, literal = preset("reference").resolution, preset("literal").resolution
    assert (reference.min_resampling_iso_res, reference.max_resampling_iso_res) == (0.354, 1.061)
    assert (literal.min_resampling_iso_res, literal.max_resampling_iso_res) == (0.5, 1.5)
    size, blurred = acquired_voxel_size(draw_resolution(reference, 20_000, torch.Generator().manual_seed(0)), 0.5)
    modelled, modelled_blurred = acquired_voxel_size(draw_resolution(literal, 20_000, torch.Generator().manual_seed(0)), 0.5, REFERENCE_MM)
    assert abs(float(size.max()) - float(modelled.max())) < 0.01
    assert abs(float(blurred.double().mean()) - float(modelled_blurred.double().mean())) < 0.01  # 63% blurred in both
    assert abs(float(blurred.double().mean()) - 0.634) < 0.02


def test_native_noise_comes_from_a_finer_grid_and_is_weaker_only_where_the_resolution_is_kept():
    shape = (40, 40, 40)
    noise = {}
    for grid in (1.0, 1.414):
        config = ResolutionConfig(preserve_resol=1.0, native_noise_grid=grid, noise_std_min=10.0, noise_std_max=10.0)
        params = draw_resolution(config, 1, torch.Generator().manual_seed(3))
        noise[grid] = apply_resolution(torch.full((1, 1, *shape), 100.0), params, torch.full((1, 3), 0.5))[0, 0] - 100
    inner = (slice(2, -2),) * 3
    white, fine = noise[1.0][inner], noise[1.414][inner]
    assert abs(float(white.std()) - 10) < 0.3 and abs(float(fine.std()) - 5.4) < 0.8  # the reference keeps about 0.54 of it
    blurred = draw_resolution(ResolutionConfig(preserve_resol=0.0, native_noise_grid=1.414), 1, torch.Generator().manual_seed(3))
    low = apply_resolution(torch.full((1, 1, *shape), 100.0), blurred, torch.full((1, 3), 0.5))
    same = apply_resolution(
        torch.full((1, 1, *shape), 100.0), dataclasses.replace(blurred, native_noise_grid=torch.ones(1, dtype=torch.float64)), torch.full((1, 3), 0.5)
    )
    assert torch.equal(low, same), "the grid only concerns images that keep their resolution"


def test_generator_refuses_bad_subjects(subject):
    other = make_subject("sub-c")
    other.labels = other.labels[:20]
    with pytest.raises(ValueError, match="different shapes"):
        Generator([subject, other], preset("reference"), device="cpu")
    with pytest.raises(ValueError, match="at most 4"):
        Generator([subject], GeneratorConfig(subclasses=SubclassConfig(max_subclasses=5)), device="cpu")
    for labels, found in ((np.where(subject.labels == 1, 8, subject.labels), "values 0 to 8"), (subject.labels + 0.5, "fractional values")):
        atlas = make_subject("sub-d")
        atlas.labels = labels  # atlas-convention labels (8: a label FeTA has not), or interpolated ones
        with pytest.raises(ValueError, match=f"sub-d: the labels hold {found}, not FeTA tissues 0-7"):
            Generator([atlas], preset("reference"), device="cpu")
    cut = make_subject("sub-e")
    cut.labels = cut.labels[:20]
    with pytest.raises(ValueError, match=r"sub-e: a label map of shape \(20, 28, 20\) and seeds of shape \(24, 28, 20\)"):
        Generator([cut], preset("reference"), device="cpu")
    with pytest.raises(TypeError, match="^config: expected a GeneratorConfig .* got dict"):
        Generator([subject], {"flip": {"enabled": False}}, device="cpu")


def test_a_batch_size_or_seed_that_draws_nothing_sensible_is_refused_naming_the_argument(subject):
    generator = Generator([subject], preset("reference"), device="cpu")
    for batch_size in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"^batch_size: expected a whole number of samples, 1 or more, got {batch_size!r}"):
            generator.sample(batch_size)
    for seed in ("abc", 2**64, -1, 0.5):
        with pytest.raises(ValueError, match="^seed: expected a whole number from 0 to 2\\*\\*64 - 1"):
            generator.sample(1, seed=seed)
    assert generator.draw(1, seed=2**64 - 1)["subject"].shape == (1,)


@pytest.mark.gpu
def test_cpu_and_cuda_agree_statistically(subject):
    config = preset("reference")
    cpu = Generator([subject], config, device="cpu")
    cuda = Generator([subject], config, device="cuda")
    params = cpu.draw(8, seed=0)
    on_cpu, on_cuda = cpu.apply(params), cuda.apply(params)
    assert on_cuda.image.device.type == "cuda"
    agreement = (on_cpu.labels == on_cuda.labels.cpu()).float().mean()
    assert agreement > 0.995, f"labels agree on {agreement:.4f} of voxels"
    brain = on_cpu.labels > 0
    for b in range(8):
        cpu_mean, cuda_mean = on_cpu.image[b, 0][brain[b]].mean(), on_cuda.image[b, 0].cpu()[brain[b]].mean()
        assert abs(cpu_mean - cuda_mean) < 0.05, (b, float(cpu_mean), float(cuda_mean))


def test_cli_writes_pairs_with_replayable_parameters(tmp_path, capsys):
    from fss.cli import main
    from fss.io import save_nifti
    from fss.seeds import labels_path, save_seeds
    from fss.synth import load_subjects
    from fss.synth.export import sample_paths

    subject = make_subject()
    save_seeds(subject.seeds, tmp_path / "seeds", "a", "sub-a_dseg")
    save_nifti(subject.labels, subject.seeds.affine, labels_path(tmp_path / "seeds", "a", "sub-a_dseg"))
    args = [
        "synth",
        "--seeds",
        str(tmp_path / "seeds"),
        "--n",
        "3",
        "--out",
        str(tmp_path / "out"),
        "--config",
        "literal",
        "--seed",
        "7",
        "--output-shape",
        "16",
        "20",
        "16",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "3 samples from 1 subjects" in capsys.readouterr().out
    paths = sample_paths(tmp_path / "out", 2)
    image, labels = nib.load(paths["image"]), nib.load(paths["labels"])
    assert image.shape == labels.shape == (16, 20, 16) and np.allclose(image.affine, labels.affine)
    assert np.allclose(image.header.get_zooms(), 0.8)
    record = json.loads(paths["params"].read_text())
    assert record["subject"] == "sub-a"
    generator = Generator(load_subjects(tmp_path / "seeds"), load_config(tmp_path / "out" / "synth_config.yaml"), device="cpu")
    replayed = generator.replay(params_from_json([record["params"]]))
    np.testing.assert_array_equal(replayed.labels[0].numpy(), np.asarray(labels.dataobj))
    np.testing.assert_allclose(replayed.image[0, 0].numpy(), np.asarray(image.dataobj), atol=1e-6)

    assert main(args) == 0
    assert "3 samples (3 of them kept from an earlier run of the same set)" in capsys.readouterr().out
    assert main([*args[:-2], "--seed", "8", "--device", "cpu"]) == 1
    assert "holds 3 samples (first: sub-synth0000) of another set: its seed differs" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_every_option_has_a_meaning_and_a_unit():
    from fss.synth.config import OPTION_DOCS, _stage_types

    options = {(stage, f.name) for stage, stage_type in _stage_types().items() for f in dataclasses.fields(stage_type)}
    assert set(OPTION_DOCS) == options
    assert all(meaning and unit for meaning, unit in OPTION_DOCS.values())


def test_stage_views_add_one_stage_per_row_and_show_what_each_changed(subject):
    config = dataclasses.replace(preset("reference"), bias=BiasConfig(bf_std_min=0.3, bf_std_max=0.4))
    generator = Generator([subject], config, device="cpu")
    params = generator.draw(1, seed=3)
    views = stage_views(generator, params, z=10)
    assert [view.stage for view in views] == ["subclasses", *STAGES]
    assert views[0].title == "1. subclasses: seed map" and views[-1].title == "9. left-right flip"
    assert views[STAGES.index("motion") + 1].title.endswith("(off here)")  # the reference draws no motion
    whole = generator.apply(params)
    np.testing.assert_array_equal(views[-1].image, whole.image[0, 0, :, :, 10].numpy())
    np.testing.assert_array_equal(views[-1].labels, whole.labels[0, :, :, 10].numpy())
    assert views[1].change is None and views[2].change is None  # the spatial and contrast rows: nothing to compare with
    for before, after in zip(views[2:], views[3:]):
        np.testing.assert_allclose(after.change, after.image - before.image)
    assert [view.stage for view in views if view.bias_field is not None] == ["bias"]
    slices = [a for view in views for a in (view.seed_map, view.labels, view.image, view.change, view.bias_field) if a is not None]
    assert all(a.flags.owndata for a in slices)  # a view into a sample would keep its whole volume alive (notebook 02's memory)
    field = views[STAGES.index("bias") + 1].bias_field
    assert field.min() > 0 and field.std() > 0.05  # a multiplicative field of a few tens of percent
    figure = plot_stages(views[4:7])
    assert len(figure.axes) == 3 * 2 + 1  # two panels per stage and the bias field's colour bar
    plt.close(figure)


def test_partial_volume_views_read_the_contrast_both_ways_across_thin_cortex(subject):
    config = dataclasses.replace(preset("reference"), spatial=SpatialConfig(enabled=False))
    generator = Generator([subject], config, device="cpu")
    params = generator.draw(1, seed=5)
    view = partial_volume_views(generator, params)
    first, last = view.cortex
    line = view.labels[:, view.line]
    assert (line[first : last + 1] == 2).all() and 2 not in line[:first] and line[last + 1] != 2  # across the cortex once
    assert last - first + 1 == 2  # the little brain's cortex is two voxels thick
    assert all(a.flags.owndata for a in (view.labels, *view.windows.values(), *view.profiles.values()))  # not views of whole volumes
    nearest, linear = view.profiles["nearest"], view.profiles["linear"]
    assert nearest.shape == linear.shape == (view.windows["linear"].shape[0],) and not np.array_equal(nearest, linear)
    with pytest.raises(ValueError, match="no column of the middle slice crosses cortex thinner than 1 voxels"):
        partial_volume_views(generator, params, thickest=1)
    figure = plot_partial_volume(view)
    assert figure.axes[2].get_xlabel() == "voxel along the orange line"
    plt.close(figure)
