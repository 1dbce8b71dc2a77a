"""Choice of compute device: ``"auto"`` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``; ``"auto"`` picks CUDA, then MPS, then CPU.

    Example
    -------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: str | torch.device = "auto") -> str:
    """A one-line human description of the device, e.g. ``"cuda (NVIDIA H100 80GB HBM3)"``."""
    device = resolve_device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
