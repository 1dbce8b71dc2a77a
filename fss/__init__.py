"""fss: FetalSynthSeg, domain-randomized fetal brain tissue segmentation.

Modules follow the flow of data: :mod:`fss.datasets` (public data),
:mod:`fss.labels` and :mod:`fss.io` (conventions and geometry), then seeds,
generator, training, inference and metrics.
"""

import functools
import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("fss")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

SOURCE_PATTERNS = ("**/*.py", "configs/*.yaml", "registry.txt")
"""The files of the package whose content decides what it computes (its code, packaged configurations and data registry)."""


@functools.cache
def source_sha256() -> str:
    """First 16 hex digits of the sha256 of the package's own sources (:data:`SOURCE_PATTERNS`, by relative path).

    Checkpoints and experiment runs record it beside :data:`__version__`, so that a change of the
    code between two releases (a preset's range, a stage) is seen when a run is resumed or a result
    is reused, not only a change of version.
    """
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted({p for pattern in SOURCE_PATTERNS for p in root.glob(pattern)}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
