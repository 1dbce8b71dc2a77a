"""One training step: the loss, the learning-rate schedule, the step itself, and the optimizer's state on disk."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fss.paths import atomic_path
from fss.training_config import TrainConfig


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


def training_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, image: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32
) -> float:
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


def save_optimizer_state(out: Path, optimizer: torch.optim.Optimizer, state: dict, run_id: str | None = None) -> None:
    """Optimizer tensors in safetensors, the rest in JSON (nothing pickled); ``run_id`` (the run's identifier, as its
    checkpoints record it) is written in both, so that a state copied from another run is recognised."""
    optimizer_state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous() for index, values in optimizer_state["state"].items() for name, value in values.items()
    }
    with atomic_path(out / "last_state.safetensors", overwrite=True) as temporary:
        save_file(tensors, str(temporary), metadata={"run_id": run_id} if run_id else None)
    with atomic_path(out / "last_state.json", overwrite=True) as temporary:
        temporary.write_text(json.dumps({**state, "run_id": run_id, "param_groups": optimizer_state["param_groups"]}, indent=1))


def load_optimizer_state(out: Path, optimizer: torch.optim.Optimizer, run_id: str | None = None) -> dict:
    """Load the state :func:`save_optimizer_state` wrote in ``out`` into ``optimizer``; the rest of the saved JSON.

    Raises
    ------
    ValueError
        Naming the file, if the tensors are not a safetensors file, were saved by another run than ``run_id`` (when
        given), or are not AdamW's moments of the optimizer's parameters (another network's).
    """
    tensors_path = out / "last_state.safetensors"
    state = json.loads((out / "last_state.json").read_text())
    try:
        tensors = load_file(str(tensors_path))
        with safe_open(str(tensors_path), "pt") as opened:
            saved_by = (opened.metadata() or {}).get("run_id")
    except Exception as error:  # safetensors raises its own error type for files it cannot parse
        raise ValueError(f"{tensors_path}: not a safetensors file ({' '.join(str(error).split())}); start afresh with --overwrite") from error
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    by_index: dict[int, dict] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        by_index.setdefault(int(index) if index.isdigit() else -1, {})[name] = value
    missing_or_extra = sorted(set(by_index) ^ set(range(len(parameters))))
    mismatch = missing_or_extra or [
        index for index, values in by_index.items() if values.get("exp_avg", torch.empty(0)).shape != parameters[index].shape
    ]
    if by_index and mismatch:  # no state at all: the optimizer had not stepped yet
        raise ValueError(
            f"{tensors_path}: not the optimizer state of this run's network (parameters {mismatch[:3]} differ); "
            "was it copied from another run? Start afresh with --overwrite"
        )
    for path, found in ((tensors_path, saved_by), (out / "last_state.json", state.get("run_id"))):
        if run_id and found != run_id:
            raise ValueError(
                f"{path}: saved by {'run ' + found if found else 'another run'}, not by run {run_id} whose checkpoint is beside it; "
                "was it copied from another run? Start afresh with --overwrite"
            )
    optimizer.load_state_dict({"state": by_index, "param_groups": state.pop("param_groups")})
    return state
