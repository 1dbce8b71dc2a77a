"""Configuration of the generator: one dataclass per stage, the reference defaults, presets, YAML.

Names and defaults follow the reference method (FetalSynthSeg, built on SynthSeg as
re-implemented by Brain-ID). Every range is a pair of options named as the reference names
its own, ``X_min`` and ``X_max`` (or ``min_X`` and ``max_X``), and is checked when a
configuration is made (:func:`range_options`).

Example
-------
>>> config = preset("literal")
>>> config.spatial.image_interpolation
'nearest'
>>> GeneratorConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from fss.config_checks import check_options, check_types, read_yaml_file
from fss.paths import atomic_path


def range_options(section) -> dict[str, tuple[str, str]]:
    """The ranges of one stage's configuration: ``{quantity: (lower option, upper option)}``.

    Found by name: ``X_min`` with ``X_max``, or ``min_X`` with ``max_X``.
    """
    names = [f.name for f in dataclasses.fields(section)]
    ranges = {}
    for name in names:
        if name.endswith("_min") and f"{name[:-4]}_max" in names:
            ranges[name[:-4]] = (name, f"{name[:-4]}_max")
        elif name.startswith("min_") and f"max_{name[4:]}" in names:
            ranges[name[4:]] = (name, f"max_{name[4:]}")
    return ranges


def _lone_bounds(section) -> list[str]:
    """Options named as an upper bound (``X_max``, ``max_X``) that have no lower partner: bounds of a size from 0."""
    paired = {name for pair in range_options(section).values() for name in pair}
    names = [f.name for f in dataclasses.fields(section)]
    return [n for n in names if (n.endswith("_max") or n.startswith("max_")) and n not in paired]


@dataclass(frozen=True)
class StageConfig:
    """Base of the configuration of one stage: checked when it is made.

    The type of every option (:func:`fss.config_checks.check_types`), every range
    (``floor <= lower <= upper``, the floor 0 unless ``FLOORS`` gives one for the quantity),
    every upper bound without a lower partner (not negative), then the stage's own rules
    (:meth:`check`).
    """

    FLOORS: ClassVar[dict[str, float]] = {}

    def __post_init__(self):
        check_types(self)
        for quantity, (lower, upper) in range_options(self).items():
            floor, low, high = self.FLOORS.get(quantity, 0.0), getattr(self, lower), getattr(self, upper)
            if not floor <= low <= high:
                raise ValueError(f"need {floor} <= {lower} <= {upper}, got {low} and {high}")
        for name in _lone_bounds(self):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        self.check()

    def check(self) -> None:
        """The stage's own rules, beyond types and ranges."""


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


IMAGE_INTERPOLATIONS = ("linear", "nearest")

REFERENCE_MM = 0.5 / 0.5**0.5
"""True millimetres per millimetre of the reference: it reads the spacing of a 0.5 mm volume as
sqrt(0.5) = 0.707 mm, so the resolutions it draws in its millimetres are 0.707 times as large
in true ones."""


@dataclass(frozen=True)
class SubclassConfig(StageConfig):
    """Stage 1: number of intensity subclasses drawn per meta-label, uniformly in [min, max]."""

    FLOORS = {"subclasses": 1}

    min_subclasses: int = 1
    max_subclasses: int = 4


@dataclass(frozen=True)
class SpatialConfig(StageConfig):
    """Stage 2: affine and nonlinear deformation, drawn once for seeds and labels.

    Angles in degrees, shear and scaling as fractions, nonlinear std in output voxels. With
    ``random_shift`` the output window moves anywhere the input leaves room for, and up to
    ``shift_beyond`` times the output's size further on each side, so that crops also show the edge
    of the field of view and the background beyond it (read as background, label 0).
    ``image_interpolation`` says how the image reaches the output grid: ``"linear"`` (the
    reference's order: the intensity mixture is drawn on the source grid and the image
    resampled linearly, so tissue edges carry partial volume and the texture is smoothed)
    or ``"nearest"`` (the mixture is drawn on the output grid from the nearest seed: sharp
    edges, white texture). Labels are always read by nearest neighbour.
    """

    enabled: bool = True
    max_rotation: float = 20.0
    max_shear: float = 0.02
    max_scaling: float = 0.1
    random_shift: bool = True
    shift_beyond: float = 0.0
    nonlinear: bool = True
    nonlin_scale_min: float = 0.03
    nonlin_scale_max: float = 0.06
    nonlin_std_max: float = 4.0
    integrate_deformation_fields: bool = True
    n_steps_svf_integration: int = 8
    image_interpolation: str = "linear"

    def check(self):
        if self.image_interpolation not in IMAGE_INTERPOLATIONS:
            raise ValueError(f"image_interpolation must be one of {IMAGE_INTERPOLATIONS}, got {self.image_interpolation!r}")
        if self.max_scaling >= 1:
            raise ValueError(f"max_scaling must be below 1, got {self.max_scaling}")
        if self.n_steps_svf_integration < 0:
            raise ValueError(f"n_steps_svf_integration must not be negative, got {self.n_steps_svf_integration}")


@dataclass(frozen=True)
class ContrastConfig(StageConfig):
    """Stage 3: a Gaussian per seed label, mean and std drawn uniformly (0-300 intensity scale)."""

    enabled: bool = True
    mean_min: float = 25.0
    mean_max: float = 225.0
    std_min: float = 5.0
    std_max: float = 25.0
    background_zero_probability: float = 0.5

    def check(self):
        _check_probability("background_zero_probability", self.background_zero_probability)


@dataclass(frozen=True)
class GammaConfig(StageConfig):
    """Stage 4: intensity -> 300 * (intensity / 300) ** exp(N(0, gamma_std))."""

    enabled: bool = True
    gamma_std: float = 0.1

    def check(self):
        if self.gamma_std < 0:
            raise ValueError(f"gamma_std must not be negative, got {self.gamma_std}")


@dataclass(frozen=True)
class BiasConfig(StageConfig):
    """Stage 5: smooth multiplicative bias, exp of a coarse Gaussian field of size bf_scale * output size."""

    enabled: bool = True
    bf_scale_min: float = 0.004
    bf_scale_max: float = 0.02
    bf_std_min: float = 0.01
    bf_std_max: float = 0.02


RESOLUTION_UNITS = ("mm", "voxels")


@dataclass(frozen=True)
class ResolutionConfig(StageConfig):
    """Stage 6: blur to a random acquisition, resample there, add noise, resample back.

    Isotropic acquisitions are drawn uniformly in ``[min_resampling_iso_res, max_resampling_iso_res]``,
    in ``units``: ``"mm"`` (the reference) or ``"voxels"`` of the working grid, so that one setting
    simulates a loss of resolution at any working spacing (1 to 2 voxels: from the working spacing
    to twice it). With ``units="mm"`` the resolutions are effective millimetres: the reference draws
    0.5-1.5 of its own millimetres, which are ``REFERENCE_MM`` (0.707) true millimetres each, so its
    images are acquired at 0.35-1.06 mm; the ``literal`` preset reads 0.5-1.5 mm as written.

    With probability ``thick_slice_probability`` an acquisition is a thick-slice stack instead: slices
    ``slice_mm_min`` to ``slice_mm_max`` thick (mm, uniform) along a random axis, in-plane
    ``min_resampling_iso_res``; the slice profile is the same Gaussian as the isotropic blur's.

    Images that keep their resolution go through a grid ``native_noise_grid`` times finer
    and back, linearly, getting their noise there, as the reference's round trip through its
    1.41x finer grid does (it keeps about 0.54 of the noise's standard deviation and smooths
    the image slightly); 1 adds the noise voxel by voxel at full strength. Acquisitions coarser
    than the working grid get their noise on the acquired grid.
    """

    FLOORS = {"resampling_iso_res": 1e-3, "slice_mm": 1e-3}

    enabled: bool = True
    preserve_resol: float = 0.2
    units: str = "mm"
    min_resampling_iso_res: float = round(0.5 * REFERENCE_MM, 3)
    max_resampling_iso_res: float = round(1.5 * REFERENCE_MM, 3)
    thick_slice_probability: float = 0.0
    slice_mm_min: float = 2.5
    slice_mm_max: float = 6.5
    noise_std_min: float = 5.0
    noise_std_max: float = 15.0
    native_noise_grid: float = round(1 / REFERENCE_MM, 3)

    def check(self):
        _check_probability("preserve_resol", self.preserve_resol)
        _check_probability("thick_slice_probability", self.thick_slice_probability)
        if self.units not in RESOLUTION_UNITS:
            raise ValueError(f"units must be one of {RESOLUTION_UNITS}, got {self.units!r}")
        if not 1 <= self.native_noise_grid <= 4:
            raise ValueError(f"native_noise_grid must be between 1 and 4, got {self.native_noise_grid}")


@dataclass(frozen=True)
class MaskConfig(StageConfig):
    """Stage 6b, after the resolution (off in ``reference``, on in ``clinical``): a brain mask, as in skull-stripped clinical
    scans.

    With ``probability``, the image is set to 0 beyond the brain (every label above 0) grown by a margin
    uniform in ``[margin_mm_min, margin_mm_max]`` mm (negative: shrunk), and so are the labels there, so
    that the network learns that a zero background holds no tissue.
    """

    FLOORS = {"margin_mm": -math.inf}

    enabled: bool = False
    probability: float = 0.5
    margin_mm_min: float = -1.0
    margin_mm_max: float = 3.0

    def check(self):
        _check_probability("mask probability", self.probability)


@dataclass(frozen=True)
class MotionConfig(StageConfig):
    """Stage 5b, after the bias and before the resolution (off in ``reference``, on in ``fetal``): residual motion after
    super-resolution.

    Slabs ``slab_mm_min`` to ``slab_mm_max`` thick (mm, uniform) along the slice axis, moved rigidly within
    their plane: the standard deviations of a pass's shift (mm) and rotation (degrees) are drawn
    uniform in ``[0, shift_mm_max]`` and ``[0, angle_deg_max]``, the intensity step between the two
    interleaved passes in ``[0, gain_max]`` (see :mod:`fss.synth.motion`).
    """

    FLOORS = {"slab_mm": 1e-3}

    enabled: bool = False
    probability: float = 0.5
    slab_mm_min: float = 2.5
    slab_mm_max: float = 4.5
    shift_mm_max: float = 2.0
    angle_deg_max: float = 5.0
    gain_max: float = 0.15

    def check(self):
        _check_probability("motion probability", self.probability)
        if self.gain_max >= 1:
            raise ValueError(f"gain_max must be below 1 (a gain of 1 blacks out a pass), got {self.gain_max}")


@dataclass(frozen=True)
class FlipConfig(StageConfig):
    """Stage 7: left-right flip of image and labels together."""

    enabled: bool = True
    probability: float = 0.5

    def check(self):
        _check_probability("flip probability", self.probability)


@dataclass(frozen=True)
class GeneratorConfig:
    """All stages, and the output size in voxels (``None``: the input's size)."""

    output_shape: tuple[int, int, int] | None = None
    subclasses: SubclassConfig = field(default_factory=SubclassConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    gamma: GammaConfig = field(default_factory=GammaConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    flip: FlipConfig = field(default_factory=FlipConfig)

    def __post_init__(self):
        check_types(self)
        if self.output_shape is not None and (len(self.output_shape) != 3 or min(self.output_shape) < 2):
            raise ValueError(f"output_shape must be three sizes of at least 2 voxels, got {self.output_shape}")

    def to_dict(self) -> dict:
        """Plain nested dictionary (lists for tuples), as written to YAML."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict) -> GeneratorConfig:
        """Build from a nested dictionary; unknown keys are an error that names them."""
        values = check_options(cls, values, "generator")
        kwargs = {}
        for name, stage_type in _stage_types().items():
            section = check_options(stage_type, values.get(name) or {}, name)
            try:
                kwargs[name] = stage_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from error
        shape = values.get("output_shape")
        return cls(output_shape=tuple(shape) if shape is not None else None, **kwargs)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write as YAML (atomically)."""
        with atomic_path(path, overwrite) as temporary:
            temporary.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneratorConfig:
        """Read a YAML file written by :meth:`save` (missing options take the reference defaults)."""
        values = read_yaml_file(path)
        try:
            return cls.from_dict(values or {})
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error


def _stage_types() -> dict[str, type]:
    return {
        "subclasses": SubclassConfig,
        "spatial": SpatialConfig,
        "contrast": ContrastConfig,
        "gamma": GammaConfig,
        "bias": BiasConfig,
        "resolution": ResolutionConfig,
        "motion": MotionConfig,
        "mask": MaskConfig,
        "flip": FlipConfig,
    }


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


PRESETS = {
    "reference": GeneratorConfig(),
    # The reference's parameters read as written (0.5-1.5 mm, full noise at native resolution)
    # and the mixture drawn on the output grid: fss's generator before it matched the
    # reference's images, kept to measure what matching them changes.
    "literal": GeneratorConfig(
        spatial=SpatialConfig(image_interpolation="nearest"),
        resolution=ResolutionConfig(min_resampling_iso_res=0.5, max_resampling_iso_res=1.5, native_noise_grid=1.0),
    ),
    # The reference's images, half of them with the slab-wise motion and intensity steps that
    # super-resolution of fetal scans leaves behind.
    "fetal": GeneratorConfig(motion=MotionConfig(enabled=True)),
    # Acquisitions drawn relative to the working grid, as clinics acquire them (isotropic from one to
    # two working voxels, or thick-slice stacks of 2.5-6.5 mm slices), noise where the acquisition is,
    # and brain-masked backgrounds: what a network on a grid coarser than the reference's 0.5 mm needs
    # to see a loss of resolution, thick slices and the edge of a masked brain (docs/recipes.md).
    "clinical": GeneratorConfig(
        resolution=ResolutionConfig(
            units="voxels", min_resampling_iso_res=1.0, max_resampling_iso_res=2.0, thick_slice_probability=0.5, native_noise_grid=1.0
        ),
        mask=MaskConfig(enabled=True),
    ),
}


OPTION_DOCS: dict[tuple[str, str], tuple[str, str]] = {
    ("subclasses", "min_subclasses"): ("fewest intensity subclasses K drawn per meta-label", "count"),
    ("subclasses", "max_subclasses"): ("most intensity subclasses K drawn per meta-label", "count"),
    ("spatial", "enabled"): ("deform seeds and labels", "on/off"),
    ("spatial", "max_rotation"): ("largest rotation about each axis (uniform in plus or minus)", "degrees"),
    ("spatial", "max_shear"): ("largest shear of each axis pair", "fraction"),
    ("spatial", "max_scaling"): ("largest change of size along each axis", "fraction"),
    ("spatial", "random_shift"): ("move the output window anywhere the input allows (else centred)", "on/off"),
    ("spatial", "shift_beyond"): ("how far the window may move beyond the input, as a fraction of the output size", "fraction"),
    ("spatial", "nonlinear"): ("add a smooth nonlinear deformation", "on/off"),
    ("spatial", "nonlin_scale_min"): ("smallest size of its coarse grid, as a fraction of the output size", "fraction"),
    ("spatial", "nonlin_scale_max"): ("largest size of its coarse grid, as a fraction of the output size", "fraction"),
    ("spatial", "nonlin_std_max"): ("largest standard deviation of its displacements", "output voxels"),
    ("spatial", "integrate_deformation_fields"): ("integrate the field as a velocity, so that space never folds", "on/off"),
    ("spatial", "n_steps_svf_integration"): ("scaling-and-squaring steps of that integration", "count"),
    ("spatial", "image_interpolation"): ("how the image reaches the output grid: linear (partial volume) or nearest", "choice"),
    ("contrast", "enabled"): ("a random Gaussian intensity per seed label", "on/off"),
    ("contrast", "mean_min"): ("smallest mean of a seed label's Gaussian", "intensity, 0-300 scale"),
    ("contrast", "mean_max"): ("largest mean of a seed label's Gaussian", "intensity, 0-300 scale"),
    ("contrast", "std_min"): ("smallest standard deviation of a seed label's Gaussian", "intensity, 0-300 scale"),
    ("contrast", "std_max"): ("largest standard deviation of a seed label's Gaussian", "intensity, 0-300 scale"),
    ("contrast", "background_zero_probability"): (
        "probability that the background's mean intensity is 0 (else drawn like any label's)",
        "probability",
    ),
    ("gamma", "enabled"): ("a random gamma curve", "on/off"),
    ("gamma", "gamma_std"): ("standard deviation of the exponent's logarithm", "log units"),
    ("bias", "enabled"): ("a smooth multiplicative bias field", "on/off"),
    ("bias", "bf_scale_min"): ("smallest size of the field's coarse grid, as a fraction of the output size", "fraction"),
    ("bias", "bf_scale_max"): ("largest size of that grid", "fraction"),
    ("bias", "bf_std_min"): ("smallest standard deviation of the field's logarithm", "log units"),
    ("bias", "bf_std_max"): ("largest standard deviation of the field's logarithm", "log units"),
    ("resolution", "enabled"): ("simulate an acquisition: blur, resample, add noise", "on/off"),
    ("resolution", "preserve_resol"): ("probability of keeping the input's resolution (noise only)", "probability"),
    ("resolution", "units"): ("units of the isotropic resolutions: mm, or voxels of the working grid", "choice"),
    ("resolution", "min_resampling_iso_res"): ("finest acquired voxel (and a thick-slice stack's in-plane voxel)", "units"),
    ("resolution", "max_resampling_iso_res"): ("coarsest isotropic acquired voxel", "units"),
    ("resolution", "thick_slice_probability"): ("probability that an acquisition is a thick-slice stack", "probability"),
    ("resolution", "slice_mm_min"): ("thinnest slice of a stack", "mm"),
    ("resolution", "slice_mm_max"): ("thickest slice of a stack", "mm"),
    ("resolution", "noise_std_min"): ("smallest standard deviation of the Gaussian noise", "intensity, 0-300 scale"),
    ("resolution", "noise_std_max"): ("largest standard deviation of the Gaussian noise", "intensity, 0-300 scale"),
    ("resolution", "native_noise_grid"): ("how much finer the grid on which images that keep their resolution get their noise", "factor"),
    ("motion", "enabled"): ("residual slab motion and intensity steps after super-resolution", "on/off"),
    ("motion", "probability"): ("fraction of samples that get it", "probability"),
    ("motion", "slab_mm_min"): ("thinnest slab (acquired slice)", "mm"),
    ("motion", "slab_mm_max"): ("thickest slab", "mm"),
    ("motion", "shift_mm_max"): ("largest standard deviation of a pass's in-plane shift", "mm"),
    ("motion", "angle_deg_max"): ("largest standard deviation of a pass's in-plane rotation", "degrees"),
    ("motion", "gain_max"): ("largest intensity step between the two interleaved passes", "fraction"),
    ("mask", "enabled"): ("a brain mask: image and labels set to 0 beyond the brain grown by a margin", "on/off"),
    ("mask", "probability"): ("fraction of samples that get it", "probability"),
    ("mask", "margin_mm_min"): ("smallest margin (negative: the mask cuts into the brain)", "mm"),
    ("mask", "margin_mm_max"): ("largest margin", "mm"),
    ("flip", "enabled"): ("flip image and labels left-right", "on/off"),
    ("flip", "probability"): ("probability of a flip", "probability"),
}
"""Meaning and unit of every option of every stage, by (stage, option): for tables and help."""


def preset(name: str) -> GeneratorConfig:
    """A named configuration: ``"reference"`` (the reference method's images), ``"literal"``, ``"fetal"`` or ``"clinical"``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def load_config(name_or_path: str | os.PathLike) -> GeneratorConfig:
    """A preset name or a YAML file."""
    if str(name_or_path) in PRESETS:
        return preset(str(name_or_path))
    path = Path(name_or_path)
    if not path.exists():
        raise ValueError(f"{name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
    return GeneratorConfig.load(path)
