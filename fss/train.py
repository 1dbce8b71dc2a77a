"""Training the U-Net on synthetic, real or mixed batches, with validation on real volumes.

One loop serves the three data modes: ``synthetic`` (every batch drawn by :mod:`fss.synth`
from seeds on the training device), ``real`` (CRL atlas images with standard augmentation,
:class:`fss.synth.augment.Augmenter`) and ``mixed`` (a synthetic batch with probability
``synthetic_probability``). Under ``torchrun`` the same entry point trains with
DistributedDataParallel, each rank drawing its own batches.

Everything written goes to one output folder: ``last`` and ``best`` checkpoints
(:mod:`fss.checkpoint`), ``last_state.*`` to resume, ``log.csv`` (per iteration: loss, learning
rate, ``seconds`` of training so far, validation and checkpoints left out, and the validation
Dice where it was measured), ``curves.png``, ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fss import datasets
from fss.checkpoint import load_checkpoint, save_checkpoint
from fss.config_checks import check_options, check_types, parse_yaml
from fss.device import PRECISIONS, describe_device, resolve_device, resolve_precision
from fss.infer import predict_working
from fss.io import NORMALIZATION, WorkingGrid, load_nifti, normalize_intensities
from fss.paths import atomic_path
from fss.labels import TISSUES
from fss.metrics import dice_per_tissue
from fss.seeds import Seeds, load_seeds, make_seeds
from fss.synth import Generator, GeneratorConfig, SynthSubject, load_config
from fss.synth.augment import Augmenter
from fss.synth.dataset import SyntheticBatches
from fss.synth.draws import derive_seed
from fss.unet import SKIPS, UNet, count_parameters
from fss.viz import plot_training, save_figure

MODES = ("synthetic", "real", "mixed")
RUN_FILES = ("last.safetensors", "last.json", "best.safetensors", "best.json", "last_state.safetensors", "last_state.json",
             "log.csv", "curves.png", "metrics.json")
"""What a training run writes in its folder."""
SETTINGS_ADDED_SINCE_0_1 = {"skip": "concatenate"}
"""Settings that runs of fss 0.1 did not record, with the value they trained with."""
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
    seed: int = 0
    device: str = "auto"
    precision: str = "float32"
    deterministic: bool = False

    def __post_init__(self):
        check_types(self)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.synthetic_probability <= 1:
            raise ValueError(f"synthetic_probability must be in [0, 1], got {self.synthetic_probability}")
        for name in ("iterations", "batch_size", "validation_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.seed < 0 or self.weight_decay < 0:
            raise ValueError(f"warmup, seed and weight_decay must not be negative, got {self.warmup}, {self.seed}, {self.weight_decay}")
        if not (self.learning_rate > 0 and self.spacing > 0 and 0 <= self.dropout < 1):
            raise ValueError(f"need learning_rate > 0, spacing > 0 and 0 <= dropout < 1, got {self.learning_rate}, {self.spacing}, {self.dropout}")
        if self.skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {self.skip!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive numbers of feature maps, one per level, got {self.channels}")
        crl_ages = set(datasets.FAMILIES["crl"].ages)
        for name in ("training_ages", "validation_ages"):
            unknown = sorted(set(getattr(self, name) or ()) - crl_ages)
            if unknown:
                raise ValueError(f"{name}: the CRL atlas has no ages {unknown} (it has {min(crl_ages)}-{max(crl_ages)} weeks)")
        self.generator_config()  # an unknown preset or a bad generator option fails now, before any data are prepared
        multiple = 2 ** (len(self.channels) - 1)
        if len(self.crop_shape) != 3 or any(side % multiple for side in self.crop_shape):
            raise ValueError(f"crop_shape {tuple(self.crop_shape)} must be three sides that are multiples of {multiple} for {len(self.channels)} levels")
        overlap = set(self.training_ages or ()) & set(self.validation_ages)
        if overlap:
            raise ValueError(f"ages {sorted(overlap)} are both in training and validation")
        for name in ("crop_shape", "channels", "validation_ages"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.training_ages is not None:
            self.training_ages = tuple(self.training_ages)

    def network(self) -> UNet:
        """The untrained U-Net this configuration trains (weights drawn from torch's global generator)."""
        return UNet(channels=self.channels, dropout=self.dropout, skip=self.skip)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
        """A packaged configuration (a name in :data:`CONFIGS`) or a YAML file, with ``key=value`` overrides (YAML values)."""
        if str(name_or_path) in CONFIGS:
            text = resources.files("fss").joinpath("configs", f"{name_or_path}.yaml").read_text()
        elif Path(name_or_path).exists():
            text = Path(name_or_path).read_text()
        else:
            raise ValueError(f"{name_or_path!r} is neither a packaged configuration ({', '.join(CONFIGS)}) nor a YAML file")
        values = check_options(cls, parse_yaml(text, name_or_path) or {}, "training")
        for override in overrides or []:
            key, separator, value = override.partition("=")
            if not separator:
                raise ValueError(f"expected key=value, got {override!r}")
            values[key.strip()] = parse_yaml(value, override)
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
    "learning_rate": ("AdamW's peak learning rate, reached after the warm-up", "per step"),
    "weight_decay": ("AdamW's decoupled weight decay", "per step"),
    "warmup": ("steps of linear warm-up before the polynomial decay", "count"),
    "generator": ("synthetic image generator: a preset name or generator options", "name or mapping"),
    "training_ages": ("CRL ages trained on (default: every age not validated on)", "weeks"),
    "validation_ages": ("CRL ages validated on, never trained on", "weeks"),
    "validation_every": ("steps between validations and checkpoints", "count"),
    "seeds_dir": ("dataset root whose seeds are read (default: fitted on the resampled atlas)", "path"),
    "seed": ("seed of the network's initial weights, the seeds' fit and every batch", "integer"),
    "device": ("where training runs: auto, cpu, cuda or mps", "name"),
    "precision": ("what training steps compute in: float32, bfloat16 or auto", "name"),
    "deterministic": ("same bits on every re-run on one machine (slower on a GPU)", "on/off"),
}
"""Meaning and unit of every :class:`TrainConfig` option."""


@dataclass
class Volume:
    """A CRL atlas volume on the training grid: normalised image, FeTA labels, optional seeds."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    spacing: float
    seeds: Seeds | None = None


def prepare_crl(ages: tuple[int, ...], spacing: float, with_seeds: bool, seeds_dir: str | None = None, seed: int = 0,
                progress: bool = False) -> list[Volume]:
    """CRL atlas volumes resampled to ``spacing`` mm (image linear, labels and seeds nearest).

    Seeds are read from ``seeds_dir`` (subjects ``sub-crlGA<age>``, as notebook 01 writes them)
    when given, else fitted on the resampled image (K = 1..4), a few seconds per volume on a
    CPU; ``progress`` shows a bar over the volumes.
    """
    volumes = []
    records = datasets.fetch_crl_atlas(ages=ages)
    for record in tqdm(records, desc="preparing CRL volumes", unit="volume", disable=not progress):
        image = load_nifti(record.image)
        grid = WorkingGrid.from_image(image, spacing)
        intensities = grid.to_working(np.asarray(image.dataobj, dtype=np.float32))
        labels = grid.to_working(np.asarray(record.feta_labels().dataobj), "nearest").numpy()
        seeds = None
        if with_seeds and seeds_dir:
            loaded = load_seeds(seeds_dir, f"crlGA{record.gestational_age}")
            layers = {k: {m: grid.to_working(layer, "nearest").numpy() for m, layer in by_meta.items()} for k, by_meta in loaded.layers.items()}
            seeds = Seeds(layers, grid.affine)
        elif with_seeds:
            seeds = make_seeds(nib.Nifti1Image(intensities.numpy(), grid.affine), nib.Nifti1Image(labels, grid.affine), max_subclasses=4, seed=seed)
        volumes.append(Volume(record.name, normalize_intensities(intensities).numpy(), labels, grid.affine, spacing, seeds))
    return volumes


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus (1 - mean soft Dice over the foreground classes).

    Parameters
    ----------
    logits : torch.Tensor, (B, C, D, H, W)
    labels : torch.Tensor, (B, D, H, W) int64
    """
    cross_entropy = F.cross_entropy(logits, labels)
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    target = F.one_hot(labels, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(probabilities.dtype)
    dims = (0, 2, 3, 4)
    dice = (2 * (probabilities * target).sum(dims) + 1e-5) / (probabilities.sum(dims) + target.sum(dims) + 1e-5)
    return cross_entropy + 1 - dice.mean()


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then polynomial (power 0.9) decay to 0."""
    warm = min(1.0, (iteration + 1) / max(config.warmup, 1))
    return config.learning_rate * warm * (1 - iteration / config.iterations) ** 0.9


def validate(model: UNet, volumes: list[Volume]) -> pd.DataFrame:
    """Per-tissue Dice of ``model`` on each volume: rows are volumes, columns tissues."""
    rows = {}
    for volume in volumes:
        probabilities = predict_working(model, volume.image)
        rows[volume.name] = dice_per_tissue(probabilities.argmax(0).cpu().numpy(), volume.labels)
    return pd.DataFrame.from_dict(rows, orient="index")


class _Distributed:
    """Rank and world size under ``torchrun`` (1 process otherwise)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then destroy the process group while all are still connected.

        Callers release the DistributedDataParallel model first: it keeps the group alive, and a
        group left to the interpreter's exit can abort the process while its threads still run.
        """
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()


def _batches(config: TrainConfig, training: list[Volume], device: torch.device, rank: int, start: int):
    """Endless (image, labels) batches for the configured mode, step by step from ``start``."""
    generator_config = config.generator_config()
    synthetic = real = None
    if config.mode in ("synthetic", "mixed"):
        subjects = [SynthSubject(v.name, v.seeds, v.labels) for v in training]
        synthetic = SyntheticBatches(Generator(subjects, generator_config, device), config.batch_size, config.seed, rank, start)
    if config.mode in ("real", "mixed"):
        real = Augmenter([v.image for v in training], [v.labels for v in training], [[v.spacing] * 3 for v in training], generator_config, device)
    step = start
    while True:
        use_synthetic = config.mode == "synthetic" or (
            config.mode == "mixed" and np.random.default_rng(derive_seed(config.seed, rank, step, 1)).random() < config.synthetic_probability
        )
        if use_synthetic:
            synthetic.step = step
            batch = next(synthetic)
        else:
            batch = real.sample(config.batch_size, derive_seed(config.seed, rank, step, 2))
        yield batch.image, batch.labels
        step += 1


def _save_state(out: Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Optimizer tensors in safetensors, the rest in JSON (nothing pickled)."""
    optimizer_state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().cpu().contiguous() for index, values in optimizer_state["state"].items() for name, value in values.items()}
    with atomic_path(out / "last_state.safetensors", overwrite=True) as temporary:
        save_file(tensors, str(temporary))
    with atomic_path(out / "last_state.json", overwrite=True) as temporary:
        temporary.write_text(json.dumps({**state, "param_groups": optimizer_state["param_groups"]}, indent=1))


def _load_state(out: Path, optimizer: torch.optim.Optimizer) -> dict:
    state = json.loads((out / "last_state.json").read_text())
    by_index: dict[int, dict] = {}
    for key, value in load_file(str(out / "last_state.safetensors")).items():
        index, name = key.split(".", 1)
        by_index.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": by_index, "param_groups": state.pop("param_groups")})
    return state


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms inside the block if ``enabled`` (else cuDNN's autotuner on CUDA), all undone on exit.

    Sets ``torch.use_deterministic_algorithms``, ``torch.backends.cudnn.benchmark`` and, for
    cuBLAS, ``CUBLAS_WORKSPACE_CONFIG``; the caller's values come back when the block ends.
    """
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, image: torch.Tensor, labels: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> float:
    """One optimisation step on a batch (the network under autocast to ``dtype``, the loss in float32); returns the loss.

    Parameters
    ----------
    image : torch.Tensor, (B, 1, D, H, W)
    labels : torch.Tensor, (B, D, H, W) int64
    dtype : torch.float32 or torch.bfloat16
        What the network computes in (:func:`fss.device.resolve_precision`); the weights stay float32.
    """
    with torch.autocast(device_type=image.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(image)
    loss = dice_ce_loss(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@dataclass
class _Run:
    """What a training run holds between iterations."""

    model: UNet
    trained: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    validation: list[Volume]
    metadata: dict
    start: int
    best: float
    log: list[dict]
    dtype: torch.dtype
    """What the network computes in during training steps."""


def _set_up(config: TrainConfig, out: Path, resume: bool, device: torch.device, distributed: _Distributed,
            training: list[Volume] | None, validation: list[Volume] | None, progress: bool, command: str | None) -> _Run:
    """Model (initialised from ``config.seed``), optimizer, data (with a progress bar if ``progress``), the metadata of its
    checkpoints and, when resuming, the saved state."""
    torch.manual_seed(config.seed)
    model = config.network().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start, best, log, sittings = 0, -1.0, [], []
    if resume:
        loaded, saved = load_checkpoint(out / "last", device)
        _check_resumable(config, out, saved)
        model.load_state_dict(loaded.state_dict())
        state = _load_state(out, optimizer)
        start, best = state["iteration"], state["best_mean_dice"]
        log = pd.read_csv(out / "log.csv").to_dict("records")
        sittings = saved.get("sittings", [])
        if state["iteration"] != saved["iterations"] or not log or log[-1]["iteration"] != start:
            raise ValueError(f"{out}: the checkpoint (iteration {saved['iterations']}), the optimizer state (iteration {state['iteration']}) and "
                             f"log.csv (iteration {log[-1]['iteration'] if log else 0}) disagree, as when a run is stopped while saving; "
                             "it cannot be resumed exactly: start afresh with --overwrite")
    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed.world > 1 else model
    if training is None:
        training = prepare_crl(config.ages_to_train(), config.spacing, config.mode in ("synthetic", "mixed"), config.seeds_dir, config.seed, progress)
    if validation is None:
        validation = prepare_crl(config.validation_ages, config.spacing, False, progress=progress) if distributed.main else []
    dtype = resolve_precision(config.precision, device)
    metadata = {
        "spacing_mm": config.spacing,
        "precision": str(dtype).removeprefix("torch."),
        "normalization": NORMALIZATION,
        "training": config.to_dict(),
        "data": {"training": [v.name for v in training], "validation": [v.name for v in validation], "mode": config.mode},
        "parameters": count_parameters(model),
        "sittings": [*sittings, {"from_iteration": start, "machine": describe_device(device), "torch": torch.__version__, "command": command}],
    }
    batches = _batches(config, training, device, distributed.rank, start)
    return _Run(model, trained, optimizer, batches, validation, metadata, start, best, log, dtype)


class TrainingInterrupted(Exception):
    """Training stopped by an interrupt (Ctrl-C) after saving its state: ``fss train --resume`` continues it."""

    def __init__(self, out: Path, iteration: int):
        super().__init__(f"interrupted after iteration {iteration}; the state is saved in {out}: continue with --resume")
        self.out, self.iteration = out, iteration


class _Interrupt:
    """What Ctrl-C asked of the training loop."""

    requested = False
    saving = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While the block runs (a save), any Ctrl-C only asks to stop after it."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False


@contextlib.contextmanager
def _stop_on_interrupt(enabled: bool) -> Iterator[_Interrupt]:
    """While the block runs, a first Ctrl-C asks the loop to stop after the current iteration; a second one stops at once,
    except during a save (:meth:`_Interrupt.deferred`), which it lets finish.

    The caller's SIGINT handler is back on exit. Off (``enabled`` false, or outside the main
    thread) the block runs with the handler as it is.
    """
    interrupt = _Interrupt()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def request(signum, frame):
        if interrupt.requested and not interrupt.saving:
            raise KeyboardInterrupt
        interrupt.requested = True

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_resumable(config: TrainConfig, out: Path, saved: dict) -> None:
    """Raise if ``config`` differs from the configuration the run in ``out`` was trained with, naming the keys."""
    now = config.to_dict()
    before = {**SETTINGS_ADDED_SINCE_0_1, **saved["training"]}
    changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
    if changed:
        differences = "; ".join(f"{key}: {before.get(key)!r} then, {now.get(key)!r} now" for key in changed)
        raise ValueError(f"{out} was trained with other settings ({differences}): resume with the same ones, or start afresh with --overwrite")


def _checkpoint(run: _Run, out: Path, iteration: int, seconds: float) -> dict:
    """Validate, save ``last`` (and ``best`` when it improved), recording the ``seconds`` of training steps so far, and the
    optimizer state; the Dice columns of the log."""
    scores = validate(run.model, run.validation)
    mean = float(np.nanmean(scores.to_numpy()))
    checkpoint = {**run.metadata, "iterations": iteration, "training_seconds": seconds, "validation_dice": {k: float(v) for k, v in scores.mean().items()}, "mean_validation_dice": mean}
    save_checkpoint(run.model, out / "last", checkpoint)
    if mean > run.best:
        run.best = mean
        save_checkpoint(run.model, out / "best", checkpoint)
    _save_state(out, run.optimizer, {"iteration": iteration, "best_mean_dice": run.best})
    return {**{f"dice_{tissue}": float(scores[tissue].mean()) for tissue in scores.columns}, "mean_dice": mean}


def _finish(run: _Run, out: Path, config: TrainConfig, stop: int, device: torch.device, world: int) -> dict:
    """Curves and the metrics of the run (also the return value of :func:`train`); speed counts this call's training steps only."""
    frame = pd.DataFrame(run.log)
    earlier = frame.loc[frame["iteration"] <= run.start, "seconds"]
    seconds_now = float(frame["seconds"].iloc[-1]) - (float(earlier.iloc[-1]) if len(earlier) else 0.0)
    figure = plot_training(frame)
    save_figure(figure, out / "curves.png")
    plt.close(figure)
    final = frame.dropna(subset=["mean_dice"]).iloc[-1]
    return {
        "mode": config.mode,
        "iterations": stop,
        "seconds": float(frame["seconds"].iloc[-1]),
        "iterations_per_second": (stop - run.start) / max(seconds_now, 1e-9),
        "final_mean_dice": float(final["mean_dice"]),
        "final_dice": {t.short: float(final[f"dice_{t.short}"]) for t in TISSUES[1:]},
        "best_mean_dice": run.best,
        "parameters": count_parameters(run.model),
        "device": str(device),
        "precision": run.metadata["precision"],
        "world_size": world,
    }


def _iterate(run: _Run, config: TrainConfig, out: Path, stop: int, distributed: _Distributed, progress: bool) -> float | None:
    """Training steps from ``run.start`` to ``stop``, with validation and checkpoints; the sum of the first batch's image.

    Raises
    ------
    TrainingInterrupted
        After a Ctrl-C, once the iteration under way is done and saved.
    """
    first_batch_sum = None
    seconds_before = run.log[-1]["seconds"] if run.log else 0.0
    started = time.perf_counter()
    checkpoint_seconds = 0.0  # validation and saving, left out of the training time
    bar = tqdm(range(run.start, stop), desc=f"training ({config.mode})", unit="it", disable=not (progress and distributed.main), initial=run.start, total=config.iterations)
    with _stop_on_interrupt(enabled=distributed.world == 1) as interrupt:
        for iteration in bar:
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration)
            image, labels = next(run.batches)
            if first_batch_sum is None:
                first_batch_sum = float(image.sum())
            loss = training_step(run.trained, run.optimizer, image, labels, run.dtype)
            row = {"iteration": iteration + 1, "loss": loss, "learning_rate": run.optimizer.param_groups[0]["lr"],
                   "seconds": seconds_before + time.perf_counter() - started - checkpoint_seconds}
            checkpointing = distributed.main and ((iteration + 1) % config.validation_every == 0 or iteration + 1 == stop or interrupt.requested)
            if checkpointing:
                with interrupt.deferred():  # checkpoint, optimizer state and log agree whenever Ctrl-C comes
                    checkpoint_started = time.perf_counter()
                    row.update(_checkpoint(run, out, iteration + 1, row["seconds"]))
                    run.log.append(row)
                    with atomic_path(out / "log.csv", overwrite=True) as temporary:
                        pd.DataFrame(run.log).to_csv(temporary, index=False)
                    checkpoint_seconds += time.perf_counter() - checkpoint_started
                bar.set_postfix(loss=f"{loss:.3f}", dice=f"{row['mean_dice']:.3f}")
            else:
                run.log.append(row)
            if interrupt.requested:
                bar.close()
                raise TrainingInterrupted(out, iteration + 1)
            distributed.barrier()
    return first_batch_sum


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    until: int | None = None,
    training: list[Volume] | None = None,
    validation: list[Volume] | None = None,
    command: str | None = None,
) -> dict:
    """Train a U-Net as ``config`` says; returns the metrics also written to ``out/metrics.json`` (empty on other ranks).

    The global torch random state and the determinism flags are the caller's again on return:
    the run seeds its own (``config.seed``) and sets deterministic algorithms only while it
    runs (``config.deterministic``, see :func:`determinism`).

    Parameters
    ----------
    config : TrainConfig
    out : path
        Output folder (see the module docstring).
    resume : bool
        Continue from ``out/last`` and its optimizer state, at the saved iteration.
    overwrite : bool
        Start afresh in a folder that already holds a run: the files of that run (:data:`RUN_FILES`)
        are removed first, any other file is left alone.
    progress : bool
        Show a progress bar (main process only).
    until : int, optional
        Stop after this iteration (state saved), to continue later with ``resume``; the
        schedule still runs to ``config.iterations``.
    training, validation : list of Volume, optional
        Volumes to train and validate on instead of the CRL atlas ages of ``config``.
    command : str, optional
        How this sitting was started (the command line passes its own), recorded in the
        checkpoints' ``sittings`` with the machine and the iteration it started from.

    Raises
    ------
    FileExistsError
        If ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    ValueError
        If ``until`` is not after the iteration a resumed run has reached.
    """
    out = Path(out)
    device = resolve_device(config.device)
    distributed = _Distributed(device)
    if device.type == "cuda" and distributed.world > 1:
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    if (out / "last_state.json").exists() and not (resume or overwrite):
        raise FileExistsError(f"{out} holds a training run; pass resume=True (--resume) to continue it or overwrite=True (--overwrite)")
    if resume and not (out / "last_state.json").exists():
        raise FileNotFoundError(f"nothing to resume in {out} (no last_state.json)")
    if resume and until is not None:
        done = json.loads((out / "last_state.json").read_text())["iteration"]
        if until <= done:
            raise ValueError(f"{out} has trained {done} iterations already: stop later than that (--until), or resume without --until")
    if overwrite and not resume and distributed.main:
        for name in RUN_FILES:  # an earlier run's files must not stay beside a new run's if it stops early
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), determinism(config.deterministic, device):
        run = _set_up(config, out, resume, device, distributed, training, validation, progress and distributed.main, command)
        stop = min(until or config.iterations, config.iterations)
        first_batch_sum = _iterate(run, config, out, stop, distributed, progress)
        metrics = _finish(run, out, config, stop, device, distributed.world) if distributed.main else {}
        if distributed.world > 1:
            checksum = float(sum(p.detach().double().sum() for p in run.model.parameters()))
            gathered = [None] * distributed.world
            dist.all_gather_object(gathered, (checksum, first_batch_sum))
            if distributed.main:
                metrics["replica_checksums"] = [g[0] for g in gathered]
                metrics["first_batch_sums"] = [g[1] for g in gathered]
        del run
    if distributed.main:
        with atomic_path(out / "metrics.json", overwrite=True) as temporary:
            temporary.write_text(json.dumps(metrics, indent=1))
    distributed.close()
    return metrics
