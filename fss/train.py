"""Training the U-Net on synthetic, real or mixed batches, with validation on real volumes.

One loop serves the three data modes (:mod:`fss.training_data` draws their batches) as a
:class:`fss.training_config.TrainConfig` says; :mod:`fss.optimization` holds the step, the loss
and the schedule, :mod:`fss.run_control` determinism, ``torchrun`` ranks and Ctrl-C. Under
``torchrun`` the same entry point trains with DistributedDataParallel, each rank drawing its own
batches.

Everything written goes to one output folder: ``last`` and ``best`` checkpoints
(:mod:`fss.checkpoint`), ``last_state.*`` to resume, ``log.csv`` (per iteration: loss, learning
rate, ``seconds`` of training so far, validation and checkpoints left out, and the validation
Dice where it was measured), ``curves.png``, ``metrics.json``. Each validation saves the checkpoints,
the optimizer state and the log as one unit (:func:`fss.paths.staged_files`): a run killed or out of
disk space while saving leaves the unit before it, and the next training into the folder puts a
unit that was complete in place and discards one that was not.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from tqdm.auto import tqdm

from fss import __version__, source_sha256
from fss.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from fss.device import describe_device, resolve_device, resolve_precision
from fss.infer import NonFiniteOutput, predict_working
from fss.io import NORMALIZATION
from fss.labels import TISSUES
from fss.metrics import dice_per_tissue
from fss.optimization import learning_rate, load_optimizer_state, save_optimizer_state, training_step
from fss.paths import atomic_path, finish_staged, sole_writer, staged_files
from fss.run_control import CheckpointNotSaved, Distributed, TrainingDiverged, TrainingInterrupted, determinism, stop_on_interrupt
from fss.training_config import TrainConfig
from fss.training_data import Volume, prepare_crl, training_batches
from fss.unet import UNet, count_parameters
from fss.viz import plot_training, save_figure

RUN_FILES = (
    "last.safetensors",
    "last.json",
    "best.safetensors",
    "best.json",
    "last_state.safetensors",
    "last_state.json",
    "log.csv",
    "curves.png",
    "metrics.json",
)
"""What a training run writes in its folder."""


def validate(model: UNet, volumes: list[Volume]) -> pd.DataFrame:
    """Per-tissue Dice of ``model`` on each volume: rows are volumes, columns tissues."""
    rows = {}
    for volume in volumes:
        probabilities = predict_working(model, volume.image)
        rows[volume.name] = dice_per_tissue(probabilities.argmax(0).cpu().numpy(), volume.labels)
    return pd.DataFrame.from_dict(rows, orient="index")


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
    saved: int
    """The iteration of the last checkpoint saved (0: none yet)."""


def _files_of_another_program(out: Path) -> list[str]:
    """The names of :data:`RUN_FILES` in ``out`` when it holds no run of fss (neither an optimizer state nor a checkpoint
    ``last`` that fss wrote): files that a run would replace."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present or (out / "last_state.json").exists():
        return []
    try:
        read_metadata(out / "last")
    except CheckpointError:
        return present
    return []


def _finish_interrupted_save(out: Path) -> None:
    """Put in place a checkpoint unit that a run killed while saving had completed, and discard one it had not (warning of
    each), so that ``out`` holds the last complete unit."""
    completed, discarded = finish_staged(out)
    for label in completed:
        warnings.warn(f"{out}: the checkpoint of {label.replace('-', ' ')} was complete when its run stopped; it is now in place", stacklevel=3)
    for label in discarded:
        warnings.warn(
            f"{out}: the checkpoint of {label.replace('-', ' ')} was incomplete when its run stopped and is discarded; the one saved before it stays",
            stacklevel=3,
        )


def _set_up(
    config: TrainConfig,
    out: Path,
    resume: bool,
    device: torch.device,
    distributed: Distributed,
    training: list[Volume] | None,
    validation: list[Volume] | None,
    progress: bool,
    command: str | None,
) -> _Run:
    """Model (initialised from ``config.seed``, or loaded from ``config.initialize_from``), optimizer, data (with a
    progress bar if ``progress``), the metadata of its checkpoints and, when resuming, the saved state."""
    torch.manual_seed(config.seed)
    model = config.network().to(device)
    initial = _initial_weights(config, model) if config.initialize_from and not resume else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start, best, log, sittings, run_id = 0, -1.0, [], [], uuid.uuid4().hex
    if resume:
        loaded, saved = load_checkpoint(out / "last", device)
        _check_resumable(config, out, saved)
        model.load_state_dict(loaded.state_dict())
        state = load_optimizer_state(out, optimizer, saved.get("run_id"))
        start, best = state["iteration"], state["best_mean_dice"]
        log = pd.read_csv(out / "log.csv").to_dict("records")
        sittings, initial, run_id = saved.get("sittings", []), saved.get("initialized_from"), saved.get("run_id")
        if state["iteration"] != saved["iterations"] or not log or log[-1]["iteration"] != start:
            raise ValueError(
                f"{out}: the checkpoint (iteration {saved['iterations']}), the optimizer state (iteration {state['iteration']}) and "
                f"log.csv (iteration {log[-1]['iteration'] if log else 0}) disagree: they were changed after the run saved them; "
                "it cannot be resumed exactly: start afresh with --overwrite"
            )
    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed.world > 1 else model
    if training is None:
        training = prepare_crl(config.ages_to_train(), config.spacing, config.mode in ("synthetic", "mixed"), config.seeds_dir, config.seed, progress)
    if validation is None:
        validation = (
            prepare_crl(config.validation_ages, config.spacing, False, progress=progress, box_multiple=model.multiple) if distributed.main else []
        )
    dtype = resolve_precision(config.precision, device)
    metadata = {
        "spacing_mm": config.spacing,
        "precision": str(dtype).removeprefix("torch."),
        "normalization": NORMALIZATION,
        "training": config.to_dict(),
        "data": {"training": [v.name for v in training], "validation": [v.name for v in validation], "mode": config.mode},
        "parameters": count_parameters(model),
        **({"initialized_from": initial} if initial else {}),
        "sittings": [*sittings, {"from_iteration": start, "machine": describe_device(device), "torch": torch.__version__, "command": command}],
        "run_id": run_id,  # ties the optimizer state to its checkpoints
    }
    batches = training_batches(config, training, device, distributed.rank, start)
    return _Run(model, trained, optimizer, batches, validation, metadata, start, best, log, dtype, start)


def _initial_weights(config: TrainConfig, model: UNet) -> dict:
    """Load the weights of ``config.initialize_from`` into ``model``; what it was (path, weights' sha256, iterations, grid,
    and, where that run recorded them, its ``training_seconds`` and ``sittings``, so that an exported model counts both stages).

    Raises
    ------
    ValueError
        If the checkpoint's network is not the one ``config`` trains (other channels, skips or dropout).
    """
    loaded, metadata = load_checkpoint(config.initialize_from)
    if loaded.config != model.config:
        different = sorted(key for key in model.config if loaded.config.get(key) != model.config[key])
        raise ValueError(
            f"initialize_from {config.initialize_from}: its network differs from the one configured in {', '.join(different)} "
            f"({', '.join(f'{key} {loaded.config.get(key)} there, {model.config[key]} here' for key in different)})"
        )
    model.load_state_dict(loaded.state_dict())
    return {
        "checkpoint": str(config.initialize_from),
        "weights_sha256": metadata["weights_sha256"],
        "iterations": metadata.get("iterations"),
        "spacing_mm": metadata.get("spacing_mm"),
        **{key: metadata[key] for key in ("training_seconds", "sittings") if key in metadata},
    }


def _check_resumable(config: TrainConfig, out: Path, saved: dict) -> None:
    """Raise if ``config`` differs from the configuration the run in ``out`` was trained with, naming the keys; warn when
    the package's sources differ from those that saved it (a preset or stage may have changed under the same settings)."""
    changed = config.differences(saved["training"])
    if changed:
        differences = "; ".join(f"{key}: {before!r} then, {now!r} now" for key, (before, now) in changed.items())
        raise ValueError(f"{out} was trained with other settings ({differences}): resume with the same ones, or start afresh with --overwrite")
    then = saved.get("fss_source_sha256")
    if then != source_sha256():
        warnings.warn(
            f"{out} was saved by fss {saved.get('fss_version')} with sources {then or 'not recorded'}, and fss {__version__} with sources "
            f"{source_sha256()} resumes it: the generator or training code may differ between the two parts",
            stacklevel=3,
        )


def _checkpoint(run: _Run, out: Path, row: dict) -> dict:
    """Validate; save ``last`` (and ``best`` when it improved), the optimizer state and the log with ``row`` (the log's
    row of ``iteration``, whose ``seconds`` of training steps the checkpoints record) as one unit (:func:`staged_files`),
    which is either complete in ``out`` or absent; append ``row`` to the log. Returns the Dice columns of the row.

    Raises
    ------
    TrainingDiverged
        If the network's output on a validation volume is not finite (nothing is saved then).
    CheckpointNotSaved
        If a file of the unit cannot be written (a full disk): ``out`` keeps the unit saved before.
    """
    iteration, seconds = row["iteration"], row["seconds"]
    try:
        scores = validate(run.model, run.validation)
    except NonFiniteOutput as error:
        raise TrainingDiverged(out, iteration, "the network's output is not finite", run.saved) from error
    mean = float(np.nanmean(scores.to_numpy()))
    checkpoint = {
        **run.metadata,
        "iterations": iteration,
        "training_seconds": seconds,
        "validation_dice": {k: float(v) for k, v in scores.mean().items()},
        "mean_validation_dice": mean,
    }
    dice = {**{f"dice_{tissue}": float(scores[tissue].mean()) for tissue in scores.columns}, "mean_dice": mean}
    best = max(run.best, mean)
    log = pd.DataFrame([*run.log, {**row, **dice}])
    path = out / "last.safetensors"  # the file being written, for the error
    try:
        with staged_files(out, f"iteration-{iteration}") as staging:
            save_checkpoint(run.model, staging / "last", checkpoint)
            if mean > run.best:
                path = out / "best.safetensors"
                save_checkpoint(run.model, staging / "best", checkpoint)
            path = out / "last_state.safetensors"
            save_optimizer_state(staging, run.optimizer, {"iteration": iteration, "best_mean_dice": best}, run.metadata["run_id"])
            path = out / "log.csv"
            log.to_csv(staging / "log.csv", index=False)
    except (OSError, SafetensorError) as error:
        raise CheckpointNotSaved(path, iteration, run.saved, error) from error
    run.best, run.saved = best, iteration
    run.log.append({**row, **dice})
    return dice


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


def _iterate(run: _Run, config: TrainConfig, out: Path, stop: int, distributed: Distributed, progress: bool) -> None:
    """Training steps from ``run.start`` to ``stop``, with validation and checkpoints.

    Raises
    ------
    TrainingInterrupted
        After a Ctrl-C, once the iteration under way is done and saved.
    TrainingDiverged
        When the loss or the weights after the step are not finite (on any rank), or the output at a validation;
        nothing of that iteration is saved.
    """
    seconds_before = run.log[-1]["seconds"] if run.log else 0.0
    started = time.perf_counter()
    checkpoint_seconds = 0.0  # validation and saving, left out of the training time
    bar = tqdm(
        range(run.start, stop),
        desc=f"training ({config.mode})",
        unit="it",
        disable=not (progress and distributed.main),
        initial=run.start,
        total=config.iterations,
        mininterval=2.0,  # in a notebook every refresh is a message to the front end: a few hundred per run, not thousands
    )
    with stop_on_interrupt(enabled=distributed.world == 1) as interrupt:
        for iteration in bar:
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration)
            image, labels = next(run.batches)
            loss = training_step(run.trained, run.optimizer, image, labels, run.dtype)
            finite_weights = bool(torch.stack([torch.isfinite(parameter).all() for parameter in run.model.parameters()]).all())
            if not distributed.all_true(math.isfinite(loss) and finite_weights, image.device):
                bar.close()
                what = f"the loss is {loss}" if not math.isfinite(loss) else "the weights are not finite"
                raise TrainingDiverged(out, iteration + 1, what, run.saved)
            row = {
                "iteration": iteration + 1,
                "loss": loss,
                "learning_rate": run.optimizer.param_groups[0]["lr"],
                "seconds": seconds_before + time.perf_counter() - started - checkpoint_seconds,
            }
            checkpointing = distributed.main and ((iteration + 1) % config.validation_every == 0 or iteration + 1 == stop or interrupt.requested)
            if checkpointing:
                with interrupt.deferred():  # checkpoint, optimizer state and log agree whenever Ctrl-C comes
                    checkpoint_started = time.perf_counter()
                    row.update(_checkpoint(run, out, row))
                    checkpoint_seconds += time.perf_counter() - checkpoint_started
                bar.set_postfix(loss=f"{loss:.3f}", dice=f"{row['mean_dice']:.3f}")
            else:
                run.log.append(row)
            if interrupt.requested:
                bar.close()
                raise TrainingInterrupted(out, iteration + 1)
            distributed.barrier()


def _refuse_what_the_run_would_break(out: Path, resume: bool, overwrite: bool, until: int | None) -> None:
    """Raise when training into ``out`` would write over files of another program or a run not meant to be replaced,
    or when there is nothing to resume or ``until`` is already behind the run."""
    foreign = _files_of_another_program(out)
    if foreign:
        raise FileExistsError(
            f"{out} holds {', '.join(foreign)} but no training run of fss: a run would write over them; move them away or train into another folder"
        )
    if (out / "last_state.json").exists() and not (resume or overwrite):
        raise FileExistsError(f"{out} holds a training run; pass resume=True (--resume) to continue it or overwrite=True (--overwrite)")
    if resume and not (out / "last_state.json").exists():
        raise FileNotFoundError(f"nothing to resume in {out} (no last_state.json)")
    if resume and until is not None:
        done = json.loads((out / "last_state.json").read_text())["iteration"]
        if until <= done:
            raise ValueError(f"{out} has trained {done} iterations already: stop later than that (--until), or resume without --until")


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
        If ``until`` is not after the iteration a resumed run has reached, or both ``resume`` and ``overwrite`` are set.
    fss.run_control.TrainingInterrupted
        After a Ctrl-C, once the state is saved.
    fss.run_control.TrainingDiverged
        When the loss or the weights are not finite; the checkpoints saved before stay.
    """
    out = Path(out)
    device = resolve_device(config.device)
    distributed = Distributed(device)
    if device.type == "cuda" and distributed.world > 1:
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run in the folder, or start afresh there")
    if resume and not out.is_dir():
        raise FileNotFoundError(f"nothing to resume in {out} (no such folder)")
    out.mkdir(parents=True, exist_ok=True)
    with sole_writer(out, "training") if distributed.main else contextlib.nullcontext():
        if distributed.main:
            _finish_interrupted_save(out)
        _refuse_what_the_run_would_break(out, resume, overwrite, until)
        if overwrite and not resume and distributed.main:
            for name in RUN_FILES:  # an earlier run's files must not stay beside a new run's if it stops early
                (out / name).unlink(missing_ok=True)
        cuda_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), determinism(config.deterministic, device):
            run = _set_up(config, out, resume, device, distributed, training, validation, progress and distributed.main, command)
            stop = min(until or config.iterations, config.iterations)
            _iterate(run, config, out, stop, distributed, progress)
            metrics = _finish(run, out, config, stop, device, distributed.world) if distributed.main else {}
            if distributed.world > 1:
                checksum = float(sum(p.detach().double().sum() for p in run.model.parameters()))
                gathered = [None] * distributed.world
                dist.all_gather_object(gathered, checksum)
                if distributed.main:
                    metrics["replica_checksums"] = gathered
            del run
        if distributed.main:
            with atomic_path(out / "metrics.json", overwrite=True) as temporary:
                temporary.write_text(json.dumps(metrics, indent=1))
    distributed.close()
    return metrics
