"""The tutorial notebooks' figure display: screen or projector style, PNG outputs that record their smallest text.

Imported by the notebooks' first code cell only: it sets up the kernel it runs in, on purpose.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from fss.viz import SMALLEST_TEXT_KEY, figure_style, smallest_text_pixels

PROJECTION_VARIABLE = "FSS_PROJECTION"
"""Environment variable that, set to ``1`` before Jupyter starts, gives every notebook the projector style."""


def figure_png(figure: Figure) -> tuple[bytes, dict[str, float]]:
    """``figure`` as PNG bytes (tight bounding box) and the metadata a notebook keeps with it: :data:`SMALLEST_TEXT_KEY`."""
    from IPython.core.pylabtools import print_figure

    return print_figure(figure, fmt="png", bbox_inches="tight"), {SMALLEST_TEXT_KEY: round(smallest_text_pixels(figure), 1)}


def projection_wanted(projection: bool | None = None) -> bool:
    """``projection`` if given, else whether :data:`PROJECTION_VARIABLE` is ``1`` (or ``true``, ``yes``).

    Raises
    ------
    ValueError
        Naming the variable, if it holds anything else but an empty string, ``0``, ``false`` or ``no``.
    """
    if projection is not None:
        return projection
    value = os.environ.get(PROJECTION_VARIABLE, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{PROJECTION_VARIABLE}={value!r}: set it to 1 for figures on a projector, or to 0 (or leave it unset) for a screen")


def notebook_figures(projection: bool | None = None) -> None:
    """Set up this notebook's figures: :func:`fss.viz.figure_style`, shown and stored as PNG.

    ``projection`` chooses the projector style; left out, :data:`PROJECTION_VARIABLE` does, so that
    one setting before Jupyter starts (``FSS_PROJECTION=1 jupyter lab``) serves every notebook. Changes
    matplotlib's settings and IPython's figure display for the whole kernel, as the first cell of
    every tutorial notebook means it to; outside IPython it raises RuntimeError.
    """
    from IPython import get_ipython
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    wanted = projection_wanted(projection)
    shell = get_ipython()
    if shell is None:
        raise RuntimeError("notebook_figures sets up a notebook's figures: call it in a notebook")
    plt.switch_backend("module://matplotlib_inline.backend_inline")
    set_matplotlib_formats("png")
    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)
    plt.rcParams.update(figure_style(wanted))
