"""Tissue labels: the FeTA convention used everywhere in fss, and conversions into it.

FeTA convention (values 0-7): 0 background, 1 extra-axial CSF, 2 cortical grey
matter, 3 white matter, 4 ventricles, 5 cerebellum, 6 deep grey matter,
7 brainstem.

Example
-------
>>> import numpy as np
>>> to_feta(np.array([0, 1, 2, 8]), "atlas")
array([0, 3, 4, 3], dtype=int16)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tissue:
    """One FeTA tissue class: label value, full name, short name, RGB colour (hex)."""

    value: int
    name: str
    short: str
    color: str


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "background", "BG", "#000000"),
    Tissue(1, "extra-axial cerebrospinal fluid", "eCSF", "#1f77b4"),
    Tissue(2, "cortical grey matter", "GM", "#d62728"),
    Tissue(3, "white matter", "WM", "#e377c2"),
    Tissue(4, "ventricles", "VEN", "#17becf"),
    Tissue(5, "cerebellum", "CBM", "#2ca02c"),
    Tissue(6, "deep grey matter", "DGM", "#ff7f0e"),
    Tissue(7, "brainstem", "BS", "#9467bd"),
)
"""The eight FeTA classes, indexed by label value."""

N_CLASSES = len(TISSUES)

TISSUE_ORDER: tuple[str, ...] = tuple(t.short for t in TISSUES[1:])
"""The seven tissues' short names in FeTA order: the order of every table of tissues."""

META_LABELS: dict[int, tuple[str, tuple[int, ...]]] = {
    1: ("CSF", (1, 4)),
    2: ("grey matter", (2, 6)),
    3: ("white matter", (3, 5, 7)),
    4: ("non-brain", ()),
}
"""Meta-labels used to build intensity seeds: name and the FeTA tissues they group.

Meta-label 4 (non-brain) holds no tissue: it is the part of the image above
zero outside the label map, so it is found from the image, not from labels.
"""

CONVENTIONS: dict[str, dict[int, int]] = {
    "feta": {t.value: t.value for t in TISSUES},
    # Parcellations of the fetal atlases (Fidon et al.): 1 WM, 2 ventricles,
    # 3 cerebellum, 4 extra-axial CSF, 5 cortical GM, 6 deep GM, 7 brainstem,
    # 8 corpus callosum, which FeTA counts as white matter.
    "atlas": {0: 0, 1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 7, 8: 3},
}
"""Mappings from each supported label convention to FeTA values."""


def check_feta(labels: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` (naming ``name``) unless ``labels`` holds whole numbers 0-7, FeTA tissues.

    Atlas labels (with an 8), interpolated or probability maps would otherwise be counted or
    packed as tissues they are not.
    """
    labels = np.asarray(labels)
    whole = np.issubdtype(labels.dtype, np.integer) or bool(np.array_equal(labels, np.round(labels)))
    if not whole or labels.min() < 0 or labels.max() >= N_CLASSES:
        found = f"values {labels.min():g} to {labels.max():g}" if whole else "fractional values"
        raise ValueError(f"{name}: the labels hold {found}, not FeTA tissues 0-{N_CLASSES - 1}; convert them first (fss.labels.to_feta)")


def conventions_that_fit(labels: np.ndarray) -> list[str]:
    """The names of the conventions in :data:`CONVENTIONS` that define every value of the integer label map ``labels``
    (none for fractional values)."""
    if not np.issubdtype(labels.dtype, np.integer):
        return []
    present = {int(value) for value in np.unique(labels)}
    return [name for name, mapping in CONVENTIONS.items() if present <= set(mapping)]


def to_feta(labels: np.ndarray, convention: str = "feta") -> np.ndarray:
    """Convert a label map from ``convention`` to FeTA values.

    Parameters
    ----------
    labels : np.ndarray
        Label map of any shape; integer, or float holding whole numbers
        (as label NIfTI files stored as float often do).
    convention : str
        A key of :data:`CONVENTIONS`.

    Returns
    -------
    np.ndarray
        int16 array of the same shape with values in 0..7.

    Raises
    ------
    ValueError
        For an unknown convention, non-integer values, or label values that the
        convention does not define (all of them are named).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; choose one of {sorted(CONVENTIONS)}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("label map holds non-integer values; is this an image, not labels?")
        labels = labels.astype(np.int64)
    mapping = CONVENTIONS[convention]
    present = np.unique(labels)
    unexpected = [int(v) for v in present if int(v) not in mapping]
    if unexpected:
        raise ValueError(
            f"label map holds values {unexpected} that the {convention!r} convention does not define (expected a subset of {sorted(mapping)})"
        )
    table = np.zeros(int(present.max()) + 1 if present.size else 1, dtype=np.int16)
    for source, target in mapping.items():
        if source < table.size:
            table[source] = target
    return table[labels]


def to_meta_labels(feta: np.ndarray) -> np.ndarray:
    """Group FeTA tissues into meta-labels 1 (CSF), 2 (GM) and 3 (WM).

    Parameters
    ----------
    feta : np.ndarray
        FeTA label map (values 0..7), any shape.

    Returns
    -------
    np.ndarray
        uint8 array of the same shape: 0 outside the brain, else the meta-label.
        Meta-label 4 (non-brain) needs the image and is not set here.
    """
    table = np.zeros(N_CLASSES, dtype=np.uint8)
    for meta, (_, tissues) in META_LABELS.items():
        table[list(tissues)] = meta
    return table[to_feta(feta, "feta")]
