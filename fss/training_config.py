"""What a training run depends on: :class:`TrainConfig`, its options' meanings and units, the packaged configurations.

A configuration is saved in every checkpoint; a run resumes only with the same one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fss import datasets
from fss.config_checks import check_options, check_types, parse_yaml, read_yaml_file
from fss.device import PRECISIONS
from fss.synth import GeneratorConfig, load_config
from fss.unet import SKIPS, UNet

MODES = ("synthetic", "real", "mixed")
SETTINGS_ADDED_SINCE_0_1 = {"skip": "concatenate", "initialize_from": None}
"""Settings that runs of fss 0.1 did not record, with the value they trained with."""
SPACING_MM = (0.5, 5.0)
"""Working-grid spacings (mm) that a configuration accepts."""
CONFIGS = tuple(sorted(p.name.removesuffix(".yaml") for p in resources.files("fss").joinpath("configs").iterdir() if p.name.endswith(".yaml")))
"""Names of the packaged training configurations (``fss/configs/*.yaml``)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in every checkpoint); each option's meaning and unit in :data:`OPTION_DOCS`."""

    mode: str = "synthetic"
    synthetic_probability: float = 0.5
    iterations: int = 300
    batch_size: int = 1
    crop_shape: tuple[int, int, int] = (64, 80, 64)
    spacing: float = 1.6
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: float = 0.0
    skip: str = "concatenate"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    warmup: int = 20
    generator: str | dict = "reference"
    training_ages: tuple[int, ...] | None = None
    validation_ages: tuple[int, ...] = (23, 27, 31, 35)
    validation_every: int = 50
    seeds_dir: str | None = None
    initialize_from: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "float32"
    deterministic: bool = False

    def __post_init__(self):
        check_types(self)
        self._check_choices_and_numbers()
        self._check_network()
        self._check_ages()
        self.generator_config()  # an unknown preset or a bad generator option fails now, before any data are prepared
        for name in ("crop_shape", "channels", "validation_ages"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.training_ages is not None:
            self.training_ages = tuple(self.training_ages)

    def _check_choices_and_numbers(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {self.skip!r}")
        if not 0 <= self.synthetic_probability <= 1:
            raise ValueError(f"synthetic_probability must be in [0, 1], got {self.synthetic_probability}")
        for name in ("iterations", "batch_size", "validation_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.seed < 0 or self.weight_decay < 0:
            raise ValueError(f"warmup, seed and weight_decay must not be negative, got {self.warmup}, {self.seed}, {self.weight_decay}")
        if not (self.learning_rate > 0 and 0 <= self.dropout < 1):
            raise ValueError(f"need learning_rate > 0 and 0 <= dropout < 1, got {self.learning_rate} and {self.dropout}")
        if not SPACING_MM[0] <= self.spacing <= SPACING_MM[1]:
            raise ValueError(
                f"spacing {self.spacing} mm is outside {SPACING_MM[0]}-{SPACING_MM[1]} mm, where a fetal brain spans about "
                f"{round(120 / SPACING_MM[1])}-{round(120 / SPACING_MM[0])} voxels"
            )

    def _check_network(self) -> None:
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be positive numbers of feature maps, one per level, for at least two levels, got {list(self.channels)}")
        multiple = 2 ** (len(self.channels) - 1)
        if len(self.crop_shape) != 3 or any(side % multiple for side in self.crop_shape):
            raise ValueError(
                f"crop_shape {tuple(self.crop_shape)} must be three sides that are multiples of {multiple} for {len(self.channels)} levels"
            )

    def _check_ages(self) -> None:
        if self.training_ages is not None and not self.training_ages:
            raise ValueError("training_ages is empty: name at least one age, or leave it out (null) to train on every age not validated on")
        if not self.validation_ages:
            raise ValueError("validation_ages is empty: name at least one CRL age to validate on")
        crl_ages = set(datasets.FAMILIES["crl"].ages)
        for name in ("training_ages", "validation_ages"):
            unknown = sorted(set(getattr(self, name) or ()) - crl_ages)
            if unknown:
                raise ValueError(f"{name}: the CRL atlas has no ages {unknown} (it has {min(crl_ages)}-{max(crl_ages)} weeks)")
        overlap = set(self.training_ages or ()) & set(self.validation_ages)
        if overlap:
            raise ValueError(f"ages {sorted(overlap)} are both in training and validation")

    def network(self) -> UNet:
        """The untrained U-Net this configuration trains (weights drawn from torch's global generator)."""
        return UNet(channels=self.channels, dropout=self.dropout, skip=self.skip)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def differences(self, trained_with: dict) -> dict[str, tuple[object, object]]:
        """The options where this configuration differs from ``trained_with`` (a checkpoint's ``training`` metadata):
        ``{option: (value then, value now)}``, empty when they agree. Settings that fss 0.1 did not record count as
        the values it trained with (:data:`SETTINGS_ADDED_SINCE_0_1`)."""
        now, before = self.to_dict(), {**SETTINGS_ADDED_SINCE_0_1, **trained_with}
        return {key: (before.get(key), now.get(key)) for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)}

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
        """A packaged configuration (a name in :data:`CONFIGS`) or a YAML file, with ``key=value`` overrides (YAML values)."""
        if str(name_or_path) in CONFIGS:
            values = parse_yaml(resources.files("fss").joinpath("configs", f"{name_or_path}.yaml").read_text(), name_or_path)
        elif Path(name_or_path).exists():
            values = read_yaml_file(name_or_path)
        else:
            raise ValueError(f"{name_or_path!r} is neither a packaged configuration ({', '.join(CONFIGS)}) nor a YAML file")
        values = check_options(cls, values or {}, "training")
        for override in overrides or []:
            key, separator, value = override.partition("=")
            if not separator:
                raise ValueError(f"--set {override!r}: expected key=value")
            values[key.strip()] = parse_yaml(value, f"--set {override}")
        return cls(**check_options(cls, values, "training"))

    def ages_to_train(self) -> tuple[int, ...]:
        """The CRL ages trained on: ``training_ages``, or by default every age that is not a validation age."""
        return self.training_ages or tuple(a for a in datasets.FAMILIES["crl"].ages if a not in self.validation_ages)

    def generator_config(self) -> GeneratorConfig:
        """The generator's configuration, cropping to ``crop_shape``."""
        base = GeneratorConfig.from_dict(self.generator) if isinstance(self.generator, dict) else load_config(self.generator)
        return dataclasses.replace(base, output_shape=self.crop_shape)


OPTION_DOCS: dict[str, tuple[str, str]] = {
    "mode": ("what the network is trained on: synthetic images, real CRL images with standard augmentation, or both", "synthetic/real/mixed"),
    "synthetic_probability": ("in mixed mode, the chance that a batch is synthetic", "probability"),
    "iterations": ("training steps; the learning rate reaches 0 at the last", "count"),
    "batch_size": ("crops per step", "count"),
    "crop_shape": ("side lengths of a training crop on the working grid", "voxels"),
    "spacing": ("voxel size of the working grid, the same on every axis", "mm"),
    "channels": ("feature maps of each U-Net level, finest first; one pooling between levels", "count per level"),
    "dropout": ("dropout after each decoder block", "probability"),
    "skip": ("how a decoder level joins the encoder's features: concatenated or added", "concatenate/add"),
    "learning_rate": ("AdamW's base learning rate: the warm-up rises towards it while the polynomial decay, from step 0, lowers it", "per step"),
    "weight_decay": ("AdamW's decoupled weight decay", "per step"),
    "warmup": ("steps of linear warm-up, multiplied with the polynomial decay that runs from the first step", "count"),
    "generator": ("synthetic image generator: a preset name or generator options", "name or mapping"),
    "training_ages": ("CRL ages trained on (default: every age not validated on)", "weeks"),
    "validation_ages": ("CRL ages validated on, never trained on", "weeks"),
    "validation_every": ("steps between validations and checkpoints", "count"),
    "seeds_dir": ("dataset root whose seeds are read (default: fitted on the resampled atlas)", "path"),
    "initialize_from": (
        "checkpoint whose weights the network starts from (default: drawn from seed), e.g. a run on a coarser grid or a packaged model",
        "path",
    ),
    "seed": ("seed of the network's initial weights, the seeds' fit and every batch", "integer"),
    "device": ("where training runs: auto, cpu, cuda or mps", "name"),
    "precision": ("what training steps compute in: float32, bfloat16 or auto", "name"),
    "deterministic": ("same bits on every re-run on one machine (slower on a GPU)", "on/off"),
}
"""Meaning and unit of every :class:`TrainConfig` option."""
