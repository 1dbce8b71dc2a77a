"""File names and safe writing: NIfTI stems, never writing over an input, atomic writes.

Light on purpose (the standard library only), so that the command line checks its paths and
answers a refused command before it imports torch.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii.gz`` or ``.nii``: ``sub-01_T2w.nii.gz`` -> ``sub-01_T2w``."""
    name = Path(path).name
    return name.removesuffix(".gz").removesuffix(".nii") if name.endswith((".nii", ".nii.gz")) else name


def refuse_to_overwrite_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Raise if an output would replace an input or hold it, whatever the spelling of the paths.

    Paths are compared resolved (``..``, links, relative and absolute spellings all count), so
    ``fss segment scan.nii.gz -o ./scan.nii.gz --overwrite`` cannot replace the scan.

    Raises
    ------
    ValueError
        Naming the output and the input it would destroy.
    """
    resolved = {Path(i).resolve(): Path(i) for i in inputs}
    for output in outputs:
        target = Path(output).resolve()
        if target in resolved:
            raise ValueError(f"{output} is also an input ({resolved[target]}): fss never writes over its inputs; choose another output")


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    An interrupted or failing write leaves neither a half-written file nor a
    changed ``path``. The temporary name keeps the suffixes of ``path`` (so
    ``.nii.gz`` is still compressed); one that a killed process left behind
    (``.<name>.<random><suffixes>``) is removed by the next write of ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):  # of a write killed before it finished
        leftover.unlink(missing_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(descriptor)
    temporary = Path(temporary)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
