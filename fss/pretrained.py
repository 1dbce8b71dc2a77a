"""Models trained by the fss developers and shipped inside the package (``fss/weights/``).

Each model is a checkpoint (safetensors weights + JSON metadata, see :mod:`fss.checkpoint`);
``MODEL_CARD.md`` at the repository root describes how each was trained and how well it does.

Example
-------
>>> from fss import pretrained
>>> pretrained.available()  # doctest: +SKIP
['fss-real-cpu', 'fss-synth-cpu']
>>> model, metadata = pretrained.load(pretrained.DEFAULT)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a model is loaded, so that listing models stays fast
    import torch

    from fss.unet import UNet

WEIGHTS = Path(str(files("fss") / "weights"))
"""Folder of the packaged checkpoints."""

DEFAULT = "fss-synth-cpu"
"""The model that ``fss segment`` and the notebooks use when none is given."""

NOTEBOOK_03 = WEIGHTS / "ready-made" / "notebook-03"
"""Checkpoint stem of notebook 03's training at its defaults (seed 0), made by running the notebook on a 2-core AMD EPYC
with AVX-512 and shipped for a machine too slow to train it, or a Colab session that lost it. Not a packaged model:
notebook 04 takes it as notebook 03's with ``trained_dir = "ready-made"``."""


def available() -> list[str]:
    """Names of the packaged models (those with both their weights and metadata present)."""
    return sorted(p.stem for p in WEIGHTS.glob("*.json") if p.with_suffix(".safetensors").exists())


def path(name: str = DEFAULT) -> Path:
    """Checkpoint stem of packaged model ``name`` (for :func:`fss.checkpoint.load_checkpoint`).

    Raises
    ------
    KeyError
        If no packaged model has that name; the message lists those that exist.
    """
    if name not in available():
        raise KeyError(f"no packaged model {name!r}; available: {', '.join(available()) or 'none'}")
    return WEIGHTS / name


def load(name: str = DEFAULT, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """The packaged model ``name`` in eval mode on ``device``, with its metadata (checked as any checkpoint)."""
    from fss.checkpoint import load_checkpoint

    return load_checkpoint(path(name), device)


def export(
    checkpoint: str | os.PathLike,
    name: str,
    facts: dict | None = None,
    folder: str | os.PathLike = WEIGHTS,
    dtype: str = "float16",
    overwrite: bool = False,
) -> Path:
    """Write a trained checkpoint as packaged model ``name`` (how the shipped models are made).

    What the run recorded goes into the model's metadata as it was recorded, never typed in:
    ``training_minutes`` (training steps only, validation left out) from the checkpoint's
    ``training_seconds``, and ``training_machines`` and ``training_commands``, one entry per
    sitting (:func:`fss.train.train` records them), beside the iterations and settings. A run
    that started from another run's weights (``initialize_from``, e.g. the coarse stage of coarse
    to fine) counts that run's minutes, machines and commands too, first.

    Parameters
    ----------
    checkpoint : path
        A checkpoint written by :func:`fss.train.train` (e.g. ``run/best``).
    name : str
        The model's name, also its file stem.
    facts : dict, optional
        Other JSON-ready facts for the model card kept in the metadata; not the recorded ones.
    folder : path
        Where to write (default: the package's weights folder).
    dtype : str
        Storage type of the weights, a torch dtype's name ("float16" halves the size; loading gives float32).
    overwrite : bool
        Replace a model of that name.

    Returns
    -------
    Path
        The weights file.

    Raises
    ------
    ValueError
        If the checkpoint does not record its training time and sittings (written by an earlier
        fss), or ``facts`` would replace what it records.
    """
    import torch

    from fss.checkpoint import load_checkpoint, save_checkpoint

    model, metadata = load_checkpoint(checkpoint)
    if "training_seconds" not in metadata or "sittings" not in metadata:
        raise ValueError(f"{checkpoint} does not record its training time and sittings (a checkpoint of an earlier fss): retrain to export it")
    first_stage = metadata.get("initialized_from", {})
    seconds = metadata["training_seconds"] + first_stage.get("training_seconds", 0.0)
    sittings = [*first_stage.get("sittings", []), *metadata["sittings"]]
    recorded = {
        "training_minutes": round(seconds / 60, 1),
        "training_machines": sorted({sitting["machine"] for sitting in sittings}),
        "training_commands": [sitting["command"] for sitting in sittings],
    }
    typed = sorted(set(facts or {}) & (set(recorded) | set(metadata)))
    if typed:
        raise ValueError(f"facts {typed} are read from the checkpoint, not given")
    return save_checkpoint(
        model, Path(folder) / name, {**metadata, **recorded, **(facts or {}), "name": name}, dtype=getattr(torch, dtype), overwrite=overwrite
    )
