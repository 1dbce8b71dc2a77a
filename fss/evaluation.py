"""Scoring a checkpoint as users meet it: each scan segmented on its own grid, as ``fss segment`` does.

Validation during training (:func:`fss.train.validate`) scores on the working grid, where the
network predicts; the numbers a user gets come after the probabilities are mapped back onto the
scan's grid (:func:`fss.infer.segment`), which is what is scored here.

Example
-------
>>> from fss.checkpoint import load_checkpoint
>>> scores = crl_dice(load_checkpoint("outputs/03_training/run/best", "cpu"), ages=(23, 27, 31, 35))  # doctest: +SKIP
>>> scores.mean(axis=1)  # mean Dice over the seven tissues, per age  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fss import datasets
from fss.checkpoint import load_checkpoint
from fss.infer import segment
from fss.io import load_nifti
from fss.metrics import dice_per_tissue
from fss.unet import UNet


def crl_dice(checkpoint: str | os.PathLike | tuple[UNet, dict], ages: Sequence[int], device: str = "cpu") -> pd.DataFrame:
    """Per-tissue Dice of the checkpoint's segmentations of CRL atlas ages, on the atlas's own 0.8 mm grid.

    Parameters
    ----------
    checkpoint : path, or (model, metadata) from :func:`fss.checkpoint.load_checkpoint`
    ages : sequence of int
        Gestational ages (weeks) of the CRL atlas.
    device : str
        Where the network runs.

    Returns
    -------
    pandas.DataFrame: one row per volume (its name), one column per FeTA tissue (``eCSF`` ... ``BS``).
    """
    loaded = load_checkpoint(checkpoint, device) if not isinstance(checkpoint, tuple) else checkpoint
    rows = {}
    for record in datasets.fetch_crl_atlas(ages=tuple(ages)):
        prediction, _ = segment(load_nifti(record.image), loaded, device=device)
        rows[record.name] = dice_per_tissue(np.asarray(prediction.dataobj), np.asarray(record.feta_labels().dataobj))
    return pd.DataFrame.from_dict(rows, orient="index")
