"""fss: FetalSynthSeg, domain-randomized fetal brain tissue segmentation.

Modules follow the flow of data: :mod:`fss.datasets` (public data),
:mod:`fss.labels` and :mod:`fss.io` (conventions and geometry), then seeds,
generator, training, inference and metrics.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fss")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
