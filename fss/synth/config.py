"""Configuration of the generator: one dataclass per stage, the reference defaults, presets, YAML.

Names and defaults follow the reference method (FetalSynthSeg, built on SynthSeg as
re-implemented by Brain-ID). Every option is declared beside its field (:func:`option`) with its
meaning, unit and bounds; a range is a pair of options named as the reference names its own,
``X_min`` and ``X_max`` (or ``min_X`` and ``max_X``), whose lower end names its upper end. All of it
is checked when a configuration is made. Which stages there are, and in what order they draw and
apply, is :data:`fss.synth.stages.STAGE_REGISTRY`.

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
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fss.config_checks import check_options, check_types, read_yaml_file
from fss.paths import atomic_path


def option(
    default,
    meaning: str,
    unit: str,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
    upper: str | None = None,
    choices: tuple[str, ...] | None = None,
):
    """One option of a stage, declared with what it means and what it may be.

    Parameters
    ----------
    default
        The reference's value.
    meaning, unit : str
        For tables and help (:data:`OPTION_DOCS`).
    at_least, at_most : float, optional
        Bounds, both included.
    below : float, optional
        A bound not included.
    upper : str, optional
        The option that ends the range this one starts: a configuration needs ``at_least <= this <= upper``.
    choices : tuple of str, optional
        The values a word may take.
    """
    rules = {"meaning": meaning, "unit": unit, "at_least": at_least, "at_most": at_most, "below": below, "upper": upper, "choices": choices}
    return field(default=default, metadata=rules)


def range_options(section) -> dict[str, str]:
    """The ranges of one stage's configuration, as declared (:func:`option`): ``{lower option: upper option}``."""
    return {f.name: f.metadata["upper"] for f in dataclasses.fields(section) if f.metadata.get("upper")}


@dataclass(frozen=True)
class StageConfig:
    """Base of the configuration of one stage: every option is declared with :func:`option` and checked when a
    configuration is made: its type (:func:`fss.config_checks.check_types`), then its bounds, range or choices.
    """

    def __post_init__(self):
        check_types(self)
        names = {f.name for f in dataclasses.fields(self)}
        for f in dataclasses.fields(self):
            if "meaning" not in f.metadata:
                raise TypeError(f"{type(self).__name__}.{f.name} is not declared with option(): its meaning, unit and bounds are unknown")
            _check_option(self, f.name, f.metadata, names)


def _check_option(section, name: str, rules: dict, names: set[str]) -> None:
    """ValueError naming option ``name`` of ``section`` where its value breaks the rules it was declared with."""
    value = getattr(section, name)
    if rules["choices"] is not None and value not in rules["choices"]:
        raise ValueError(f"{name} must be one of {rules['choices']}, got {value!r}")
    low, high, below, upper = rules["at_least"], rules["at_most"], rules["below"], rules["upper"]
    if upper is not None:
        if upper not in names:
            raise TypeError(f"{type(section).__name__}.{name} ends its range at {upper!r}, which is not an option")
        if not ((low is None or low <= value) and value <= getattr(section, upper)):
            floor = "" if low is None else f"{low} <= "
            raise ValueError(f"need {floor}{name} <= {upper}, got {value} and {getattr(section, upper)}")
    elif low == 0 and high == 1:
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    elif low is not None and high is not None:
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    elif low == 0 and value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    elif low is not None and value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be below {below}, got {value}")


PROBABILITY = {"at_least": 0.0, "at_most": 1.0}
"""The bounds of an option that is a probability."""


REFERENCE_MM = 0.5 / 0.5**0.5
"""True millimetres per millimetre of the reference: it reads the spacing of a 0.5 mm volume as
sqrt(0.5) = 0.707 mm, so the resolutions it draws in its millimetres are 0.707 times as large
in true ones."""


@dataclass(frozen=True)
class SubclassConfig(StageConfig):
    """Stage 1: number of intensity subclasses drawn per meta-label, uniformly in [min, max]."""

    min_subclasses: int = option(1, "fewest intensity subclasses K drawn per meta-label", "count", at_least=1, upper="max_subclasses")
    max_subclasses: int = option(4, "most intensity subclasses K drawn per meta-label", "count")


ON_OFF = "on/off"


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

    enabled: bool = option(True, "deform seeds and labels", ON_OFF)
    max_rotation: float = option(20.0, "largest rotation about each axis (uniform in plus or minus)", "degrees", at_least=0)
    max_shear: float = option(0.02, "largest shear of each axis pair", "fraction", at_least=0)
    max_scaling: float = option(0.1, "largest change of size along each axis", "fraction", at_least=0, below=1)
    random_shift: bool = option(True, "move the output window anywhere the input allows (else centred)", ON_OFF)
    shift_beyond: float = option(0.0, "how far the window may move beyond the input, as a fraction of the output size", "fraction", at_least=0)
    nonlinear: bool = option(True, "add a smooth nonlinear deformation", ON_OFF)
    nonlin_scale_min: float = option(
        0.03, "smallest size of its coarse grid, as a fraction of the output size", "fraction", at_least=0, upper="nonlin_scale_max"
    )
    nonlin_scale_max: float = option(0.06, "largest size of its coarse grid, as a fraction of the output size", "fraction")
    nonlin_std_max: float = option(4.0, "largest standard deviation of its displacements", "output voxels", at_least=0)
    integrate_deformation_fields: bool = option(True, "integrate the field as a velocity, so that space never folds", ON_OFF)
    n_steps_svf_integration: int = option(8, "scaling-and-squaring steps of that integration", "count", at_least=0)
    image_interpolation: str = option(
        "linear", "how the image reaches the output grid: linear (partial volume) or nearest", "choice", choices=("linear", "nearest")
    )


INTENSITY = "intensity, 0-300 scale"


@dataclass(frozen=True)
class ContrastConfig(StageConfig):
    """Stage 3: a Gaussian per seed label, mean and std drawn uniformly (0-300 intensity scale)."""

    enabled: bool = option(True, "a random Gaussian intensity per seed label", ON_OFF)
    mean_min: float = option(25.0, "smallest mean of a seed label's Gaussian", INTENSITY, at_least=0, upper="mean_max")
    mean_max: float = option(225.0, "largest mean of a seed label's Gaussian", INTENSITY)
    std_min: float = option(5.0, "smallest standard deviation of a seed label's Gaussian", INTENSITY, at_least=0, upper="std_max")
    std_max: float = option(25.0, "largest standard deviation of a seed label's Gaussian", INTENSITY)
    background_zero_probability: float = option(
        0.5, "probability that the background's mean intensity is 0 (else drawn like any label's)", "probability", **PROBABILITY
    )


@dataclass(frozen=True)
class GammaConfig(StageConfig):
    """Stage 4: intensity -> 300 * (intensity / 300) ** exp(N(0, gamma_std))."""

    enabled: bool = option(True, "a random gamma curve", ON_OFF)
    gamma_std: float = option(0.1, "standard deviation of the exponent's logarithm", "log units", at_least=0)


@dataclass(frozen=True)
class BiasConfig(StageConfig):
    """Stage 5: smooth multiplicative bias, exp of a coarse Gaussian field of size bf_scale * output size."""

    enabled: bool = option(True, "a smooth multiplicative bias field", ON_OFF)
    bf_scale_min: float = option(
        0.004, "smallest size of the field's coarse grid, as a fraction of the output size", "fraction", at_least=0, upper="bf_scale_max"
    )
    bf_scale_max: float = option(0.02, "largest size of that grid", "fraction")
    bf_std_min: float = option(0.01, "smallest standard deviation of the field's logarithm", "log units", at_least=0, upper="bf_std_max")
    bf_std_max: float = option(0.02, "largest standard deviation of the field's logarithm", "log units")


RESOLUTION_UNITS = ("mm", "voxels")


@dataclass(frozen=True)
class ResolutionConfig(StageConfig):
    """Stage 7: blur to a random acquisition, resample there, add noise, resample back.

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

    enabled: bool = option(True, "simulate an acquisition: blur, resample, add noise", ON_OFF)
    preserve_resol: float = option(0.2, "probability of keeping the input's resolution (noise only)", "probability", **PROBABILITY)
    units: str = option("mm", "units of the isotropic resolutions: mm, or voxels of the working grid", "choice", choices=RESOLUTION_UNITS)
    min_resampling_iso_res: float = option(
        round(0.5 * REFERENCE_MM, 3),
        "finest acquired voxel (and a thick-slice stack's in-plane voxel)",
        "units",
        at_least=1e-3,
        upper="max_resampling_iso_res",
    )
    max_resampling_iso_res: float = option(round(1.5 * REFERENCE_MM, 3), "coarsest isotropic acquired voxel", "units")
    thick_slice_probability: float = option(0.0, "probability that an acquisition is a thick-slice stack", "probability", **PROBABILITY)
    slice_mm_min: float = option(2.5, "thinnest slice of a stack", "mm", at_least=1e-3, upper="slice_mm_max")
    slice_mm_max: float = option(6.5, "thickest slice of a stack", "mm")
    noise_std_min: float = option(5.0, "smallest standard deviation of the Gaussian noise", INTENSITY, at_least=0, upper="noise_std_max")
    noise_std_max: float = option(15.0, "largest standard deviation of the Gaussian noise", INTENSITY)
    native_noise_grid: float = option(
        round(1 / REFERENCE_MM, 3),
        "how much finer the grid on which images that keep their resolution get their noise",
        "factor",
        at_least=1,
        at_most=4,
    )


@dataclass(frozen=True)
class MaskConfig(StageConfig):
    """Stage 8, after the resolution (off in ``reference``, on in ``clinical``): a brain mask, as in skull-stripped clinical
    scans.

    With ``probability``, the image is set to 0 beyond the brain (every label above 0) grown by a margin
    uniform in ``[margin_mm_min, margin_mm_max]`` mm (negative: shrunk), and so are the labels there, so
    that the network learns that a zero background holds no tissue.
    """

    enabled: bool = option(False, "a brain mask: image and labels set to 0 beyond the brain grown by a margin", ON_OFF)
    probability: float = option(0.5, "fraction of samples that get it", "probability", **PROBABILITY)
    margin_mm_min: float = option(-1.0, "smallest margin (negative: the mask cuts into the brain)", "mm", upper="margin_mm_max")
    margin_mm_max: float = option(3.0, "largest margin", "mm")


@dataclass(frozen=True)
class MotionConfig(StageConfig):
    """Stage 6, after the bias and before the resolution (off in ``reference``, on in ``fetal``): residual motion after
    super-resolution.

    Slabs ``slab_mm_min`` to ``slab_mm_max`` thick (mm, uniform) along the slice axis, moved rigidly within
    their plane: the standard deviations of a pass's shift (mm) and rotation (degrees) are drawn
    uniform in ``[0, shift_mm_max]`` and ``[0, angle_deg_max]``, the intensity step between the two
    interleaved passes in ``[0, gain_max]`` (see :mod:`fss.synth.motion`); a gain of 1 would black out a pass.
    """

    enabled: bool = option(False, "residual slab motion and intensity steps after super-resolution", ON_OFF)
    probability: float = option(0.5, "fraction of samples that get it", "probability", **PROBABILITY)
    slab_mm_min: float = option(2.5, "thinnest slab (acquired slice)", "mm", at_least=1e-3, upper="slab_mm_max")
    slab_mm_max: float = option(4.5, "thickest slab", "mm")
    shift_mm_max: float = option(2.0, "largest standard deviation of a pass's in-plane shift", "mm", at_least=0)
    angle_deg_max: float = option(5.0, "largest standard deviation of a pass's in-plane rotation", "degrees", at_least=0)
    gain_max: float = option(0.15, "largest intensity step between the two interleaved passes", "fraction", at_least=0, below=1)


@dataclass(frozen=True)
class FlipConfig(StageConfig):
    """Stage 9: left-right flip of image and labels together."""

    enabled: bool = option(True, "flip image and labels left-right", ON_OFF)
    probability: float = option(0.5, "probability of a flip", "probability", **PROBABILITY)


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


def _stage_types() -> dict[str, type[StageConfig]]:
    """The configuration class of each stage, by its field in :class:`GeneratorConfig`."""
    return {f.name: f.default_factory for f in dataclasses.fields(GeneratorConfig) if f.name != "output_shape"}


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
    (stage, f.name): (f.metadata["meaning"], f.metadata["unit"])
    for stage, stage_type in _stage_types().items()
    for f in dataclasses.fields(stage_type)
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
