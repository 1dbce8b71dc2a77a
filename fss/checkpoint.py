"""Model checkpoints: weights in safetensors, metadata in JSON beside them, nothing pickled.

``<name>.safetensors`` holds the weights and, in its header, the sha256 of the metadata;
``<name>.json`` holds the metadata and the sha256 of the weights. Loading checks both,
so a changed file of either kind is refused, as is metadata that does not describe the
weights (architecture, label convention, classes).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fss import __version__, source_sha256
from fss.device import resolve_device
from fss.labels import N_CLASSES, TISSUES
from fss.paths import atomic_path
from fss.unet import UNet

FORMAT = "fss-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, altered, or not for this model."""


def paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths of checkpoint ``stem`` (a path without suffix, or either file)."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def git_commit() -> str | None:
    """The commit of the source tree fss runs from, if it is a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(model: UNet, stem: str | os.PathLike, metadata: dict, dtype: torch.dtype = torch.float32, overwrite: bool = True) -> Path:
    """Write ``model``'s weights and ``metadata`` (atomically).

    Parameters
    ----------
    model : UNet
    stem : path
        Checkpoint path without suffix.
    metadata : dict
        JSON-ready facts about the model (spacing, normalisation, training, validation Dice, ...);
        format, architecture, label convention, classes, package version, sources hash and commit are added
        (and win over keys of the same name).
    dtype : torch.dtype
        Storage type of floating-point weights (float16 halves the size).

    Returns
    -------
    Path
        The weights file.
    """
    weights_path, metadata_path = paths(stem)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    document = {
        **{k: v for k, v in metadata.items() if k != "weights_sha256"},  # e.g. metadata read from another checkpoint
        "format": FORMAT,
        "architecture": {"name": "UNet", **model.config},
        "label_convention": "feta",
        "classes": [t.short for t in TISSUES],
        "weights_dtype": str(dtype).removeprefix("torch."),
        "fss_version": __version__,
        "fss_source_sha256": source_sha256(),
        "git_commit": git_commit(),
    }
    text = json.dumps(document, indent=1, sort_keys=True)
    with atomic_path(weights_path, overwrite) as temporary:
        save_file(state, str(temporary), metadata={"format": FORMAT, "metadata_sha256": hashlib.sha256(text.encode()).hexdigest()})
    document["weights_sha256"] = _sha256(weights_path)
    with atomic_path(metadata_path, overwrite) as temporary:
        temporary.write_text(json.dumps(document, indent=1, sort_keys=True))
    return weights_path


def read_metadata(stem: str | os.PathLike) -> dict:
    """The checked metadata of a checkpoint (weights not loaded into a model).

    Raises
    ------
    CheckpointError
        If a file is missing, the weights or metadata were changed, or the metadata is not a
        FeTA U-Net checkpoint of this format.
    """
    weights_path, metadata_path = paths(stem)
    for path in (weights_path, metadata_path):
        if not path.exists():
            from fss import pretrained

            packaged = os.fspath(stem) in pretrained.available()
            hint = f"; {os.fspath(stem)!r} is a packaged model: pass pretrained.load({os.fspath(stem)!r})" if packaged else ""
            raise CheckpointError(f"{path}: missing (a checkpoint is a .safetensors file with its .json beside it){hint}")
    try:
        document = json.loads(metadata_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{metadata_path}: not valid JSON ({error})") from error
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{metadata_path}: format {document.get('format')!r}, expected {FORMAT!r}")
    if document.get("weights_sha256") != _sha256(weights_path):
        raise CheckpointError(
            f"{weights_path}: its sha256 differs from the one in {metadata_path.name}; the weights were changed or belong to another checkpoint"
        )
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error type, and OSError, for files it cannot parse
        raise CheckpointError(f"{weights_path}: not a safetensors file ({' '.join(str(error).split())}); fss never loads pickled weights") from error
    recorded = {k: v for k, v in document.items() if k != "weights_sha256"}
    if header.get("metadata_sha256") != hashlib.sha256(json.dumps(recorded, indent=1, sort_keys=True).encode()).hexdigest():
        raise CheckpointError(f"{metadata_path}: the metadata was changed after the checkpoint was written; refusing to use it")
    if document.get("label_convention") != "feta" or document.get("architecture", {}).get("n_classes") != N_CLASSES:
        raise CheckpointError(f"{metadata_path}: not a FeTA {N_CLASSES}-class segmentation model")
    return document


def load_checkpoint(stem: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """Build the U-Net a checkpoint describes and load its weights (float32), after the checks of :func:`read_metadata`.

    Returns
    -------
    (model, metadata) : the model in eval mode on ``device`` ("auto": see :func:`fss.device.resolve_device`), and the metadata dictionary.
    """
    document = read_metadata(stem)
    architecture = {k: v for k, v in document["architecture"].items() if k != "name"}
    architecture.setdefault("skip", "concatenate")  # checkpoints written before the U-Net had the option concatenated
    expected_keys = set(inspect.signature(UNet).parameters)
    if set(architecture) != expected_keys:
        unknown, missing = sorted(set(architecture) - expected_keys), sorted(expected_keys - set(architecture))
        raise CheckpointError(f"{paths(stem)[1]}: the architecture is not a fss U-Net's (unknown keys {unknown}, missing keys {missing})")
    try:
        model = UNet(**architecture)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{paths(stem)[1]}: the architecture {architecture} cannot be built ({error})") from error
    weights_path, _ = paths(stem)
    state = load_file(str(weights_path))
    expected = model.state_dict()
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if wrong or set(state) - set(expected):
        raise CheckpointError(
            f"{weights_path}: weights do not match the architecture in the metadata ({len(wrong)} tensors differ, e.g. {wrong[:3]})"
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(resolve_device(device)).eval(), document


def model_and_metadata(checkpoint: str | os.PathLike | tuple[UNet, dict], device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """The (model, metadata) pair of ``checkpoint``: loaded from a path by :func:`load_checkpoint`, or taken as it is.

    Raises
    ------
    TypeError
        Naming the argument ``checkpoint``, for anything but a path or a (model, metadata) pair as
        :func:`load_checkpoint` and :func:`fss.pretrained.load` return it (a reversed pair included).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        return load_checkpoint(checkpoint, device)
    if isinstance(checkpoint, tuple) and len(checkpoint) == 2:
        first, second = checkpoint
        if isinstance(first, UNet) and isinstance(second, dict):
            return first, second
        if isinstance(first, dict) and isinstance(second, UNet):
            raise TypeError("checkpoint: a (metadata, model) pair; give (model, metadata), in the order load_checkpoint and pretrained.load return")
    kind = f"a tuple of {', '.join(type(part).__name__ for part in checkpoint)}" if isinstance(checkpoint, tuple) else type(checkpoint).__name__
    raise TypeError(f"checkpoint: expected a checkpoint path or the (model, metadata) pair of load_checkpoint or pretrained.load, got {kind}")


def working_spacing(metadata: dict, source: str | os.PathLike) -> float:
    """The working-grid spacing (mm) a checkpoint's metadata records, which segmenting needs.

    Raises
    ------
    CheckpointError
        Naming ``source`` (the checkpoint or model), if the metadata records no positive ``spacing_mm``.
    """
    spacing = metadata.get("spacing_mm")
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or not spacing > 0:
        raise CheckpointError(f"{source}: records no working-grid spacing (spacing_mm: {spacing!r}), which segmenting needs")
    return float(spacing)


def describe_checkpoint(metadata: dict) -> str:
    """One line on how a checkpoint was trained, from its metadata: mode, iterations, grid (and those of the run it
    started from, ``initialized_from``), CPU minutes and validation Dice, each where recorded (a checkpoint written
    outside :func:`fss.train.train` may lack them)."""
    parts = [f"{metadata['training']['mode']} training" if "mode" in metadata.get("training", {}) else "training not recorded"]
    if "iterations" in metadata:
        parts[0] += f", {metadata['iterations']} iterations"
    parts[0] += f" at {metadata['spacing_mm']} mm" if "spacing_mm" in metadata else ", grid not recorded"
    first = metadata.get("initialized_from", {})
    if "iterations" in first and "spacing_mm" in first:
        parts[0] += f" after {first['iterations']} at {first['spacing_mm']} mm"
    if metadata.get("training_minutes"):
        parts.append(f"{metadata['training_minutes']:.0f} CPU minutes")
    if "mean_validation_dice" in metadata:
        parts.append(f"validation Dice {metadata['mean_validation_dice']:.3f}")
    return ", ".join(parts)
