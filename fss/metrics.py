"""Segmentation metrics, per FeTA tissue."""

from __future__ import annotations

import numpy as np

from fss.labels import TISSUES


def dice_per_tissue(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice overlap of each FeTA tissue (1..7).

    Parameters
    ----------
    prediction, reference : np.ndarray, same shape
        FeTA label maps.

    Returns
    -------
    dict
        Tissue short name -> Dice in [0, 1]; NaN where the tissue is absent from both maps.
    """
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    scores = {}
    for tissue in TISSUES[1:]:
        p, r = prediction == tissue.value, reference == tissue.value
        total = np.count_nonzero(p) + np.count_nonzero(r)
        scores[tissue.short] = 2 * np.count_nonzero(p & r) / total if total else float("nan")
    return scores
