"""Running a trained U-Net on volumes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fss.unet import UNet


@torch.no_grad()
def predict_working(model: UNet, image: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """Class probabilities of one volume already on the model's working grid.

    Parameters
    ----------
    model : UNet
    image : array or tensor, (X, Y, Z)
        Normalised intensities ([0, 1]) at the model's spacing.
    device : torch device, optional
        Default: the model's.

    Returns
    -------
    torch.Tensor, (n_classes, X, Y, Z) float32 on ``device``: softmax probabilities. The volume is
    padded with zeros to the model's multiple and cropped back.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = torch.as_tensor(image, dtype=torch.float32, device=device)[None, None]
    pad = [(-n) % model.multiple for n in x.shape[2:]]
    padding = []
    for p in reversed(pad):
        padding += [p // 2, p - p // 2]
    x = F.pad(x, padding)
    was_training = model.training
    model.eval()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(x).float()
    model.train(was_training)
    crop = [slice(p // 2, p // 2 + n) for p, n in zip(pad, image.shape)]
    return torch.softmax(logits, dim=1)[0][(slice(None), *crop)]
